//! Catalogue and inventory rules at the domain level (see `docs/contract.md`, “Catalogue and
//! inventory”): price authority, reservations in the same decision as the money, `sold_out`, and the
//! slot counts after every way a purchase or order can end.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code asserts by panicking

mod common;

use common::*;
use vendpay_domain::*;

/// A pay-first machine selling cola (3.50) in A1 and water (2.00) in A2.
fn stocked(mode: Mode, cola: u32, water: u32) -> TestMachine {
    let mut m = TestMachine::new(mode);
    m.products(&[("cola", 350), ("water", 200)]);
    m.planogram(&[("A1", "cola", 10), ("A2", "water", 10)]);
    m.restock(&[("A1", cola), ("A2", water)]);
    m
}

fn counts(m: &TestMachine, slot: &str) -> (u32, u32) {
    let r = m.slot_row(slot);
    (r.stock, r.reserved)
}

fn ask(m: &TestMachine, id: &str, slot_name: &str, price: Option<u64>) -> Decision {
    let req = PurchaseRequest {
        request_id: req(id),
        slot: slot(slot_name),
        price: price.map(cny),
        session: None,
    };
    request_purchase(
        &m.device,
        m.current(),
        &req,
        &m.shelves(),
        &m.windows,
        at(1),
    )
}

#[test]
fn the_server_owns_the_price_of_a_planogram_slot() {
    let mut m = stocked(Mode::PayFirst, 5, 5);
    m.pay(&payment("T1", cny(1000), None, 0), 0);
    assert_eq!(
        ask(&m, "r1", "A1", Some(300)).err(),
        Some(Rejection::PriceMismatch {
            slot: slot("A1"),
            asked: cny(300),
            price: cny(350)
        })
    );
    let t = m.apply(ask(&m, "r1", "A1", None));
    let a = purchase(&t);
    assert!(a.approved());
    assert_eq!(a.price, cny(350), "the omitted price is the slot's");
    let t = m.apply(ask(&m, "r2", "A2", Some(200)));
    assert_eq!(purchase(&t).price, cny(200), "the right price may be given");
    assert_eq!(
        ask(&m, "r3", "Z9", None).err(),
        Some(Rejection::MissingPrice(slot("Z9"))),
        "outside the planogram the machine names the price"
    );
    let t = m.apply(ask(&m, "r3", "Z9", Some(100)));
    assert!(purchase(&t).approved());
    assert!(
        t.stock.is_empty(),
        "a slot outside the planogram has no stock"
    );
}

#[test]
fn a_slot_price_overrides_the_products() {
    let mut m = TestMachine::new(Mode::PayFirst);
    m.products(&[("cola", 350)]);
    let spec = [SlotSpec {
        slot: slot("A1"),
        sku: Sku::parse("cola").expect("sku"),
        capacity: 5,
        price: Some(cny(300)),
    }];
    let w = inventory::replace_planogram(&m.device, &[], &spec, &m.catalogue).expect("ok");
    m.slots = w.write;
    m.restock(&[("A1", 5)]);
    m.pay(&payment("T1", cny(1000), None, 0), 0);
    let t = m.apply(ask(&m, "r1", "A1", None));
    assert_eq!(purchase(&t).price, cny(300));
}

#[test]
fn approval_reserves_and_delivery_takes_the_item_in_the_same_decision() {
    let mut m = stocked(Mode::PayFirst, 2, 0);
    let s = outcome(&m.pay(&payment("T1", cny(1000), None, 0), 0)).session;
    let t = m.apply(ask(&m, "r1", "A1", None));
    assert_eq!(t.stock.len(), 1, "the slot row is written with the session");
    assert_eq!(counts(&m, "A1"), (2, 1));
    let t = m.vend(&s, "r1", true, 2);
    assert_eq!(t.stock.len(), 1);
    assert_eq!(counts(&m, "A1"), (1, 0));
}

#[test]
fn a_failed_vend_gives_the_item_back() {
    let mut m = stocked(Mode::PayFirst, 1, 0);
    let s = outcome(&m.pay(&payment("T1", cny(1000), None, 0), 0)).session;
    m.apply(ask(&m, "r1", "A1", None));
    assert_eq!(counts(&m, "A1"), (1, 1));
    m.vend(&s, "r1", false, 2);
    assert_eq!(counts(&m, "A1"), (1, 0));
    let t = m.apply(ask(&m, "r2", "A1", None));
    assert!(purchase(&t).approved(), "available again");
}

#[test]
fn nothing_available_is_a_sold_out_decline_that_moves_no_money() {
    let mut m = stocked(Mode::PayFirst, 1, 0);
    m.pay(&payment("T1", cny(1000), None, 0), 0);
    m.apply(ask(&m, "r1", "A1", None));
    let t = m.apply(ask(&m, "r2", "A1", None));
    let a = purchase(&t);
    assert_eq!(
        a.declined,
        Some(DeclineReason::SoldOut),
        "the one item is promised"
    );
    assert_eq!(a.balance, cny(650), "the balance is untouched");
    assert!(t.stock.is_empty());
    let t = m.apply(ask(&m, "r3", "A2", None));
    assert_eq!(
        purchase(&t).declined,
        Some(DeclineReason::SoldOut),
        "empty slot"
    );
    m.restock(&[("A2", 3)]);
    let t = m.apply(ask(&m, "r4", "A2", None));
    assert!(purchase(&t).approved(), "a restock makes it available");
}

#[test]
fn an_unconfirmed_hold_releases_its_item_and_a_late_delivery_takes_it() {
    let mut m = stocked(Mode::PayFirst, 3, 0);
    let s = outcome(&m.pay(&payment("T1", cny(1000), None, 0), 0)).session;
    m.apply(ask(&m, "r1", "A1", None));
    m.deadline(&s, 400);
    assert_eq!(counts(&m, "A1"), (3, 0), "released at the deadline");
    m.vend(&s, "r1", true, 401);
    assert_eq!(counts(&m, "A1"), (2, 0), "the item did go out");
}

