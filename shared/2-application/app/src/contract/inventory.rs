//! Checks on catalogue and inventory: products, slot maps written conditionally and atomically (the
//! largest in one write), stock rows that move in the same write as the money decision (or not at
//! all), and through the `Ledger` the sales of stocked slots: sold out, releases, orders, restocks,
//! races for the last item, a count that was wrong, and the size of the biggest decision that
//! touches stock.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use vendpay_domain::inventory::{MAX_RESERVED_HOLDS, MAX_SLOTS};
use vendpay_domain::*;

use super::fakes::{ManualClock, Recorder};
use super::ledger::ledger;
use super::limited::{Limited, MAX_WRITE_ACTIONS};
use super::{cny, device_record, id, join_all, open_session, payment, Store, T0};
use crate::inventory::Inventory;
use crate::ledger::{AppError, Ledger};
use crate::ports::*;

fn product(sku: &str, minor: u64) -> Product {
    Product {
        sku: id(sku),
        name: format!("Product {sku}"),
        price: cny(minor),
        category: None,
    }
}

/// A slot row of capacity 10 selling `sku` at its product's price, nothing reserved.
fn row(device: &str, slot: &str, sku: &str, stock: u32, version: u64) -> SlotStock {
    SlotStock {
        sold_at: None,
        device_id: id(device),
        slot: id(slot),
        sku: id(sku),
        capacity: 10,
        price: None,
        stock,
        reserved: 0,
        version,
    }
}

fn writing(rows: &[&SlotStock]) -> SlotWrites {
    SlotWrites {
        write: rows.iter().map(|r| (*r).clone()).collect(),
        remove: vec![],
    }
}

fn inventory<S: Store>(store: &Arc<S>) -> Inventory {
    Inventory::new(store.clone(), store.clone(), store.clone())
}

/// Puts each `(sku, price)` in the catalogue.
async fn catalogue<S: Store>(store: &Arc<S>, products: &[(&str, u64)]) {
    for (sku, minor) in products {
        store
            .put_product(&product(sku, *minor))
            .await
            .expect("put product");
    }
}

/// Gives `device` one slot of capacity 10 per `(slot, sku, stock)` through the inventory service, then
/// counts each slot's stock in.
async fn planogram<S: Store>(store: &Arc<S>, device: &str, slots: &[(&str, &str, u32)]) {
    let inv = inventory(store);
    let spec: Vec<SlotSpec> = slots
        .iter()
        .map(|(slot, sku, _)| SlotSpec {
            slot: id(slot),
            sku: id(sku),
            capacity: 10,
            price: None,
        })
        .collect();
    inv.set_slots(&id(device), &spec).await.expect("slot map");
    restock(
        store,
        device,
        slots.iter().map(|(s, _, n)| (*s, *n)).collect(),
    )
    .await;
}

async fn restock<S: Store>(store: &Arc<S>, device: &str, counts: Vec<(&str, u32)>) {
    let counts: Vec<StockCount> = counts
        .into_iter()
        .map(|(slot, stock)| StockCount {
            slot: id(slot),
            stock,
        })
        .collect();
    inventory(store)
        .restock(&id(device), &counts)
        .await
        .expect("restock");
}

/// `(stock, reserved)` of a slot as stored.
async fn counts<S: Store>(store: &S, device: &str, slot: &str) -> (u32, u32) {
    let slot: Slot = id(slot);
    let rows = store.slots(&id(device)).await.expect("slots");
    let r = rows
        .iter()
        .find(|r| r.slot == slot)
        .unwrap_or_else(|| panic!("{device} has no slot {slot}: {rows:?}"));
    (r.stock, r.reserved)
}

/// A purchase that names only the slot: the planogram gives the price.
async fn buy(
    ledger: &Ledger,
    device: &str,
    request: &str,
    slot: &str,
) -> Result<PurchaseAnswer, AppError> {
    ledger
        .purchase_in(
            &id(device),
            &PurchaseRequest {
                request_id: id(request),
                slot: id(slot),
                price: None,
                session: None,
            },
        )
        .await
}

async fn approved(ledger: &Ledger, device: &str, request: &str, slot: &str) -> PurchaseAnswer {
    let a = buy(ledger, device, request, slot).await.expect("purchase");
    assert!(a.approved(), "{request} on {device}/{slot}: {a:?}");
    a
}

