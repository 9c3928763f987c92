//! End-to-end tests of `vendpay serve` over HTTP, each on its own temporary database
//! and ephemeral port, with the in-process Alipay sandbox: racing purchases, duplicated and
//! out-of-order notifications, replayed and badly signed device requests, the sandbox's refund fault
//! switches, and forged notifications.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code asserts by panicking

use std::time::Duration;

use serde_json::{json, Value};
use vendpay_alipay::notify::signed_form;
use vendpay_alipay::{SignType, Signer};
use vendpay_alipay_sandbox::{TEST_ALIPAY_PRIVATE_KEY, TEST_MERCHANT_PRIVATE_KEY};
use vendpay_domain::{Clock, SystemClock};
use vendpay_e2e::{cny, minor, now_secs, plan, stock, wait_for, Harness, MachineKeys};

const SOON: Duration = Duration::from_secs(10);

async fn wait_open(h: &Harness, m: &MachineKeys, balance: u64) -> Value {
    wait_for(&format!("{} open with {balance}", m.id), SOON, async || {
        let s = h.session(m).await;
        (s["state"] == "open" && s["balance"] == cny(balance)).then_some(s)
    })
    .await
}

/// Waits until the session is closed with every refund succeeded; returns the admin view.
async fn wait_closed(h: &Harness, session_id: &str, limit: Duration) -> Value {
    wait_for(
        &format!("{session_id} closed and refunded"),
        limit,
        async || {
            let s = h.admin_session(session_id).await;
            let refunded = s["refunds"]
                .as_array()
                .is_some_and(|r| !r.is_empty() && r.iter().all(|r| r["status"] == "succeeded"));
            (s["phase"] == "closed" && refunded).then_some(s)
        },
    )
    .await
}

fn purchase(request_id: &str, price: u64) -> Value {
    json!({"request_id": request_id, "slot": "A1", "price": cny(price)})
}

/// A notification as the sandbox sends it (see `docs/alipay.md`, “Notifications”), signed with
/// `key` (RSA2).
fn notification(
    key: &str,
    notify_id: &str,
    trade_no: &str,
    out_trade_no: &str,
    total: u64,
) -> String {
    let signer = Signer::from_setting(SignType::Rsa2, "test key", key).expect("signer");
    let time = vendpay_alipay::time::format_gmt8(SystemClock.now());
    let total = format!("{}.{:02}", total / 100, total % 100);
    signed_form(
        [
            ("notify_id", notify_id),
            ("notify_time", time.as_str()),
            ("notify_type", "trade_status_sync"),
            ("notify_action_type", "payByAccountAction"),
            ("out_trade_no", out_trade_no),
            ("trade_no", trade_no),
            ("trade_status", "TRADE_SUCCESS"),
            ("total_fee", total.as_str()),
            ("trans_currency", "CNY"),
            ("currency", "CNY"),
            ("subject", "E2E"),
            ("gmt_payment", time.as_str()),
        ],
        &signer,
    )
    .expect("sign")
}

