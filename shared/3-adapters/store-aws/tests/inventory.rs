//! Catalogue and inventory on `DynamoStore` against moto: the catalogue and slot rows read back across
//! `Query` pages, a machine and its planogram in one request, the planogram listing kept exact, the
//! conditions of `write_slots` and of a sale's slot rows (all or nothing), and the races on stock —
//! purchases for the last item, restocks against vend reports — through the services.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code asserts by panicking

use std::sync::Arc;

use aws_sdk_dynamodb::types::AttributeValue as A;
use vendpay_app::contract::{device_record, ManualClock, Recorder, T0};
use vendpay_app::inventory::Inventory;
use vendpay_app::{Commit, DeviceStore, InventoryStore, Ledger, SessionStore, StoreError};
use vendpay_domain::{
    DeclineReason, DeviceId, Mode, Product, PurchaseRequest, PurchaseStatus, Sku, Slot, SlotSpec,
    SlotStock, SlotWrites, StockCount, Windows,
};
use vendpay_store_aws::DynamoStore;
use vendpay_test_kit::fixtures::{cny, id, payment};
use vendpay_test_kit::moto;

struct Fixture {
    store: Arc<DynamoStore>,
    ledger: Ledger,
    inventory: Inventory,
    device: DeviceId,
}

/// A table with machine `vm-1` registered and the products `cola` (3.50) and `water` (2.00); `page`
/// caps the items of each `Query` page so the reads must follow `LastEvaluatedKey`.
async fn fixture(mode: Mode, page: Option<i32>) -> Fixture {
    let config = moto::sdk().await;
    let mut store = DynamoStore::new(&config, moto::unique("vp-inventory"));
    if let Some(items) = page {
        store = store.with_query_page(items);
    }
    let store = Arc::new(store);
    store.create_table().await.expect("table");
    store
        .register(&device_record("vm-1", mode))
        .await
        .expect("register");
    let recorder = Arc::new(Recorder::default());
    let ledger = Ledger::new(
        store.clone(),
        recorder.clone(),
        recorder,
        Arc::new(ManualClock::at(T0)),
        Windows::default(),
    );
    let inventory = Inventory::new(store.clone(), store.clone(), store.clone());
    for (sku, minor) in [("cola", 350), ("water", 200)] {
        inventory
            .put_product(id(sku), sku, cny(minor), None)
            .await
            .expect("product");
    }
    Fixture {
        store,
        ledger,
        inventory,
        device: id("vm-1"),
    }
}

fn spec(slot: &str, sku: &str, capacity: u32) -> SlotSpec {
    SlotSpec {
        slot: id(slot),
        sku: id(sku),
        capacity,
        price: None,
    }
}

fn count(slot: &str, stock: u32) -> StockCount {
    StockCount {
        slot: id(slot),
        stock,
    }
}

fn slot_names(rows: &[SlotStock]) -> Vec<&str> {
    rows.iter().map(|r| r.slot.as_str()).collect()
}