async fn declined(ledger: &Ledger, device: &str, request: &str, slot: &str) -> DeclineReason {
    let a = buy(ledger, device, request, slot).await.expect("purchase");
    a.declined
        .unwrap_or_else(|| panic!("{request} on {device}/{slot} was approved: {a:?}"))
}

async fn current(ledger: &Ledger, device: &str) -> Session {
    ledger
        .current(&id(device))
        .await
        .expect("read")
        .expect("a session")
}

type Boxed<'a, T> = Pin<Box<dyn Future<Output = T> + 'a>>;

// ---------------------------------------------------------------------------------------------------
// The store ports.
// ---------------------------------------------------------------------------------------------------

pub(super) async fn products_are_upserted_and_listed_by_sku<S: Store>(store: Arc<S>) {
    assert_eq!(store.products().await.expect("products"), vec![]);
    // Byte order: upper case before lower case, '.' before '_'.
    for p in [
        product("a_1", 200),
        product("cola", 350),
        product("B-1", 500),
    ] {
        store.put_product(&p).await.expect("put");
    }
    store.put_product(&product("a.1", 100)).await.expect("put");
    let cola = Product {
        name: "Cola 330 ml".into(),
        price: cny(300),
        category: Some("soda".into()),
        ..product("cola", 0)
    };
    store.put_product(&cola).await.expect("replace");
    store.put_product(&cola).await.expect("the same again");
    assert_eq!(
        store.products().await.expect("products"),
        vec![
            product("B-1", 500),
            product("a.1", 100),
            product("a_1", 200),
            cola.clone()
        ],
        "one row per sku, the latest put, ordered by sku"
    );
    assert_eq!(store.product(&id("cola")).await.expect("read"), Some(cola));
    assert_eq!(store.product(&id("tea")).await.expect("read"), None);
}

pub(super) async fn slot_maps_are_written_conditionally_and_atomically<S: Store>(store: Arc<S>) {
    for d in ["vm-1", "vm-2", "vm-3", "vm-4"] {
        store
            .register(&device_record(d, Mode::PayFirst))
            .await
            .expect("register");
    }
    let dev: DeviceId = id("vm-1");
    assert_eq!(store.slots(&dev).await.expect("slots"), vec![]);
    assert_eq!(store.stocked_devices().await.expect("stocked"), vec![]);

    let a1 = row("vm-1", "A1", "cola", 5, 1);
    let a2 = row("vm-1", "A2", "water", 0, 1);
    store
        .write_slots(&dev, &writing(&[&a2, &a1]))
        .await
        .expect("a new slot map");
    let both = vec![a1.clone(), a2.clone()];
    assert_eq!(
        store.slots(&dev).await.expect("slots"),
        both,
        "ordered by slot"
    );
    let m = store.machine(&dev).await.expect("read").expect("machine");
    assert_eq!(m.slots, both, "the machine is read with its slots");

    let unchanged = |why: &'static str| {
        let store = store.clone();
        let dev = dev.clone();
        let both = both.clone();
        async move {
            assert_eq!(store.slots(&dev).await.expect("slots"), both, "{why}");
        }
    };
    let conflict = |r: Result<(), StoreError>, why: &str| {
        assert!(matches!(r, Err(StoreError::Conflict(_))), "{why}: {r:?}");
    };

    // A new row (version 1) needs its slot to be free; the other new row of the write is not written.
    let b1 = row("vm-1", "B1", "cola", 1, 1);
    let again = row("vm-1", "A1", "cola", 9, 1);
    conflict(
        store.write_slots(&dev, &writing(&[&b1, &again])).await,
        "A1 exists already",
    );
    unchanged("a failed slot write leaves every row as it was").await;

    // Each written row is compared with the version it was read at: A1 at 2 is right, A2 at 3 is not.
    let a1v2 = SlotStock {
        stock: 7,
        version: 2,
        ..a1.clone()
    };
    let a2v3 = SlotStock {
        stock: 3,
        version: 3,
        ..a2.clone()
    };
    conflict(
        store.write_slots(&dev, &writing(&[&a1v2, &a2v3])).await,
        "A2 is at version 1, not 2",
    );
    unchanged("A1 is not written when A2's condition fails").await;

    // A removal names the version it read: a stale one fails, and takes the write with it.
    let stale_removal = SlotWrites {
        write: vec![a1v2.clone()],
        remove: vec![SlotStock {
            version: 2,
            ..a2.clone()
        }],
    };
    conflict(
        store.write_slots(&dev, &stale_removal).await,
        "A2 is at version 1",
    );
    unchanged("a failed removal writes nothing").await;
    let absent = SlotWrites {
        write: vec![],
        remove: vec![b1.clone()],
    };
    conflict(
        store.write_slots(&dev, &absent).await,
        "B1 is not there to remove",
    );
    unchanged("removing an absent row writes nothing").await;

    // With every condition right, writes and removals land together.
    let replace = SlotWrites {
        write: vec![b1.clone(), a1v2.clone()],
        remove: vec![a2.clone()],
    };
    store
        .write_slots(&dev, &replace)
        .await
        .expect("a replacement read at the right versions");
    assert_eq!(
        store.slots(&dev).await.expect("slots"),
        vec![a1v2.clone(), b1.clone()]
    );
    conflict(
        store.write_slots(&dev, &replace).await,
        "the same replacement twice",
    );

    // Other machines: their own rows, and the list of machines with a slot map, ordered by id.
    let c3 = row("vm-3", "C3", "cola", 2, 1);
    let c2 = row("vm-2", "C3", "cola", 4, 1);
    store
        .write_slots(&id("vm-3"), &writing(&[&c3]))
        .await
        .expect("vm-3");
    store
        .write_slots(&id("vm-2"), &writing(&[&c2]))
        .await
        .expect("vm-2");
    assert_eq!(store.slots(&id("vm-2")).await.expect("slots"), vec![c2]);
    assert_eq!(store.slots(&id("vm-3")).await.expect("slots"), vec![c3]);
    assert_eq!(
        store.stocked_devices().await.expect("stocked"),
        vec![id("vm-1"), id("vm-2"), id("vm-3")],
        "each machine with a slot map once, ordered by id"
    );
    assert_eq!(store.slots(&id("vm-4")).await.expect("slots"), vec![]);
    let m = store
        .machine(&id("vm-4"))
        .await
        .expect("read")
        .expect("machine");
    assert_eq!(m.slots, vec![], "a machine without a slot map");
}