async fn post_notification(h: &Harness, device: &str, form: String) -> (u16, String) {
    let a = h
        .call(
            "POST",
            &format!("/alipay/notify/{device}"),
            &[(
                "content-type",
                "application/x-www-form-urlencoded; charset=utf-8".to_owned(),
            )],
            form,
        )
        .await;
    let text = match &a.body {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    (a.status, text)
}

// 1. Racing purchases.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_purchases_approve_exactly_what_the_balance_covers() {
    let h = Harness::start(&[]).await;
    let m = h.register("vm-race", "pay_first").await;
    let receipt = h.pay(&m, 1000).await;
    wait_open(&h, &m, 1000).await;

    let path = format!("/devices/{}/purchases", m.id);
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..20 {
        let (h2, m2, path) = (h.http.clone(), m.clone(), path.clone());
        let url = h.url.clone();
        tasks.spawn(async move {
            let body = purchase(&format!("race-{i}"), 300).to_string();
            let headers =
                Harness::signed_headers(&m2, &m2.secret, "POST", &path, now_secs(), &body);
            let mut req = h2.post(format!("{url}{path}")).body(body);
            for (k, v) in headers {
                req = req.header(k, v);
            }
            let res = req.send().await.expect("HTTP");
            let status = res.status().as_u16();
            let v: Value = serde_json::from_slice(&res.bytes().await.expect("body")).expect("json");
            (status, v)
        });
    }
    let mut approved = 0;
    let mut declined = 0;
    while let Some(r) = tasks.join_next().await {
        let (status, v) = r.expect("task");
        assert_eq!(status, 200, "{v}");
        match v["decision"].as_str() {
            Some("approved") => approved += 1,
            Some("declined") => {
                assert_eq!(v["reason"], "insufficient_balance", "{v}");
                declined += 1;
            }
            _ => panic!("unexpected answer {v}"),
        }
    }
    assert_eq!((approved, declined), (3, 17));

    let s = h.session(&m).await;
    assert_eq!(s["balance"], cny(100), "{s}");
    assert_eq!(s["held"], cny(900), "{s}");
    let sid = s["session_id"].as_str().expect("session id").to_owned();
    assert_eq!(sid, format!("s:{}", receipt["trade_no"].as_str().unwrap()));
    let admin = h.admin_session(&sid).await;
    let purchases = admin["purchases"].as_array().expect("purchases");
    let held = purchases.iter().filter(|p| p["status"] == "held").count();
    let declined_rows = purchases
        .iter()
        .filter(|p| p["status"] == "declined")
        .count();
    assert_eq!((held, declined_rows), (3, 17), "{admin}");
    // Σ payments = spent + held + balance + Σ refunds.
    assert_eq!(
        (
            minor(&admin["balance"]),
            minor(&admin["held"]),
            minor(&admin["spent"])
        ),
        (100, 900, 0),
        "{admin}"
    );
    h.stop().await;
}

// 2. Duplicated and out-of-order notifications.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicated_notification_is_credited_once() {
    let h = Harness::start(&[]).await;
    let m = h.register("vm-dup", "pay_first").await;
    h.faults(json!({"notifications": ["duplicate"]})).await;
    let receipt = h.pay(&m, 500).await;
    let trade = receipt["trade_no"].as_str().expect("trade").to_owned();
    let answers = wait_for("both deliveries", SOON, async || {
        let d: Vec<Value> = h
            .sandbox_list("deliveries")
            .await
            .into_iter()
            .filter(|d| d["trade_no"] == trade.as_str() && !d["answer"].is_null())
            .collect();
        (d.len() >= 2).then_some(d)
    })
    .await;
    assert!(
        answers.iter().all(|d| d["answer"] == "success"),
        "{answers:?}"
    );
    let s = wait_open(&h, &m, 500).await;
    let admin = h.admin_session(s["session_id"].as_str().unwrap()).await;
    assert_eq!(
        admin["payments"].as_array().map(Vec::len),
        Some(1),
        "{admin}"
    );

    // The same notification re-POSTed once more (as a late resend would be): still once.
    let form = notification(
        TEST_ALIPAY_PRIVATE_KEY,
        receipt["notify_id"].as_str().unwrap(),
        &trade,
        receipt["out_trade_no"].as_str().unwrap(),
        500,
    );
    let (status, text) = post_notification(&h, &m.id, form).await;
    assert_eq!((status, text.as_str()), (200, "success"));
    let s = h.session(&m).await;
    assert_eq!(s["balance"], cny(500), "{s}");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_order_notifications_credit_each_payment_once() {
    let h = Harness::start(&[]).await;
    let m = h.register("vm-order", "pay_first").await;
    // The first payment's notification is lost; the second arrives first.
    h.faults(json!({"notifications": ["drop"]})).await;
    let first = h.pay(&m, 300).await;
    let second = h.pay(&m, 200).await;
    let s = wait_open(&h, &m, 200).await;
    let sid = s["session_id"].as_str().unwrap().to_owned();

    // The first one arrives late (re-POSTed as Alipay's resend would), then again.
    let form = notification(
        TEST_ALIPAY_PRIVATE_KEY,
        first["notify_id"].as_str().unwrap(),
        first["trade_no"].as_str().unwrap(),
        first["out_trade_no"].as_str().unwrap(),
        300,
    );
    for _ in 0..2 {
        let (status, text) = post_notification(&h, &m.id, form.clone()).await;
        assert_eq!((status, text.as_str()), (200, "success"));
    }
    let s = h.session(&m).await;
    assert_eq!(s["balance"], cny(500), "{s}");
    assert_eq!(s["session_id"], sid.as_str(), "one session: {s}");
    let admin = h.admin_session(&sid).await;
    let payments = admin["payments"].as_array().expect("payments");
    assert_eq!(payments.len(), 2, "{admin}");
    let _ = second;
    h.stop().await;
}

