//! The two flows (see `docs/contract.md`, “Money rules”) end to end over HTTP, on the embedded
//! store and on `--store aws` against moto (DynamoDB + SQS, the deadline and refund queues
//! long-polled into the Lambda handlers), and a late payment on the embedded store.
//!
//! The AWS tests need moto's server: run them through `scripts/with-moto`, which exports
//! `VENDPAY_MOTO_ENDPOINT` and `AWS_ENDPOINT_URL`. Without it they fail, never pass silently. Each test
//! gets its own table (and so its own two queues, `<table>-deadlines` and `<table>-refunds`), created by
//! the server itself (`VENDPAY_AWS_CREATE=true`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code asserts by panicking

use std::time::Duration;

use serde_json::{json, Value};
use vendpay_e2e::{cny, minor, wait_for, Harness, MachineKeys};

/// How long a refund or a notification may take: SQS long polls answer within a second of a message
/// arriving, so this is slack for a busy 2-core machine.
const SOON: Duration = Duration::from_secs(20);

fn moto_settings() -> Vec<(&'static str, String)> {
    let endpoint = match std::env::var("VENDPAY_MOTO_ENDPOINT") {
        Ok(v) if !v.trim().is_empty() => v,
        _ => panic!(
            "VENDPAY_MOTO_ENDPOINT is not set: the --store aws tests need moto's server. Run them through \
             the launcher, which installs moto on first use and stops it afterwards:\n\n    \
             scripts/with-moto cargo test -p vendpay-e2e --test e2e_flows\n"
        ),
    };
    // The server's SDK reads AWS_ENDPOINT_URL: it must be moto, never a real account.
    assert_eq!(
        std::env::var("AWS_ENDPOINT_URL").ok().as_deref(),
        Some(endpoint.as_str()),
        "AWS_ENDPOINT_URL must point at moto (scripts/with-moto sets both)"
    );
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let table = format!("vp-e2e-{:x}-{n}", t ^ (u64::from(std::process::id()) << 40));
    vec![
        ("VENDPAY_STORE", "aws".to_owned()),
        ("VENDPAY_SANDBOX", "true".to_owned()),
        ("VENDPAY_AWS_CREATE", "true".to_owned()),
        ("TABLE_NAME", table),
    ]
}

async fn start(aws: bool, extra: &[(&str, &str)]) -> Harness {
    let mut env: Vec<(&str, String)> = if aws { moto_settings() } else { Vec::new() };
    env.extend(extra.iter().map(|(k, v)| (*k, (*v).to_owned())));
    let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    Harness::start(&pairs).await
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