pub(super) async fn a_full_slot_map_is_replaced_in_one_write<S: Store>(store: Arc<S>) {
    // The largest slot-map change: every one of `MAX_SLOTS` rows removed and as many new ones written.
    store
        .register(&device_record("vm-1", Mode::PayFirst))
        .await
        .expect("register");
    catalogue(&store, &[("cola", 350), ("water", 200)]).await;
    let spec = |prefix: &str, sku: &str| -> Vec<SlotSpec> {
        (0..MAX_SLOTS)
            .map(|i| SlotSpec {
                slot: id(&format!("{prefix}{i:02}")),
                sku: id(sku),
                capacity: 10,
                price: None,
            })
            .collect()
    };
    let inv = inventory(&store);
    let dev: DeviceId = id("vm-1");
    inv.set_slots(&dev, &spec("A", "cola"))
        .await
        .expect("a full slot map");
    let replaced = inv
        .set_slots(&dev, &spec("B", "water"))
        .await
        .expect("replaced whole");
    assert_eq!(replaced.slots.len(), MAX_SLOTS);
    let rows = store.slots(&dev).await.expect("slots");
    assert_eq!(rows.len(), MAX_SLOTS);
    assert!(
        rows.iter()
            .all(|r| r.slot.as_str().starts_with('B') && r.sku == id("water")),
        "{rows:?}"
    );
}

