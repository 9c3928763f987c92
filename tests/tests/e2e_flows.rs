//! The two flows (see `docs/contract.md`, “Money rules”) end to end over HTTP, on the embedded
//! store and on `--store aws` against moto (DynamoDB + SQS, the deadline and refund queues
//! long-polled into the Lambda handlers), and a late payment on the embedded store. Catalogue and
//! inventory (`docs/contract.md`, “Catalogue and inventory”) on both stores: catalogue → planogram → sale at the server's price → sold out
//! (a purchase declined, an order refused 409) → restock → an order from the slot → the restocking
//! round.
//!
//! The AWS tests need moto's server: run them through `scripts/with-moto`, which exports
//! `VENDPAY_MOTO_ENDPOINT` and `AWS_ENDPOINT_URL`. Without it they fail, never pass silently. Each test
//! gets its own table (and so its own two queues, `<table>-deadlines` and `<table>-refunds`), created by
//! the server itself (`VENDPAY_AWS_CREATE=true`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code asserts by panicking

use std::time::Duration;

use serde_json::{json, Value};
use vendpay_e2e::{cny, minor, plan, round_slots, stock, wait_for, Harness, MachineKeys, SlotPlan};

/// How long a refund or a notification may take: SQS long polls answer within a second of a message
/// arriving, so this is slack for a busy 2-core machine.
const SOON: Duration = Duration::from_secs(20);

async fn start(aws: bool, extra: &[(&str, &str)]) -> Harness {
    Harness::start_on(aws, extra).await
}

/// Waits for the admin view of `session_id` to satisfy `done`.
async fn wait_session(
    h: &Harness,
    session_id: &str,
    what: &str,
    limit: Duration,
    done: impl Fn(&Value) -> bool,
) -> Value {
    wait_for(&format!("{session_id}: {what}"), limit, async || {
        let a = h
            .admin("GET", &format!("/admin/sessions/{session_id}"), None)
            .await;
        (a.status == 200 && done(&a.body)).then_some(a.body)
    })
    .await
}

fn refunds(s: &Value) -> Vec<Value> {
    s["refunds"].as_array().cloned().unwrap_or_default()
}

fn all_succeeded(s: &Value) -> bool {
    let r = refunds(s);
    !r.is_empty() && r.iter().all(|r| r["status"] == "succeeded")
}

/// Σ payments = spent + held + balance + Σ refunds, and a closed session holds nothing.
fn check_invariant(s: &Value) {
    let paid: u64 = s["payments"]
        .as_array()
        .expect("payments")
        .iter()
        .map(|p| minor(&p["amount"]))
        .sum();
    let refunded: u64 = refunds(s).iter().map(|r| minor(&r["amount"])).sum();
    let (spent, held, balance) = (minor(&s["spent"]), minor(&s["held"]), minor(&s["balance"]));
    assert_eq!(paid, spent + held + balance + refunded, "{s}");
    if s["phase"] == "closed" {
        assert_eq!((held, balance), (0, 0), "{s}");
    }
}

/// Pay first: pay 10.00, buy 3.50 (delivered), end the session → 6.50 refunded at once, closed.
async fn pay_first(h: &Harness, id: &str) {
    let m = h.register(id, "pay_first").await;
    let receipt = h.pay(&m, 1000).await;
    let trade = receipt["trade_no"].as_str().expect("trade").to_owned();
    let s = wait_for("the payment to open a session", SOON, async || {
        let s = h.session(&m).await;
        (s["state"] == "open" && s["balance"] == cny(1000)).then_some(s)
    })
    .await;
    let sid = s["session_id"].as_str().expect("session id").to_owned();
    assert_eq!(sid, format!("s:{trade}"));

    let a = h
        .device(
            &m,
            "POST",
            &format!("/devices/{id}/purchases"),
            Some(json!({"request_id": "p-1", "slot": "A1", "price": cny(350)})),
        )
        .await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    assert_eq!(a.body["decision"], "approved", "{:?}", a.body);
    assert_eq!(a.body["balance"], cny(650), "{:?}", a.body);
    let a = h
        .device(
            &m,
            "POST",
            &format!("/devices/{id}/purchases/p-1/result"),
            Some(json!({"delivered": true})),
        )
        .await;
    assert_eq!(a.status, 200, "{:?}", a.body);

    let a = h
        .device(
            &m,
            "POST",
            &format!("/devices/{id}/session/end"),
            Some(json!({ "session_id": sid })),
        )
        .await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    let closed = wait_session(h, &sid, "closed with its refund succeeded", SOON, |s| {
        s["phase"] == "closed" && all_succeeded(s)
    })
    .await;
    let r = refunds(&closed);
    assert_eq!(r.len(), 1, "{closed}");
    assert_eq!(minor(&r[0]["amount"]), 650, "{closed}");
    assert_eq!(minor(&closed["spent"]), 350, "{closed}");
    check_invariant(&closed);
    let s = h.session(&m).await;
    assert_eq!(s["state"], "idle", "{s}");
}