// 3. Replayed and badly signed device requests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_request_gets_the_same_answer_and_bad_signatures_401() {
    let h = Harness::start(&[]).await;
    let m = h.register("vm-replay", "pay_first").await;
    h.pay(&m, 1000).await;
    wait_open(&h, &m, 1000).await;

    let path = format!("/devices/{}/purchases", m.id);
    let body = purchase("r-1", 350).to_string();
    let headers = Harness::signed_headers(&m, &m.secret, "POST", &path, now_secs(), &body);
    let first = h.call("POST", &path, &headers, body.clone()).await;
    let again = h.call("POST", &path, &headers, body.clone()).await;
    assert_eq!(first.status, 200, "{:?}", first.body);
    assert_eq!(first.body["decision"], "approved", "{:?}", first.body);
    assert_eq!(again.status, first.status);
    assert_eq!(again.body["decision"], first.body["decision"]);
    assert_eq!(again.body["balance"], cny(650), "{:?}", again.body);
    let s = h.session(&m).await;
    assert_eq!(
        (s["balance"].clone(), s["held"].clone()),
        (cny(650), cny(350))
    );

    // Badly signed: wrong secret, tampered body, stale timestamp, wrong device id header.
    let cheaper = purchase("r-2", 1).to_string();
    let forged = Harness::signed_headers(&m, "not-the-secret", "POST", &path, now_secs(), &cheaper);
    assert_eq!(
        h.call("POST", &path, &forged, cheaper.clone()).await.status,
        401
    );
    let tampered = purchase("r-1", 1).to_string();
    assert_eq!(h.call("POST", &path, &headers, tampered).await.status, 401);
    let stale = Harness::signed_headers(&m, &m.secret, "POST", &path, now_secs() - 3600, &cheaper);
    assert_eq!(
        h.call("POST", &path, &stale, cheaper.clone()).await.status,
        401
    );
    assert_eq!(
        h.call("POST", &path, &[], cheaper.clone()).await.status,
        401
    );
    let s = h.session(&m).await;
    assert_eq!(
        (s["balance"].clone(), s["held"].clone()),
        (cny(650), cny(350)),
        "{s}"
    );
    h.stop().await;
}