#[test]
fn a_delivery_reported_at_stock_zero_is_flagged_and_stays_zero() {
    let mut m = stocked(Mode::PayFirst, 1, 0);
    let s = outcome(&m.pay(&payment("T1", cny(1000), None, 0), 0)).session;
    m.apply(ask(&m, "r1", "A1", None));
    m.restock(&[("A1", 0)]);
    let t = m.vend(&s, "r1", true, 2);
    assert_eq!(counts(&m, "A1"), (0, 0));
    assert!(t.effects.iter().any(|e| matches!(
        e,
        Effect::Anomaly {
            anomaly: Anomaly {
                kind: AnomalyKind::StockMismatch { .. },
                ..
            },
            ..
        }
    )));
}

fn place(m: &TestMachine, id: &str, slot_name: &str, secs: i64) -> Decision {
    place_order(
        &m.device,
        m.current(),
        &order(id),
        &slot(slot_name),
        None,
        &m.shelves(),
        &m.windows,
        at(secs),
    )
}

#[test]
fn an_order_reserves_at_placement_and_gives_back_when_it_expires_or_gives_way() {
    let mut m = stocked(Mode::PurchaseFirst, 1, 1);
    let t = m.apply(place(&m, "o1", "A1", 0));
    assert_eq!(t.stock.len(), 1);
    assert_eq!(counts(&m, "A1"), (1, 1));
    assert_eq!(
        place(&m, "o2", "A1", 1).err(),
        None,
        "the unpaid order gives way: its item is released before the new one is reserved"
    );
    m.apply(place(&m, "o2", "A2", 1));
    assert_eq!(counts(&m, "A1"), (1, 0), "cancelled order released");
    assert_eq!(counts(&m, "A2"), (1, 1));
    let o2 = SessionId::for_order(&m.device.id, &order("o2"));
    m.deadline(&o2, 1000);
    assert_eq!(counts(&m, "A2"), (1, 0), "expired order released");
}

#[test]
fn an_order_for_a_sold_out_slot_is_refused() {
    let mut m = stocked(Mode::PurchaseFirst, 0, 1);
    assert_eq!(
        place(&m, "o1", "A1", 0).err(),
        Some(Rejection::SoldOut(slot("A1")))
    );
    m.apply(place(&m, "o1", "A2", 0));
    let o1 = SessionId::for_order(&m.device.id, &order("o1"));
    let p = outcome(&m.pay(&payment("T1", cny(200), None, 1), 1));
    assert_eq!(p.disposition, Disposition::OrderPaid);
    assert_eq!(
        counts(&m, "A2"),
        (1, 1),
        "a paid order keeps its item promised"
    );
    m.vend(&o1, "o1", true, 2);
    assert_eq!(counts(&m, "A2"), (0, 0));
}

#[test]
fn a_paid_order_that_fails_to_vend_gives_its_item_back() {
    let mut m = stocked(Mode::PurchaseFirst, 0, 1);
    m.apply(place(&m, "o1", "A2", 0));
    let o1 = SessionId::for_order(&m.device.id, &order("o1"));
    m.pay(&payment("T1", cny(200), None, 1), 1);
    m.vend(&o1, "o1", false, 2);
    assert_eq!(counts(&m, "A2"), (1, 0));
}

#[test]
fn inventory_never_changes_how_money_moves() {
    // The same customer story with and without a planogram: the same payments, holds, refunds.
    let story = |m: &mut TestMachine| {
        let s = outcome(&m.pay(&payment("T1", cny(1000), None, 0), 0)).session;
        m.buy("r1", 350, 1);
        m.vend(&s, "r1", true, 2);
        m.buy("r2", 350, 3);
        m.vend(&s, "r2", false, 4);
        m.buy("r3", 350, 5);
        let end = m.deadline(&s, 400);
        (refunds(&end), m.session(&s).spent, m.session(&s).phase)
    };
    let mut bare = TestMachine::new(Mode::PayFirst);
    let mut shelved = stocked(Mode::PayFirst, 5, 0);
    assert_eq!(story(&mut bare), story(&mut shelved));
    assert_eq!(counts(&shelved, "A1"), (4, 0));
}

#[test]
fn a_session_holds_a_bounded_number_of_reserved_items() {
    let mut m = TestMachine::new(Mode::PayFirst);
    m.products(&[("gum", 1)]);
    m.planogram(&[("A1", "gum", 100)]);
    m.restock(&[("A1", 100)]);
    m.pay(&payment("T1", cny(1000), None, 0), 0);
    for i in 0..inventory::MAX_RESERVED_HOLDS {
        let t = m.apply(ask(&m, &format!("r{i}"), "A1", None));
        assert!(purchase(&t).approved());
    }
    let t = m.apply(ask(&m, "over", "A1", None));
    assert_eq!(purchase(&t).declined, Some(DeclineReason::SessionFull));
}

#[test]
fn a_catalogue_price_in_another_currency_is_refused_not_mixed_in() {
    let mut m = stocked(Mode::PayFirst, 5, 5);
    m.pay(&payment("T1", cny(1000), None, 0), 0);
    let usd = Money::new(350, Currency::Usd).expect("usd");
    let cola = Sku::parse("cola").expect("sku");
    if let Some(p) = m.catalogue.get_mut(&cola) {
        p.price = usd;
    }
    assert_eq!(
        ask(&m, "r1", "A1", None).err(),
        Some(Rejection::CurrencyMismatch {
            expected: Currency::Cny,
            got: Currency::Usd
        })
    );
}