/// Purchase first: order 4.00, pay 5.00 → 1.00 refunded at once (before the vend), deliver, closed.
async fn purchase_first(h: &Harness, id: &str) {
    let m: MachineKeys = h.register(id, "purchase_first").await;
    let o = h
        .device(
            &m,
            "POST",
            &format!("/devices/{id}/orders"),
            Some(json!({"order_id": "o-1", "slot": "C1", "price": cny(400)})),
        )
        .await;
    assert!(o.status == 200 || o.status == 201, "{:?}", o.body);
    assert_eq!(o.body["state"], "awaiting_payment", "{:?}", o.body);
    let sid = o.body["session_id"]
        .as_str()
        .expect("session id")
        .to_owned();

    h.pay(&m, 500).await;
    let s = wait_for("the order to be paid", SOON, async || {
        let s = h.session(&m).await;
        (s["state"] == "paid").then_some(s)
    })
    .await;
    assert_eq!(s["order_id"], "o-1", "{s}");
    assert_eq!(s["price"], cny(400), "{s}");
    // The over-payment goes back at once, while the machine has not vended yet.
    let refunded = wait_session(h, &sid, "the over-payment refunded", SOON, all_succeeded).await;
    let r = refunds(&refunded);
    assert_eq!(r.len(), 1, "{refunded}");
    assert_eq!(minor(&r[0]["amount"]), 100, "{refunded}");
    assert_eq!(r[0]["reason"], "overpayment", "{refunded}");

    let a = h
        .device(
            &m,
            "POST",
            &format!("/devices/{id}/purchases/o-1/result"),
            Some(json!({"delivered": true})),
        )
        .await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    let closed = wait_session(h, &sid, "closed", SOON, |s| s["phase"] == "closed").await;
    assert_eq!(refunds(&closed).len(), 1, "no other refund: {closed}");
    assert_eq!(minor(&closed["spent"]), 400, "{closed}");
    check_invariant(&closed);
    let s = h.session(&m).await;
    assert_eq!(s["state"], "idle", "{s}");
}

/// A signed `POST /devices/{id}/{tail}`: `(status, body)`.
async fn device_post(h: &Harness, m: &MachineKeys, tail: &str, body: Value) -> (u16, Value) {
    let a = h
        .device(m, "POST", &format!("/devices/{}/{tail}", m.id), Some(body))
        .await;
    (a.status, a.body)
}