pub(super) async fn two_slot_maps_decided_on_one_read_cannot_both_land<S: Store>(store: Arc<S>) {
    // From the same read of {A1, A2}, operator 1 adds C1 and operator 2 adds B1. Whichever writes
    // second must conflict: A1 and A2 are unchanged by both, but their versions are in both writes
    // (else the machine would end with {A1, A2, B1, C1}, a map neither asked for).
    store
        .register(&device_record("vm-1", Mode::PayFirst))
        .await
        .expect("register");
    catalogue(&store, &[("cola", 350), ("water", 200)]).await;
    planogram(&store, "vm-1", &[("A1", "cola", 3), ("A2", "water", 2)]).await;
    let dev: DeviceId = id("vm-1");
    let m = store.machine(&dev).await.expect("read").expect("machine");
    let cat: std::collections::BTreeMap<Sku, Product> = store
        .products()
        .await
        .expect("products")
        .into_iter()
        .map(|p| (p.sku.clone(), p))
        .collect();
    let spec = |slots: &[(&str, &str)]| -> Vec<SlotSpec> {
        slots
            .iter()
            .map(|(slot, sku)| SlotSpec {
                slot: id(slot),
                sku: id(sku),
                capacity: 10,
                price: None,
            })
            .collect()
    };
    let first = inventory::replace_planogram(
        &m.record.device,
        &m.slots,
        &spec(&[("A1", "cola"), ("A2", "water"), ("C1", "cola")]),
        &cat,
    )
    .expect("first");
    let second = inventory::replace_planogram(
        &m.record.device,
        &m.slots,
        &spec(&[("A1", "cola"), ("A2", "water"), ("B1", "water")]),
        &cat,
    )
    .expect("second");
    store
        .write_slots(&dev, &first)
        .await
        .expect("the first lands");
    assert!(
        matches!(
            store.write_slots(&dev, &second).await,
            Err(StoreError::Conflict(_))
        ),
        "the second was decided on a map that is gone"
    );
    let slots: Vec<String> = store
        .slots(&dev)
        .await
        .expect("slots")
        .iter()
        .map(|r| r.slot.to_string())
        .collect();
    assert_eq!(
        slots,
        vec!["A1", "A2", "C1"],
        "exactly the first operator's map"
    );
}

pub(super) async fn a_sale_decided_on_a_stale_slot_row_writes_nothing<S: Store>(store: Arc<S>) {
    store
        .register(&device_record("vm-1", Mode::PayFirst))
        .await
        .expect("register");
    catalogue(&store, &[("cola", 350)]).await;
    let dev: DeviceId = id("vm-1");
    let a1 = row("vm-1", "A1", "cola", 5, 1);
    store
        .write_slots(&dev, &writing(&[&a1]))
        .await
        .expect("slot map");
    let opened = open_session(&*store, "vm-1", "T1", 1000, 0).await;
    let now = Timestamp::from_millis(T0 + 1000);
    let req = PurchaseRequest {
        request_id: id("r1"),
        slot: id("A1"),
        price: None,
        session: None,
    };
    let decide = |m: &Machine| {
        let shelves = Shelves::new(m.slots.iter().cloned()).with_price(id("cola"), cny(350));
        let t = request_purchase(
            &m.record.device,
            m.current.as_ref(),
            &req,
            &shelves,
            &Windows::default(),
            now,
        )
        .expect("purchase decided");
        Commit {
            device: Some(DeviceGuard {
                device: dev.clone(),
                expected_version: m.record.version,
                new_current: None,
            }),
            sessions: t.sessions.clone(),
            request: Some(RequestRecord {
                device: dev.clone(),
                request_id: id("r1"),
                reply: t.reply.clone(),
                expires_at: now.plus(Duration::from_secs(48 * 3600)),
            }),
            stock: t.stock.clone(),
            ..Commit::default()
        }
    };
    let m = store.machine(&dev).await.expect("read").expect("machine");
    assert_eq!(m.slots, vec![a1.clone()], "read with the session");
    let sale = decide(&m);
    assert_eq!(sale.stock.len(), 1, "the sale reserves in its own write");

    // Meanwhile the machine counts the slot: the row is at version 2 when the sale is written.
    let counted = SlotStock {
        stock: 4,
        version: 2,
        ..a1.clone()
    };
    store
        .write_slots(&dev, &writing(&[&counted]))
        .await
        .expect("count");
    let r = store.commit(&sale).await;
    assert!(matches!(r, Err(StoreError::Conflict(_))), "{r:?}");
    assert_eq!(
        store.session(&opened.id).await.expect("read"),
        Some(opened.clone()),
        "the session is untouched when its stock row is stale"
    );
    assert_eq!(
        store.request(&dev, &id("r1")).await.expect("read"),
        None,
        "request row leaked"
    );
    assert_eq!(store.slots(&dev).await.expect("slots"), vec![counted]);

    // Decided again on what is stored now, the sale is written: the session and the row together.
    let m = store.machine(&dev).await.expect("read").expect("machine");
    store
        .commit(&decide(&m))
        .await
        .expect("the sale on a fresh read");
    let after = store.slots(&dev).await.expect("slots");
    assert_eq!(
        after
            .iter()
            .map(|r| (r.stock, r.reserved, r.version))
            .collect::<Vec<_>>(),
        vec![(4, 1, 3)]
    );
    let s = store
        .session(&opened.id)
        .await
        .expect("read")
        .expect("session");
    assert!(s.purchase(&id("r1")).is_some_and(|p| p.reserved), "{s:?}");

    // A stock row for a slot the machine does not have: only a slot map creates rows.
    let mut next = s.clone();
    next.version += 1;
    let ghost = Commit {
        sessions: vec![next],
        stock: vec![row("vm-1", "Z9", "cola", 1, 2)],
        ..Commit::default()
    };
    let r = store.commit(&ghost).await;
    assert!(matches!(r, Err(StoreError::Conflict(_))), "{r:?}");
    assert_eq!(store.session(&s.id).await.expect("read"), Some(s));
    assert_eq!(store.slots(&dev).await.expect("slots"), after);
}