// 4. Sandbox faults on refunds.
async fn refund_with_fault(fault: &str, limit: Duration) {
    let h = Harness::start(&[("PAY_FIRST_WINDOW_SECS", "1")]).await;
    let m = h.register(&format!("vm-{fault}"), "pay_first").await;
    let receipt = h.pay(&m, 777).await;
    let trade = receipt["trade_no"].as_str().unwrap().to_owned();
    let sid = format!("s:{trade}");
    wait_for("the payment", SOON, async || {
        // 404 until the notification has opened the session.
        let a = h
            .admin("GET", &format!("/admin/sessions/{sid}"), None)
            .await;
        (a.status == 200 && a.body["payments"].as_array().map(Vec::len) == Some(1)).then_some(())
    })
    .await;
    // Only now (the notification checked at the gateway) is the next gateway call the refund.
    h.faults(json!({"gateway": [fault]})).await;
    // The 1 s window's deadline settles the session and refunds all of it.
    let closed = wait_closed(&h, &sid, limit).await;
    let refunds = closed["refunds"].as_array().expect("refunds");
    assert_eq!(refunds.len(), 1, "{closed}");
    assert_eq!(minor(&refunds[0]["amount"]), 777, "{closed}");

    let log: Vec<Value> = h
        .sandbox_list("refunds")
        .await
        .into_iter()
        .filter(|r| r["trade_no"] == trade.as_str())
        .collect();
    let succeeded: Vec<&Value> = log.iter().filter(|r| r["verdict"] == "succeeded").collect();
    assert_eq!(succeeded.len(), 1, "{log:?}");
    assert_eq!(succeeded[0]["amount"], cny(777), "{log:?}");
    assert!(
        log.iter().any(|r| r["verdict"] == "retry"),
        "the {fault} fault was hit: {log:?}"
    );
    assert!(log.iter().all(|r| r["verdict"] != "failed"), "{log:?}");
    let refund_ids: std::collections::HashSet<&str> =
        log.iter().filter_map(|r| r["refund_id"].as_str()).collect();
    assert_eq!(
        refund_ids.len(),
        1,
        "one refund, retried under its id: {log:?}"
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refund_answered_unknow_then_succeeds_once() {
    refund_with_fault("unknow", Duration::from_secs(15)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refund_answered_html_then_succeeds_once() {
    refund_with_fault("html", Duration::from_secs(15)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refund_timing_out_then_succeeds_once() {
    // The sandbox holds a `timeout` answer 20 s; the client gives up at 15 s and retries.
    refund_with_fault("timeout", Duration::from_secs(45)).await;
}

/// A refund whose answers cannot be verified (the sandbox still makes the refund, then spoils every
/// answer to it) is never recorded failed: it stays pending, is retried under its one id, and the first
/// verified answer after the fault clears (REPEATED_REFUNDMENT_REQUEST with the amount) settles it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unverifiable_refund_answers_stay_pending_until_a_late_verified_success() {
    let h = Harness::start(&[("PAY_FIRST_WINDOW_SECS", "1")]).await;
    let faults = [
        "bad_signature",
        "unexpected_node",
        "request_timeout",
        "repeated_without_amount",
    ];
    let mut cases = Vec::new();
    for fault in faults {
        let m = h
            .register(&format!("vm-{}", fault.replace('_', "-")), "pay_first")
            .await;
        let receipt = h.pay(&m, 500).await;
        let trade = receipt["trade_no"].as_str().expect("trade_no").to_owned();
        // The session's one refund is `{trade}-r1`; set before the 1 s window ends.
        let refund_id = format!("{trade}-r1");
        h.faults(json!({"refunds": {refund_id.clone(): fault}}))
            .await;
        cases.push((fault, trade, refund_id));
    }
    let log_of = |trade: &str, log: &[Value]| -> Vec<Value> {
        log.iter()
            .filter(|r| r["trade_no"] == trade)
            .cloned()
            .collect()
    };
    for (fault, trade, refund_id) in &cases {
        let sid = format!("s:{trade}");
        // Retried at least twice, never recorded failed, and the session waits for it.
        wait_for(
            &format!("{fault}: retried"),
            Duration::from_secs(20),
            async || {
                let log = log_of(trade, &h.sandbox_list("refunds").await);
                (log.iter().filter(|r| r["verdict"] == "retry").count() >= 2).then_some(())
            },
        )
        .await;
        let log = log_of(trade, &h.sandbox_list("refunds").await);
        assert!(
            log.iter().all(|r| r["verdict"] == "retry"),
            "{fault}: {log:?}"
        );
        assert!(
            log.iter()
                .all(|r| r["refund_id"] == refund_id.as_str() && r["amount"] == cny(500)),
            "{fault}: {log:?}"
        );
        let s = h.admin_session(&sid).await;
        assert_eq!(s["phase"], "settling", "{fault}: {s}");
        assert_eq!(s["refunds"][0]["status"], "pending", "{fault}: {s}");
    }
    // Alipay's answers become readable again: the next retry of each is a verified success.
    let clear: serde_json::Map<String, Value> = cases
        .iter()
        .map(|(_, _, id)| (id.clone(), Value::Null))
        .collect();
    h.faults(json!({ "refunds": clear })).await;
    for (fault, trade, _) in &cases {
        let closed = wait_closed(&h, &format!("s:{trade}"), Duration::from_secs(40)).await;
        assert_eq!(
            closed["refunds"][0]["status"], "succeeded",
            "{fault}: {closed}"
        );
        let log = log_of(trade, &h.sandbox_list("refunds").await);
        assert_eq!(
            log.iter().filter(|r| r["verdict"] == "succeeded").count(),
            1,
            "{fault}: {log:?}"
        );
        assert!(
            log.iter().all(|r| r["verdict"] != "failed"),
            "{fault}: {log:?}"
        );
    }
    h.stop().await;
}

// 5. Forged notifications.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_notifications_are_refused_and_move_no_money() {
    let h = Harness::start(&[]).await;
    let m = h.register("vm-forged", "pay_first").await;
    let cases = [
        // Signed with the merchant's key, not Alipay's.
        notification(TEST_MERCHANT_PRIVATE_KEY, "forged-notify-1", "2026000000000001", "vp-forged-1", 10_000),
        // Signed with Alipay's key, but Alipay never issued this notify_id (notify_verify says no).
        notification(TEST_ALIPAY_PRIVATE_KEY, "forged-notify-2", "2026000000000002", "vp-forged-2", 10_000),
        // A genuine-looking form whose amount was changed after signing.
        notification(TEST_ALIPAY_PRIVATE_KEY, "forged-notify-3", "2026000000000003", "vp-forged-3", 100)
            .replace("total_fee=1.00", "total_fee=100.00"),
        // No signature at all.
        "notify_id=x&trade_no=2026000000000004&out_trade_no=y&trade_status=TRADE_SUCCESS&total_fee=100.00&currency=CNY".to_owned(),
    ];
    for (i, form) in cases.into_iter().enumerate() {
        let (status, text) = post_notification(&h, &m.id, form).await;
        assert_ne!(
            text.trim(),
            "success",
            "case {i} was accepted (status {status})"
        );
    }
    let s = h.session(&m).await;
    assert_eq!(s["state"], "idle", "no money moved: {s}");
    for trade in ["2026000000000001", "2026000000000002", "2026000000000003"] {
        let a = h
            .admin("GET", &format!("/admin/sessions/s:{trade}"), None)
            .await;
        assert_eq!(a.status, 404, "no session for {trade}: {:?}", a.body);
    }
    assert!(h.sandbox_list("refunds").await.is_empty());
    h.stop().await;
}

// 7. Catalogue and inventory (`docs/contract.md`, “Catalogue and inventory”).

/// A signed `POST /devices/{id}/{tail}`: `(status, body)`.
async fn device_post(h: &Harness, m: &MachineKeys, tail: &str, body: Value) -> (u16, Value) {
    let a = h
        .device(m, "POST", &format!("/devices/{}/{tail}", m.id), Some(body))
        .await;
    (a.status, a.body)
}

/// Twelve purchases of a slot with three items race in one session whose balance covers five: exactly
/// three are approved (each reserving its item in the write of its approval), the others are declined
/// `sold_out` and hold no money. Reports then move stock: two delivered, one failed (its item back).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_purchases_of_a_slot_approve_exactly_its_stock() {
    let h = Harness::start(&[]).await;
    h.put_product("cola-330", "Cola 330 ml", 350).await;
    let m = h.register("vm-shelf-race", "pay_first").await;
    h.set_slots(&m.id, &[plan("A1", "cola-330", 10)]).await;
    h.restock(&m.id, &[("A1", 3)]).await;
    h.pay(&m, 2000).await;
    wait_open(&h, &m, 2000).await;

    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..12 {
        let client = h.client.clone();
        let m = m.clone();
        tasks.spawn(async move {
            let body = json!({"request_id": format!("race-{i}"), "slot": "A1"});
            let path = format!("/devices/{}/purchases", m.id);
            client
                .device(&m, "POST", &path, Some(&body))
                .await
                .expect("HTTP")
        });
    }
    let mut approved = Vec::new();
    let mut sold_out = 0;
    while let Some(r) = tasks.join_next().await {
        let a = r.expect("task");
        assert_eq!(a.status, 200, "{:?}", a.body);
        match (a.body["decision"].as_str(), a.body["reason"].as_str()) {
            (Some("approved"), _) => {
                approved.push(a.body["request_id"].as_str().expect("id").to_owned())
            }
            (Some("declined"), Some("sold_out")) => sold_out += 1,
            _ => panic!("unexpected answer {:?}", a.body),
        }
    }
    assert_eq!((approved.len(), sold_out), (3, 9));
    assert_eq!(stock(&h.inventory(&m.id).await, "A1"), (3, 3));
    let s = h.session(&m).await;
    assert_eq!((&s["balance"], &s["held"]), (&cny(950), &cny(1050)), "{s}");

    for (i, request) in approved.iter().enumerate() {
        let delivered = i != 0;
        let tail = format!("purchases/{request}/result");
        let (status, v) = device_post(&h, &m, &tail, json!({ "delivered": delivered })).await;
        assert_eq!(status, 200, "{v}");
    }
    let inv = h.inventory(&m.id).await;
    assert_eq!(
        stock(&inv, "A1"),
        (1, 0),
        "two out, the failed one's item back: {inv}"
    );
    let (_, a) = device_post(
        &h,
        &m,
        "purchases",
        json!({"request_id": "after", "slot": "A1"}),
    )
    .await;
    assert_eq!(a["decision"], "approved", "the released item sells: {a}");
    h.stop().await;
}

/// Every way a promise ends without a vend gives its item back: an order that expires unpaid, and a
/// pay-first purchase never reported, released by the session's deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_orders_and_unconfirmed_purchases_release_their_items() {
    let h = Harness::start(&[
        ("ORDER_PAYMENT_WINDOW_SECS", "1"),
        ("PAY_FIRST_WINDOW_SECS", "2"),
        // A held purchase moves the deadline to its vend confirmation, this long after it.
        ("PURCHASE_FIRST_WINDOW_SECS", "2"),
    ])
    .await;
    h.put_product("cola-330", "Cola 330 ml", 350).await;

    let o = h.register("vm-order-expiry", "purchase_first").await;
    h.set_slots(&o.id, &[plan("A1", "cola-330", 5)]).await;
    h.restock(&o.id, &[("A1", 1)]).await;
    let (status, v) = device_post(&h, &o, "orders", json!({"order_id": "o-1", "slot": "A1"})).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(stock(&h.inventory(&o.id).await, "A1"), (1, 1));
    wait_for("the order to expire", SOON, async || {
        (h.session(&o).await["state"] == "idle").then_some(())
    })
    .await;
    assert_eq!(
        stock(&h.inventory(&o.id).await, "A1"),
        (1, 0),
        "expired: released"
    );
    let (status, v) = device_post(&h, &o, "orders", json!({"order_id": "o-2", "slot": "A1"})).await;
    assert_eq!(status, 200, "the item can be ordered again: {v}");

    let p = h.register("vm-unconfirmed", "pay_first").await;
    h.set_slots(&p.id, &[plan("A1", "cola-330", 5)]).await;
    h.restock(&p.id, &[("A1", 1)]).await;
    let receipt = h.pay(&p, 500).await;
    wait_open(&h, &p, 500).await;
    let (_, a) = device_post(
        &h,
        &p,
        "purchases",
        json!({"request_id": "p-1", "slot": "A1"}),
    )
    .await;
    assert_eq!(a["decision"], "approved", "{a}");
    assert_eq!(stock(&h.inventory(&p.id).await, "A1"), (1, 1));
    // The machine never reports the vend: the deadline refunds everything and releases the item.
    let sid = format!("s:{}", receipt["trade_no"].as_str().expect("trade"));
    let closed = wait_closed(&h, &sid, SOON).await;
    assert_eq!(minor(&closed["spent"]), 0, "{closed}");
    assert_eq!(
        stock(&h.inventory(&p.id).await, "A1"),
        (1, 0),
        "unconfirmed: released"
    );
    h.stop().await;
}

/// A vend reported out of a slot the operator has just counted empty leaves the stock at 0 (never
/// below) and records a `stock_mismatch` anomaly; the sale itself stands.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_from_an_empty_slot_is_flagged_and_stock_stays_at_zero() {
    let h = Harness::start(&[]).await;
    h.put_product("cola-330", "Cola 330 ml", 350).await;
    let m = h.register("vm-miscount", "pay_first").await;
    h.set_slots(&m.id, &[plan("A1", "cola-330", 5)]).await;
    h.restock(&m.id, &[("A1", 1)]).await;
    let receipt = h.pay(&m, 500).await;
    wait_open(&h, &m, 500).await;
    let (_, a) = device_post(
        &h,
        &m,
        "purchases",
        json!({"request_id": "p-1", "slot": "A1"}),
    )
    .await;
    assert_eq!(a["decision"], "approved", "{a}");
    // The operator counts the slot empty while the vend is on its way.
    assert_eq!(stock(&h.restock(&m.id, &[("A1", 0)]).await, "A1"), (0, 1));
    let (status, v) = device_post(&h, &m, "purchases/p-1/result", json!({"delivered": true})).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(stock(&h.inventory(&m.id).await, "A1"), (0, 0));
    let sid = format!("s:{}", receipt["trade_no"].as_str().expect("trade"));
    let s = h.admin_session(&sid).await;
    assert_eq!(minor(&s["spent"]), 350, "the sale stands: {s}");
    let kinds: Vec<&str> = s["anomalies"]
        .as_array()
        .expect("anomalies")
        .iter()
        .filter_map(|a| a["kind"].as_str())
        .collect();
    assert_eq!(kinds, ["stock_mismatch"], "{s}");
    assert_eq!(s["anomalies"][0]["detail"]["slot"], "A1", "{s}");
    h.stop().await;
}