/// Catalogue → planogram → a sale of the last item at the server's price → sold out (a purchase
/// declined `sold_out`, an order refused 409 `sold_out`, neither moving money or stock) → restock → an
/// order from the slot, paid and delivered → the restocking round, at the default threshold and at
/// another.
async fn catalogue_to_restocking_round(h: &Harness, id: &str) {
    let cola = h.put_product("cola-330", "Cola 330 ml", 350).await;
    assert_eq!(cola["price"], cny(350), "{cola}");
    h.put_product("water-500", "Water 500 ml", 250).await;
    // An upsert: the same sku again replaces the product.
    h.put_product("water-500", "Water 500 ml", 200).await;
    let products = h.admin("GET", "/admin/products", None).await;
    assert_eq!(products.status, 200, "{:?}", products.body);
    let listed: Vec<(&str, u64)> = products.body["products"]
        .as_array()
        .expect("products")
        .iter()
        .map(|p| (p["sku"].as_str().expect("sku"), minor(&p["price"])))
        .collect();
    assert_eq!(listed, [("cola-330", 350), ("water-500", 200)]);

    let m = h.register(id, "mixed").await;
    let inv = h
        .set_slots(
            id,
            &[
                plan("A1", "cola-330", 4),
                SlotPlan {
                    price: Some(cny(180)),
                    ..plan("A2", "water-500", 10)
                },
            ],
        )
        .await;
    assert_eq!(inv["device_id"], id, "{inv}");
    assert_eq!(stock(&inv, "A1"), (0, 0), "a new slot starts empty: {inv}");
    assert_eq!(inv["slots"][0]["name"], "Cola 330 ml", "{inv}");
    assert_eq!(
        inv["slots"][0]["price"],
        cny(350),
        "the product's price: {inv}"
    );
    assert_eq!(
        inv["slots"][1]["price"],
        cny(180),
        "the slot's own price: {inv}"
    );
    let inv = h.restock(id, &[("A1", 1), ("A2", 10)]).await;
    assert_eq!(stock(&inv, "A1"), (1, 0), "{inv}");
    assert_eq!(inv["slots"][0]["low"], true, "1 of 4 is low: {inv}");
    assert_eq!(inv["slots"][1]["low"], false, "{inv}");

    // A pay-first session buys the last cola without naming a price.
    let receipt = h.pay(&m, 1000).await;
    let sid = format!("s:{}", receipt["trade_no"].as_str().expect("trade"));
    wait_for("the payment to open a session", SOON, async || {
        let s = h.session(&m).await;
        (s["state"] == "open" && s["balance"] == cny(1000)).then_some(s)
    })
    .await;
    let (status, a) = device_post(
        h,
        &m,
        "purchases",
        json!({"request_id": "p-1", "slot": "A1"}),
    )
    .await;
    assert_eq!((status, &a["decision"]), (200, &json!("approved")), "{a}");
    assert_eq!(a["balance"], cny(650), "sold at the product's 3.50: {a}");
    assert_eq!(
        stock(&h.inventory(id).await, "A1"),
        (1, 1),
        "reserved with the approval"
    );
    let (status, s) = device_post(h, &m, "purchases/p-1/result", json!({"delivered": true})).await;
    assert_eq!(status, 200, "{s}");
    let inv = h.inventory(id).await;
    assert_eq!(stock(&inv, "A1"), (0, 0), "delivered: {inv}");
    assert_eq!(inv["slots"][0]["low"], true, "{inv}");

    // Sold out: the next purchase of A1 is declined and changes nothing.
    let (status, a) = device_post(
        h,
        &m,
        "purchases",
        json!({"request_id": "p-2", "slot": "A1"}),
    )
    .await;
    assert_eq!(status, 200, "a decline is an answer: {a}");
    assert_eq!(
        (&a["decision"], &a["reason"]),
        (&json!("declined"), &json!("sold_out")),
        "{a}"
    );
    assert_eq!(a["balance"], cny(650), "no money moved: {a}");
    assert_eq!(h.inventory(id).await, inv, "no stock moved");
    // Water at the slot's own price, named by the machine.
    let (status, a) = device_post(
        h,
        &m,
        "purchases",
        json!({"request_id": "p-3", "slot": "A2", "price": cny(180)}),
    )
    .await;
    assert_eq!((status, &a["decision"]), (200, &json!("approved")), "{a}");
    device_post(h, &m, "purchases/p-3/result", json!({"delivered": true})).await;
    assert_eq!(stock(&h.inventory(id).await, "A2"), (9, 0));
    let (status, _) = device_post(h, &m, "session/end", json!({ "session_id": sid })).await;
    assert_eq!(status, 200);
    let closed = wait_session(h, &sid, "closed with its change refunded", SOON, |s| {
        s["phase"] == "closed" && all_succeeded(s)
    })
    .await;
    assert_eq!(minor(&closed["spent"]), 530, "{closed}");
    check_invariant(&closed);

    // An order for the sold-out slot is refused 409, and nothing is opened or reserved.
    let (status, e) = device_post(h, &m, "orders", json!({"order_id": "o-1", "slot": "A1"})).await;
    assert_eq!(
        (status, &e["error"]["code"]),
        (409, &json!("sold_out")),
        "{e}"
    );
    assert_eq!(h.session(&m).await["state"], "idle");
    assert_eq!(stock(&h.inventory(id).await, "A1"), (0, 0));

    // Restock; an order from the slot at the server's price reserves, is paid, delivered.
    let inv = h.restock(id, &[("A1", 4)]).await;
    assert_eq!(stock(&inv, "A1"), (4, 0), "{inv}");
    assert_eq!(inv["slots"][0]["low"], false, "{inv}");
    let (status, o) = device_post(h, &m, "orders", json!({"order_id": "o-2", "slot": "A1"})).await;
    assert_eq!(status, 200, "{o}");
    assert_eq!(
        (&o["state"], &o["price"]),
        (&json!("awaiting_payment"), &cny(350)),
        "{o}"
    );
    let order_session = o["session_id"].as_str().expect("session id").to_owned();
    assert_eq!(
        stock(&h.inventory(id).await, "A1"),
        (4, 1),
        "the order reserves one"
    );
    h.pay(&m, 350).await;
    wait_for("the order to be paid", SOON, async || {
        (h.session(&m).await["state"] == "paid").then_some(())
    })
    .await;
    let (status, _) = device_post(h, &m, "purchases/o-2/result", json!({"delivered": true})).await;
    assert_eq!(status, 200);
    let closed = wait_session(h, &order_session, "closed", SOON, |s| {
        s["phase"] == "closed"
    })
    .await;
    assert_eq!(minor(&closed["spent"]), 350, "{closed}");
    check_invariant(&closed);
    assert_eq!(stock(&h.inventory(id).await, "A1"), (3, 0));

    // The restocking round: at a quarter of capacity nothing is low (A1 3 of 4, A2 9 of 10); a
    // recount of A2 to 2 makes it low; at 0.8 A1 (3 of 4 = 0.75) is low too.
    assert_eq!(round_slots(&h.restocking_round(None).await), []);
    let inv = h.restock(id, &[("A2", 2)]).await;
    assert_eq!(stock(&inv, "A2"), (2, 0), "{inv}");
    let round = h.restocking_round(None).await;
    assert_eq!(
        round_slots(&round),
        [("Test".to_owned(), id.to_owned(), "A2".to_owned())],
        "{round}"
    );
    assert_eq!(
        round["districts"][0]["machines"][0]["name"], "E2E",
        "{round}"
    );
    let round = h.restocking_round(Some(0.8)).await;
    let slots: Vec<String> = round_slots(&round).into_iter().map(|(_, _, s)| s).collect();
    assert_eq!(slots, ["A1", "A2"], "{round}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catalogue_and_inventory_on_the_embedded_store() {
    let h = start(false, &[]).await;
    catalogue_to_restocking_round(&h, "vm-inv-sqlite").await;
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catalogue_and_inventory_on_aws() {
    let h = start(true, &[]).await;
    catalogue_to_restocking_round(&h, "vm-inv-aws").await;
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pay_first_on_the_embedded_store() {
    let h = start(false, &[]).await;
    pay_first(&h, "vm-pf-sqlite").await;
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purchase_first_on_the_embedded_store() {
    let h = start(false, &[]).await;
    purchase_first(&h, "vm-po-sqlite").await;
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pay_first_on_aws() {
    let h = start(true, &[]).await;
    pay_first(&h, "vm-pf-aws").await;
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purchase_first_on_aws() {
    let h = start(true, &[]).await;
    purchase_first(&h, "vm-po-aws").await;
    h.stop().await;
}

/// On AWS the pay-first window's deadline is a delayed SQS message, long-polled and handed to the
/// deadline handler, whose refund goes through the refund queue to the refund executor.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_deadline_refunds_on_aws() {
    let h = start(true, &[("PAY_FIRST_WINDOW_SECS", "2")]).await;
    let m = h.register("vm-deadline-aws", "pay_first").await;
    let receipt = h.pay(&m, 880).await;
    let sid = format!("s:{}", receipt["trade_no"].as_str().expect("trade"));
    let closed = wait_session(&h, &sid, "settled by its deadline", SOON, |s| {
        s["phase"] == "closed" && all_succeeded(s)
    })
    .await;
    let r = refunds(&closed);
    assert_eq!(r.len(), 1, "{closed}");
    assert_eq!(minor(&r[0]["amount"]), 880, "{closed}");
    assert_eq!(r[0]["reason"], "settlement", "{closed}");
    check_invariant(&closed);
    h.stop().await;
}

/// A payment after the order expired matches nothing: it is refunded in full at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_payment_is_refunded_in_full() {
    let h = start(false, &[("ORDER_PAYMENT_WINDOW_SECS", "1")]).await;
    let m = h.register("vm-late", "purchase_first").await;
    let o = h
        .device(
            &m,
            "POST",
            "/devices/vm-late/orders",
            Some(json!({"order_id": "o-late", "slot": "E1", "price": cny(200)})),
        )
        .await;
    assert!(o.status == 200 || o.status == 201, "{:?}", o.body);
    let order_session = o.body["session_id"]
        .as_str()
        .expect("session id")
        .to_owned();
    wait_for("the order to expire", SOON, async || {
        (h.session(&m).await["state"] == "idle").then_some(())
    })
    .await;
    let expired = h.admin_session(&order_session).await;
    assert_eq!(expired["order_status"], "expired", "{expired}");
    assert!(refunds(&expired).is_empty(), "nothing was paid: {expired}");

    let receipt = h.pay(&m, 200).await;
    let refused = format!("r:{}", receipt["trade_no"].as_str().expect("trade"));
    let s = wait_session(&h, &refused, "refunded in full", SOON, |s| {
        s["phase"] == "closed" && all_succeeded(s)
    })
    .await;
    let r = refunds(&s);
    assert_eq!(r.len(), 1, "{s}");
    assert_eq!(minor(&r[0]["amount"]), 200, "{s}");
    assert!(
        r[0]["reason"]
            .as_str()
            .is_some_and(|x| x.starts_with("refused")),
        "{s}"
    );
    check_invariant(&s);
    let status = h.session(&m).await;
    assert_eq!(status["state"], "idle", "the machine stays idle: {status}");
    // The sandbox saw exactly one refund of that trade, for all of it.
    let log: Vec<Value> = h
        .sandbox_list("refunds")
        .await
        .into_iter()
        .filter(|x| x["trade_no"] == receipt["trade_no"])
        .collect();
    assert_eq!(log.len(), 1, "{log:?}");
    assert_eq!(log[0]["amount"], cny(200), "{log:?}");
    h.stop().await;
}