// ---------------------------------------------------------------------------------------------------
// Through the ledger.
// ---------------------------------------------------------------------------------------------------

pub(super) async fn ledger_the_last_item_sells_then_the_slot_is_sold_out<S: Store>(store: Arc<S>) {
    store
        .register(&device_record("vm-1", Mode::PayFirst))
        .await
        .expect("register");
    catalogue(&store, &[("cola", 350)]).await;
    planogram(&store, "vm-1", &[("A1", "cola", 1), ("A2", "cola", 5)]).await;
    let (ledger, _, _) = ledger(store.clone());
    let dev: DeviceId = id("vm-1");
    ledger
        .payment(&dev, &payment("T1", 1000))
        .await
        .expect("pay");
    let a = approved(&ledger, "vm-1", "r1", "A1").await;
    assert_eq!(a.price, cny(350), "the catalogue's price");
    assert_eq!(counts(&*store, "vm-1", "A1").await, (1, 1));
    assert_eq!(
        declined(&ledger, "vm-1", "r2", "A1").await,
        DeclineReason::SoldOut,
        "the one item is promised"
    );
    ledger.vend(&dev, &id("r1"), true).await.expect("vend");
    assert_eq!(counts(&*store, "vm-1", "A1").await, (0, 0));
    assert_eq!(
        declined(&ledger, "vm-1", "r3", "A1").await,
        DeclineReason::SoldOut
    );
    // Another slot of the product still sells; a price other than the slot's is refused.
    let wrong = ledger.purchase(&dev, &id("r4"), &id("A2"), cny(300)).await;
    assert!(
        matches!(
            wrong,
            Err(AppError::Rejected(Rejection::PriceMismatch { .. }))
        ),
        "{wrong:?}"
    );
    approved(&ledger, "vm-1", "r5", "A2").await;
    assert_eq!(counts(&*store, "vm-1", "A2").await, (5, 1));
    let s = current(&ledger, "vm-1").await;
    assert_eq!(
        (s.balance, s.held, s.spent),
        (cny(300), cny(350), cny(350)),
        "a sold-out decline moves no money"
    );
    s.check_invariant().expect("invariant");
}

pub(super) async fn ledger_a_failed_vend_releases_the_reservation<S: Store>(store: Arc<S>) {
    store
        .register(&device_record("vm-1", Mode::PayFirst))
        .await
        .expect("register");
    catalogue(&store, &[("cola", 350)]).await;
    planogram(&store, "vm-1", &[("A1", "cola", 1)]).await;
    let (ledger, _, clock) = ledger(store.clone());
    let dev: DeviceId = id("vm-1");
    ledger
        .payment(&dev, &payment("T1", 1000))
        .await
        .expect("pay");
    approved(&ledger, "vm-1", "r1", "A1").await;
    assert_eq!(
        declined(&ledger, "vm-1", "r2", "A1").await,
        DeclineReason::SoldOut
    );
    ledger.vend(&dev, &id("r1"), false).await.expect("vend");
    assert_eq!(
        counts(&*store, "vm-1", "A1").await,
        (1, 0),
        "the item stayed in the machine and is available again"
    );
    approved(&ledger, "vm-1", "r3", "A1").await;
    assert_eq!(counts(&*store, "vm-1", "A1").await, (1, 1));
    // A hold the deadline finds unconfirmed releases its item too.
    clock.advance(Duration::from_secs(301));
    let report = ledger
        .sweep(100, Duration::from_secs(60))
        .await
        .expect("sweep");
    assert_eq!(report.deadlines_settled, 1, "{report:?}");
    assert_eq!(counts(&*store, "vm-1", "A1").await, (1, 0));
}