async fn row(f: &Fixture, slot: &str) -> SlotStock {
    let slot: Slot = id(slot);
    f.store
        .slots(&f.device)
        .await
        .expect("slots")
        .into_iter()
        .find(|r| r.slot == slot)
        .expect("the slot's row")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_catalogue_is_an_upsert_listed_in_sku_order_across_pages() {
    let f = fixture(Mode::PayFirst, Some(2)).await;
    for (sku, minor) in [("tea", 300), ("apple.juice", 450), ("coffee_1", 500)] {
        f.store
            .put_product(&Product {
                sku: id(sku),
                name: sku.into(),
                price: cny(minor),
                category: Some("drinks".into()),
            })
            .await
            .expect("put");
    }
    // The same sku again replaces it.
    f.inventory
        .put_product(id("cola"), "Cola Zero", cny(380), Some("soda"))
        .await
        .expect("upsert");
    let listed = f.store.products().await.expect("products");
    let skus: Vec<&str> = listed.iter().map(|p| p.sku.as_str()).collect();
    assert_eq!(skus, ["apple.juice", "coffee_1", "cola", "tea", "water"]);
    let cola = f
        .store
        .product(&id("cola"))
        .await
        .expect("read")
        .expect("cola");
    assert_eq!(
        (cola.name.as_str(), cola.price, cola.category.as_deref()),
        ("Cola Zero", cny(380), Some("soda"))
    );
    assert_eq!(listed[2], cola);
    let unknown: Sku = id("lemonade");
    assert_eq!(f.store.product(&unknown).await, Ok(None));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_machine_and_its_planogram_are_one_query_and_the_listing_follows_it() {
    let f = fixture(Mode::PayFirst, None).await;
    assert_eq!(f.store.stocked_devices().await, Ok(vec![]));
    let slots: Vec<SlotSpec> = ["B2", "A1", "C10", "A2", "C1"]
        .iter()
        .map(|s| spec(s, "cola", 8))
        .collect();
    f.inventory
        .set_slots(&f.device, &slots)
        .await
        .expect("slot map");

    // The device item and every slot row in one request (no session is current yet).
    let before = f.store.requests();
    let m = f
        .store
        .machine(&f.device)
        .await
        .expect("machine")
        .expect("registered");
    assert_eq!(
        f.store.requests() - before,
        1,
        "one Query reads the machine"
    );
    assert_eq!(m.record.device.id, f.device);
    assert!(m.current.is_none());
    assert_eq!(slot_names(&m.slots), ["A1", "A2", "B2", "C1", "C10"]);
    assert!(m.slots.iter().all(|r| r.version == 1 && r.stock == 0));
    assert_eq!(f.store.slots(&f.device).await.expect("slots"), m.slots);
    // With a current session: one more read, its GetItem.
    f.ledger
        .payment(&f.device, &payment("T1", 1000))
        .await
        .expect("pay");
    let before = f.store.requests();
    let m = f.store.machine(&f.device).await.expect("read").expect("m");
    assert_eq!(f.store.requests() - before, 2);
    assert!(m.current.is_some() && m.slots.len() == 5);

    // A second machine; the listing is in id order.
    f.store
        .register(&device_record("vm-0", Mode::PayFirst))
        .await
        .expect("register");
    let other: DeviceId = id("vm-0");
    f.inventory
        .set_slots(&other, &[spec("A1", "water", 4)])
        .await
        .expect("slot map");
    assert_eq!(
        f.store.stocked_devices().await,
        Ok(vec![other.clone(), f.device.clone()])
    );
    assert_eq!(
        slot_names(&f.store.slots(&other).await.expect("slots")),
        ["A1"]
    );

    // Replaced: A1 kept, B7 new, the rest removed; then emptied, which drops it from the listing.
    f.inventory
        .set_slots(&f.device, &[spec("A1", "cola", 8), spec("B7", "water", 6)])
        .await
        .expect("replace");
    let rows = f.store.slots(&f.device).await.expect("slots");
    assert_eq!(slot_names(&rows), ["A1", "B7"]);
    assert_eq!(
        rows[0].version, 2,
        "a kept slot is rewritten, so the replacement is conditional on its version"
    );
    assert_eq!(
        f.store.stocked_devices().await,
        Ok(vec![other.clone(), f.device.clone()])
    );
    f.inventory.set_slots(&f.device, &[]).await.expect("empty");
    assert_eq!(f.store.slots(&f.device).await, Ok(vec![]));
    assert_eq!(f.store.stocked_devices().await, Ok(vec![other.clone()]));
    let entry = f
        .store
        .client()
        .get_item()
        .table_name(f.store.table())
        .key("pk", A::S("planograms".into()))
        .key("sk", A::S("dev#vm-1".into()))
        .consistent_read(true)
        .send()
        .await
        .expect("raw get");
    assert!(entry.item.is_none(), "the listing entry is deleted");
    let m = f.store.machine(&f.device).await.expect("read").expect("m");
    assert!(m.slots.is_empty() && m.current.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_follow_every_query_page() {
    // Two items a page: the machine's partition, its slot rows, the catalogue and the listing all
    // span several pages.
    let f = fixture(Mode::PayFirst, Some(2)).await;
    let slots: Vec<SlotSpec> = (0..7).map(|i| spec(&format!("S{i}"), "water", 5)).collect();
    f.inventory
        .set_slots(&f.device, &slots)
        .await
        .expect("slot map");
    let m = f.store.machine(&f.device).await.expect("read").expect("m");
    assert_eq!(m.slots.len(), 7);
    assert_eq!(f.store.slots(&f.device).await.expect("slots").len(), 7);
    for i in 0..4 {
        let d = format!("vm-x{i}");
        f.store
            .register(&device_record(&d, Mode::PayFirst))
            .await
            .expect("register");
        f.inventory
            .set_slots(&id(&d), &[spec("A1", "cola", 3)])
            .await
            .expect("slot map");
    }
    let listed = f.store.stocked_devices().await.expect("listing");
    let names: Vec<&str> = listed.iter().map(DeviceId::as_str).collect();
    assert_eq!(names, ["vm-1", "vm-x0", "vm-x1", "vm-x2", "vm-x3"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_slots_is_conditional_and_all_or_nothing() {
    let f = fixture(Mode::PayFirst, None).await;
    let new = |slot: &str| SlotStock {
        sold_at: None,
        device_id: f.device.clone(),
        slot: id(slot),
        sku: id("cola"),
        capacity: 10,
        price: None,
        stock: 0,
        reserved: 0,
        version: 1,
    };
    let first = SlotWrites {
        write: vec![new("A1"), new("A2")],
        remove: vec![],
    };
    f.store
        .write_slots(&f.device, &first)
        .await
        .expect("first map");
    // A new row that exists already.
    assert!(matches!(
        f.store.write_slots(&f.device, &first).await,
        Err(StoreError::Conflict(_))
    ));
    let a1 = row(&f, "A1").await;
    let a2 = row(&f, "A2").await;
    let refilled = SlotStock {
        stock: 9,
        version: 2,
        ..a1.clone()
    };
    // A good kept row and a good new row, with a removal of a stale version: nothing is written.
    let stale_removal = SlotWrites {
        write: vec![refilled.clone(), new("A3")],
        remove: vec![SlotStock {
            version: 5,
            ..a2.clone()
        }],
    };
    assert!(matches!(
        f.store.write_slots(&f.device, &stale_removal).await,
        Err(StoreError::Conflict(_))
    ));
    // A kept row written from a stale read.
    let stale_write = SlotWrites {
        write: vec![SlotStock {
            version: 3,
            ..refilled.clone()
        }],
        remove: vec![],
    };
    assert!(matches!(
        f.store.write_slots(&f.device, &stale_write).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(
        f.store.slots(&f.device).await,
        Ok(vec![a1.clone(), a2.clone()])
    );
    // The same change with the right versions goes through.
    let good = SlotWrites {
        write: vec![refilled.clone(), new("A3")],
        remove: vec![a2],
    };
    f.store.write_slots(&f.device, &good).await.expect("write");
    let rows = f.store.slots(&f.device).await.expect("slots");
    assert_eq!(rows, vec![refilled, new("A3")]);
    // Rows of another machine are refused.
    let other = SlotWrites {
        write: vec![new("B1")],
        remove: vec![],
    };
    assert!(matches!(
        f.store.write_slots(&id("vm-9"), &other).await,
        Err(StoreError::Permanent(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_additions_keep_the_listing_exact() {
    // Each change adds a slot of its own; they race on the listing entry's count. Whatever wins,
    // removing every row that exists must then remove the machine from the listing.
    let f = fixture(Mode::PayFirst, None).await;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..8 {
        let (store, device) = (f.store.clone(), f.device.clone());
        tasks.spawn(async move {
            let row = SlotStock {
                sold_at: None,
                device_id: device.clone(),
                slot: id(&format!("S{i}")),
                sku: id("water"),
                capacity: 5,
                price: None,
                stock: 0,
                reserved: 0,
                version: 1,
            };
            let writes = SlotWrites {
                write: vec![row],
                remove: vec![],
            };
            // Re-decide after a lost race, as the service does.
            for _ in 0..20 {
                match store.write_slots(&device, &writes).await {
                    Err(StoreError::Conflict(_)) => continue,
                    other => return other,
                }
            }
            Err(StoreError::Conflict("gave up".into()))
        });
    }
    let mut written = 0;
    while let Some(r) = tasks.join_next().await {
        if r.expect("task").is_ok() {
            written += 1;
        }
    }
    let rows = f.store.slots(&f.device).await.expect("slots");
    assert_eq!(rows.len(), written, "{written} changes went through");
    assert!(written > 0);
    assert_eq!(f.store.stocked_devices().await, Ok(vec![f.device.clone()]));
    f.store
        .write_slots(
            &f.device,
            &SlotWrites {
                write: vec![],
                remove: rows,
            },
        )
        .await
        .expect("remove every row: the count agrees with the rows");
    assert_eq!(f.store.stocked_devices().await, Ok(vec![]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sale_writes_its_slot_row_with_the_money_or_nothing() {
    let f = fixture(Mode::PayFirst, None).await;
    let own_price = SlotSpec {
        price: Some(cny(300)),
        ..spec("A2", "water", 10)
    };
    f.inventory
        .set_slots(&f.device, &[spec("A1", "cola", 10), own_price])
        .await
        .expect("slot map");
    f.inventory
        .restock(&f.device, &[count("A1", 4), count("A2", 4)])
        .await
        .expect("restock");
    f.ledger
        .payment(&f.device, &payment("T1", 1000))
        .await
        .expect("pay");
    // A slot with its own price costs what a purchase cost before planograms: the request row, the
    // machine with its slot rows (one Query), the session, the write.
    let req = PurchaseRequest {
        request_id: id("r0"),
        slot: id("A2"),
        price: None,
        session: None,
    };
    let before = f.store.requests();
    let a = f.ledger.purchase_in(&f.device, &req).await.expect("buy");
    assert_eq!((a.approved(), a.price), (true, cny(300)), "{a:?}");
    assert_eq!(f.store.requests() - before, 4);
    // At its product's price: one more read, the product.
    let req = PurchaseRequest {
        request_id: id("r1"),
        slot: id("A1"),
        price: None,
        session: None,
    };
    let before = f.store.requests();
    let a = f.ledger.purchase_in(&f.device, &req).await.expect("buy");
    let cost = f.store.requests() - before;
    assert!(a.approved(), "{a:?}");
    assert_eq!(a.price, cny(350), "the product's price");
    assert_eq!(cost, 5);
    let after_sale = row(&f, "A1").await;
    assert_eq!(
        (after_sale.stock, after_sale.reserved, after_sale.version),
        (4, 1, 3)
    );

    // A commit carrying the row as it was before the sale (version 3 again): refused, and the
    // session it carries is not written either.
    let session = f
        .store
        .session(a.session.as_ref().expect("session"))
        .await
        .expect("read")
        .expect("session");
    let next = vendpay_domain::Session {
        version: session.version + 1,
        ..session.clone()
    };
    let stale = Commit {
        sessions: vec![next.clone()],
        stock: vec![SlotStock {
            reserved: 0,
            ..after_sale.clone()
        }],
        ..Commit::default()
    };
    assert!(matches!(
        f.store.commit(&stale).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(
        f.store.session(&session.id).await,
        Ok(Some(session.clone()))
    );
    assert_eq!(row(&f, "A1").await, after_sale);
    // A stale session with a good row: the row is not written either.
    let stale_session = Commit {
        sessions: vec![session.clone()],
        stock: vec![SlotStock {
            reserved: 0,
            version: 4,
            ..after_sale.clone()
        }],
        ..Commit::default()
    };
    assert!(matches!(
        f.store.commit(&stale_session).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(row(&f, "A1").await, after_sale);
    // A row that is not there (its slot was removed) fails the write too.
    let missing = Commit {
        sessions: vec![next],
        stock: vec![SlotStock {
            slot: id("Z9"),
            version: 4,
            ..after_sale.clone()
        }],
        ..Commit::default()
    };
    assert!(matches!(
        f.store.commit(&missing).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(f.store.session(&session.id).await, Ok(Some(session)));

    // Delivered: one fewer in stock, one fewer promised.
    f.ledger
        .vend(&f.device, &id("r1"), true)
        .await
        .expect("vend");
    let delivered = row(&f, "A1").await;
    assert_eq!((delivered.stock, delivered.reserved), (3, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_purchases_racing_for_the_last_item_approve_exactly_one() {
    let f = fixture(Mode::PayFirst, None).await;
    f.inventory
        .set_slots(&f.device, &[spec("A1", "cola", 10)])
        .await
        .expect("slot map");
    f.inventory
        .restock(&f.device, &[count("A1", 1)])
        .await
        .expect("restock");
    f.ledger
        .payment(&f.device, &payment("T1", 2000))
        .await
        .expect("pay: enough for both");
    let buy = |r: &str| {
        let (ledger, device) = (f.ledger.clone(), f.device.clone());
        let req = PurchaseRequest {
            request_id: id(r),
            slot: id("A1"),
            price: None,
            session: None,
        };
        async move { ledger.purchase_in(&device, &req).await }
    };
    let (a, b) = tokio::join!(tokio::spawn(buy("r1")), tokio::spawn(buy("r2")));
    let answers = [a.expect("task").expect("r1"), b.expect("task").expect("r2")];
    assert_eq!(
        answers.iter().filter(|a| a.approved()).count(),
        1,
        "{answers:?}"
    );
    let declined: Vec<_> = answers.iter().filter_map(|a| a.declined).collect();
    assert_eq!(declined, [DeclineReason::SoldOut]);
    let a1 = row(&f, "A1").await;
    assert_eq!((a1.stock, a1.reserved), (1, 1), "one item, promised once");
    let s = f
        .ledger
        .current(&f.device)
        .await
        .expect("read")
        .expect("session");
    assert_eq!((s.balance, s.held), (cny(2000 - 350), cny(350)));
    s.check_invariant().expect("invariant");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn restocks_racing_vend_reports_never_lose_a_stock_change() {
    // Vend reports are session-level commands (no device guard): only the slot row's version
    // orders them against a restock of the same row. Each restock sets a count the row does not
    // have yet (30 and 31 in turn), so every one of them writes.
    const SALES: usize = 20;
    let f = fixture(Mode::PayFirst, None).await;
    f.inventory
        .set_slots(&f.device, &[spec("A1", "water", 40)])
        .await
        .expect("slot map");
    f.inventory
        .restock(&f.device, &[count("A1", 20)])
        .await
        .expect("restock");
    f.ledger
        .payment(&f.device, &payment("T1", 5000))
        .await
        .expect("pay");
    for i in 0..SALES {
        let req = PurchaseRequest {
            request_id: id(&format!("r{i}")),
            slot: id("A1"),
            price: None,
            session: None,
        };
        let a = f.ledger.purchase_in(&f.device, &req).await.expect("buy");
        assert!(a.approved(), "{a:?}");
    }
    assert_eq!(row(&f, "A1").await.reserved, SALES as u32);

    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..SALES {
        let (ledger, device) = (f.ledger.clone(), f.device.clone());
        tasks.spawn(async move {
            ledger
                .vend(&device, &id(&format!("r{i}")), true)
                .await
                .map(|_| ())
                .map_err(|e| (Some(i), e))
        });
        let (inventory, device) = (f.inventory.clone(), f.device.clone());
        let stock = 30 + (i % 2) as u32;
        tasks.spawn(async move {
            inventory
                .restock(&device, &[count("A1", stock)])
                .await
                .map(|_| ())
                .map_err(|e| (None, e))
        });
    }
    let mut unreported = Vec::new();
    while let Some(r) = tasks.join_next().await {
        if let Err((which, e)) = r.expect("task") {
            assert!(e.is_retryable(), "only contention may remain: {e}");
            if let Some(i) = which {
                unreported.push(i);
            }
        }
    }
    // A report that gave up under contention is retried, as the machine would.
    for i in unreported {
        f.ledger
            .vend(&f.device, &id(&format!("r{i}")), true)
            .await
            .expect("vend again");
    }
    let a1 = row(&f, "A1").await;
    assert_eq!(a1.reserved, 0, "every promise was reported: {a1:?}");
    assert!(a1.stock <= 31, "{a1:?}");
    let s = f
        .ledger
        .current(&f.device)
        .await
        .expect("read")
        .expect("session");
    assert!(s
        .purchases
        .iter()
        .all(|p| p.status == PurchaseStatus::Delivered));
}