pub(super) async fn ledger_an_order_reserves_its_item_and_its_expiry_releases_it<S: Store>(
    store: Arc<S>,
) {
    store
        .register(&device_record("vm-1", Mode::Mixed))
        .await
        .expect("register");
    catalogue(&store, &[("cola", 350)]).await;
    planogram(&store, "vm-1", &[("A1", "cola", 1), ("A2", "cola", 0)]).await;
    let (ledger, _, clock) = ledger(store.clone());
    let dev: DeviceId = id("vm-1");
    let empty = ledger.order(&dev, &id("o0"), &id("A2"), None).await;
    assert!(
        matches!(empty, Err(AppError::Rejected(Rejection::SoldOut(_)))),
        "{empty:?}"
    );
    let placed = ledger
        .order(&dev, &id("o1"), &id("A1"), None)
        .await
        .expect("order");
    assert_eq!(placed.order().map(|o| o.price), Some(cny(350)));
    assert_eq!(counts(&*store, "vm-1", "A1").await, (1, 1));
    clock.advance(Duration::from_secs(121));
    assert!(ledger.deadline(&placed.id).await.expect("expiry"));
    let expired = store
        .session(&placed.id)
        .await
        .expect("read")
        .expect("session");
    assert_eq!(
        expired.order().map(|o| o.status),
        Some(OrderStatus::Expired)
    );
    assert_eq!(
        counts(&*store, "vm-1", "A1").await,
        (1, 0),
        "the expiry gives the item back"
    );
    // Available again: the next order takes it, is paid and delivered.
    ledger
        .order(&dev, &id("o2"), &id("A1"), None)
        .await
        .expect("order");
    assert_eq!(counts(&*store, "vm-1", "A1").await, (1, 1));
    let paid = ledger
        .payment(&dev, &payment("T2", 350))
        .await
        .expect("pay");
    assert_eq!(paid.disposition, Disposition::OrderPaid);
    assert_eq!(counts(&*store, "vm-1", "A1").await, (1, 1));
    ledger.vend(&dev, &id("o2"), true).await.expect("vend");
    assert_eq!(counts(&*store, "vm-1", "A1").await, (0, 0));
    let none_left = ledger.order(&dev, &id("o3"), &id("A1"), None).await;
    assert!(
        matches!(none_left, Err(AppError::Rejected(Rejection::SoldOut(_)))),
        "{none_left:?}"
    );
}

pub(super) async fn ledger_a_restock_makes_a_sold_out_slot_available_again<S: Store>(
    store: Arc<S>,
) {
    store
        .register(&device_record("vm-1", Mode::PayFirst))
        .await
        .expect("register");
    catalogue(&store, &[("cola", 350)]).await;
    planogram(&store, "vm-1", &[("A1", "cola", 0)]).await;
    let (ledger, _, _) = ledger(store.clone());
    ledger
        .payment(&id("vm-1"), &payment("T1", 1000))
        .await
        .expect("pay");
    assert_eq!(
        declined(&ledger, "vm-1", "r1", "A1").await,
        DeclineReason::SoldOut
    );
    restock(&store, "vm-1", vec![("A1", 3)]).await;
    approved(&ledger, "vm-1", "r2", "A1").await;
    assert_eq!(counts(&*store, "vm-1", "A1").await, (3, 1));
}

pub(super) async fn ledger_machines_selling_the_last_item_of_one_product_are_independent<
    S: Store,
>(
    store: Arc<S>,
) {
    catalogue(&store, &[("cola", 350)]).await;
    for (d, slot) in [("vm-1", "A1"), ("vm-2", "B7")] {
        store
            .register(&device_record(d, Mode::PayFirst))
            .await
            .expect("register");
        planogram(&store, d, &[(slot, "cola", 1)]).await;
    }
    let (ledger, _, _) = ledger(store.clone());
    for (d, trade) in [("vm-1", "T1"), ("vm-2", "T2")] {
        ledger
            .payment(&id(d), &payment(trade, 1000))
            .await
            .expect("pay");
    }
    let answers = join_all(vec![
        buy(&ledger, "vm-1", "r1", "A1"),
        buy(&ledger, "vm-2", "r1", "B7"),
    ])
    .await;
    assert!(
        answers.iter().all(|a| matches!(a, Ok(a) if a.approved())),
        "each machine sells its own last item: {answers:?}"
    );
    for d in ["vm-1", "vm-2"] {
        ledger.vend(&id(d), &id("r1"), true).await.expect("vend");
    }
    assert_eq!(counts(&*store, "vm-1", "A1").await, (0, 0));
    assert_eq!(counts(&*store, "vm-2", "B7").await, (0, 0));
    assert_eq!(
        declined(&ledger, "vm-1", "r2", "A1").await,
        DeclineReason::SoldOut
    );
}

pub(super) async fn ledger_racing_purchases_for_the_last_item_let_exactly_one_win<S: Store>(
    store: Arc<S>,
) {
    store
        .register(&device_record("vm-1", Mode::PayFirst))
        .await
        .expect("register");
    catalogue(&store, &[("cola", 350)]).await;
    planogram(&store, "vm-1", &[("A1", "cola", 0)]).await;
    let (ledger, _, _) = ledger(store.clone());
    let dev: DeviceId = id("vm-1");
    ledger
        .payment(&dev, &payment("T1", 2000))
        .await
        .expect("pay");
    for round in 0..3 {
        restock(&store, "vm-1", vec![("A1", 1)]).await;
        let (a, b) = (format!("r{round}a"), format!("r{round}b"));
        let answers = join_all(vec![
            buy(&ledger, "vm-1", &a, "A1"),
            buy(&ledger, "vm-1", &b, "A1"),
        ])
        .await;
        let answers: Vec<PurchaseAnswer> =
            answers.into_iter().map(|a| a.expect("answered")).collect();
        let won: Vec<&PurchaseAnswer> = answers.iter().filter(|a| a.approved()).collect();
        assert_eq!(won.len(), 1, "round {round}: {answers:?}");
        assert!(
            answers
                .iter()
                .any(|a| a.declined == Some(DeclineReason::SoldOut)),
            "round {round}: the other is sold out: {answers:?}"
        );
        assert_eq!(counts(&*store, "vm-1", "A1").await, (1, 1));
        ledger
            .vend(&dev, &won[0].request_id, true)
            .await
            .expect("vend");
        assert_eq!(counts(&*store, "vm-1", "A1").await, (0, 0));
    }
    let s = current(&ledger, "vm-1").await;
    assert_eq!((s.balance, s.spent), (cny(950), cny(1050)));
    s.check_invariant().expect("invariant");
}

pub(super) async fn ledger_a_vend_for_one_customer_and_a_sale_to_the_next_both_count<S: Store>(
    store: Arc<S>,
) {
    // The last customer's vend report (on their settling session) and the next customer's purchase
    // (on the new one) write different sessions but the same slot row: neither change may be lost.
    store
        .register(&device_record("vm-1", Mode::PayFirst))
        .await
        .expect("register");
    catalogue(&store, &[("cola", 350)]).await;
    planogram(&store, "vm-1", &[("A1", "cola", 5)]).await;
    let (ledger, _, _) = ledger(store.clone());
    let dev: DeviceId = id("vm-1");
    ledger
        .payment(&dev, &payment("T0", 1000))
        .await
        .expect("pay");
    approved(&ledger, "vm-1", "r0", "A1").await;
    for round in 1..=3u32 {
        ledger.end(&dev).await.expect("the customer leaves");
        ledger
            .payment(&dev, &payment(&format!("T{round}"), 1000))
            .await
            .expect("the next customer pays");
        let (last, next) = (format!("r{}", round - 1), format!("r{round}"));
        let vend: Boxed<'_, Result<(), AppError>> =
            Box::pin(async { ledger.vend(&dev, &id(&last), true).await.map(|_| ()) });
        let sale: Boxed<'_, Result<(), AppError>> = Box::pin(async {
            let a = buy(&ledger, "vm-1", &next, "A1").await?;
            assert!(a.approved(), "{a:?}");
            Ok(())
        });
        for r in join_all(vec![vend, sale]).await {
            r.expect("both commands are written");
        }
        assert_eq!(
            counts(&*store, "vm-1", "A1").await,
            (5 - round, 1),
            "round {round}: one item delivered, one promised"
        );
    }
}

pub(super) async fn ledger_a_delivery_from_a_slot_counted_empty_is_flagged_and_stays_at_zero<
    S: Store,
>(
    store: Arc<S>,
) {
    store
        .register(&device_record("vm-1", Mode::PayFirst))
        .await
        .expect("register");
    catalogue(&store, &[("cola", 350)]).await;
    planogram(&store, "vm-1", &[("A1", "cola", 1)]).await;
    let (ledger, _, _) = ledger(store.clone());
    let dev: DeviceId = id("vm-1");
    ledger
        .payment(&dev, &payment("T1", 1000))
        .await
        .expect("pay");
    approved(&ledger, "vm-1", "r1", "A1").await;
    // Counted 0 while the item is promised: the count keeps the reservation.
    restock(&store, "vm-1", vec![("A1", 0)]).await;
    assert_eq!(counts(&*store, "vm-1", "A1").await, (0, 1));
    let s = ledger.vend(&dev, &id("r1"), true).await.expect("vend");
    assert!(
        s.anomalies.iter().any(|a| a.kind
            == AnomalyKind::StockMismatch {
                slot: id("A1"),
                request_id: id("r1"),
            }),
        "{:?}",
        s.anomalies
    );
    assert_eq!(
        counts(&*store, "vm-1", "A1").await,
        (0, 0),
        "stays at 0, promise ended"
    );
    assert_eq!(
        s.spent,
        cny(350),
        "the money follows the vend, not the count"
    );
}

pub(super) async fn ledger_the_biggest_decision_with_reserved_holds_fits_one_write<S: Store>(
    store: Arc<S>,
) {
    // The most a deadline can write: the session, a refund per payment (the balance and the released
    // holds split across all of them) and a slot row per reserved hold.
    store
        .register(&device_record("vm-1", Mode::PayFirst))
        .await
        .expect("register");
    catalogue(&store, &[("gum", 100)]).await;
    let names: Vec<String> = (0..=MAX_RESERVED_HOLDS)
        .map(|i| format!("S{i:02}"))
        .collect();
    let slots: Vec<(&str, &str, u32)> = names.iter().map(|n| (n.as_str(), "gum", 5)).collect();
    planogram(&store, "vm-1", &slots).await;
    let limited = Arc::new(Limited {
        inner: store.clone(),
        largest: Mutex::new(0),
    });
    let rec = Arc::new(Recorder::default());
    let clock = Arc::new(ManualClock::at(T0));
    let ledger = Ledger::new(
        limited.clone(),
        rec.clone(),
        rec.clone(),
        clock.clone(),
        Windows::default(),
    );
    let dev: DeviceId = id("vm-1");
    for i in 0..MAX_PAYMENTS {
        let o = ledger
            .payment(&dev, &payment(&format!("T{i}"), 100))
            .await
            .expect("pay");
        assert_eq!(o.disposition, Disposition::Credited);
        clock.advance(Duration::from_millis(100));
    }
    for (i, slot) in names.iter().take(MAX_RESERVED_HOLDS).enumerate() {
        approved(&ledger, "vm-1", &format!("r{i}"), slot).await;
    }
    assert_eq!(
        declined(&ledger, "vm-1", "one-more", &names[MAX_RESERVED_HOLDS]).await,
        DeclineReason::SessionFull,
        "no more reserved holds than a deadline can release in one write"
    );
    clock.advance(Duration::from_secs(400));
    let report = ledger
        .sweep(100, Duration::from_secs(60))
        .await
        .expect("the deadline commits");
    assert_eq!(report.deadlines_settled, 1, "{report:?}");
    let largest = limited.largest.lock().map(|l| *l).unwrap_or(usize::MAX);
    assert_eq!(
        largest,
        1 + MAX_PAYMENTS + MAX_RESERVED_HOLDS + 1,
        "the deadline wrote the session, {MAX_PAYMENTS} refunds, {MAX_RESERVED_HOLDS} slot rows and its facts"
    );
    assert!(largest <= MAX_WRITE_ACTIONS, "{largest} actions");
    for slot in &names {
        assert_eq!(
            counts(&*store, "vm-1", slot).await,
            (5, 0),
            "{slot} released"
        );
    }
    let refunds = rec.refunds.lock().map(|r| r.len()).unwrap_or(0);
    assert_eq!(refunds, MAX_PAYMENTS);
}
