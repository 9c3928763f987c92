//! `POST /alipay/notify/{device_id}`: what is acknowledged, what is refused, and that money moves once.
//!
//! Around 600 lines: the notification route is the money's front door, and every refusal and every
//! duplicate-delivery order is a test here.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code asserts by panicking

mod common;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::fake_alipay::{encode, FakeAlipay, FakeTrade, NOTIFY_ID_TTL};
use common::*;
use http::Request;
use serde_json::json;
use vendpay_api::alipay::NotifyCheck;
use vendpay_domain::TradeNo;

fn notify(device: &str, body: String) -> Request<Bytes> {
    Request::builder()
        .method("POST")
        .uri(format!("/alipay/notify/{device}"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Bytes::from(body))
        .expect("request")
}

async fn answer(h: &Harness, req: Request<Bytes>) -> (u16, String) {
    let res = h.api.handle(req).await;
    (
        res.status().as_u16(),
        String::from_utf8_lossy(res.body()).into_owned(),
    )
}

fn payment_fields<'a>(trade: &'a str, fee: &'a str, passback: &'a str) -> Vec<(&'a str, &'a str)> {
    let mut f = vec![
        ("notify_id", "nid-1"),
        ("notify_time", "2023-11-15 06:13:20"),
        ("notify_type", "trade_status_sync"),
        ("notify_action_type", "payByAccountAction"),
        ("out_trade_no", "M20231115001"),
        ("trade_no", trade),
        ("trade_status", "TRADE_SUCCESS"),
        ("total_fee", fee),
        ("trans_currency", "CNY"),
        ("currency", "USD"),
        ("gmt_payment", "2023-11-15 06:13:19"),
        ("buyer_id", "2088000000000001"),
        ("some_new_field", "kept and signed"),
    ];
    if !passback.is_empty() {
        f.push(("passback_parameters", passback));
    }
    f
}

#[tokio::test]
async fn a_signed_payment_is_credited_once_and_acknowledged_every_time() {
    let h = harness().await;
    let secret = h.register("vm-1", "pay_first").await;
    let body = alipay_form(&payment_fields(
        "2023111522001",
        "10.50",
        r#"{"device_id":"vm-1"}"#,
    ));
    assert_eq!(
        answer(&h, notify("vm-1", body.clone())).await,
        (200, "success".into())
    );
    assert_eq!(
        answer(&h, notify("vm-1", body)).await,
        (200, "success".into())
    );
    let (s, b) = h
        .call("GET", "/devices/vm-1/session", "vm-1", &secret, "")
        .await;
    assert_eq!(s, 200);
    assert_eq!(
        b["balance"],
        json!({"minor": 1050, "currency": "CNY"}),
        "credited once: {b}"
    );
}

#[tokio::test]
async fn notifications_that_cannot_be_trusted_are_refused() {
    let h = harness().await;
    let secret = h.register("vm-1", "pay_first").await;
    h.register("vm-2", "pay_first").await;
    let good = alipay_form(&payment_fields("2023111522001", "10.50", ""));
    let tampered = good.replace("total_fee=10.50", "total_fee=99.50");
    assert_ne!(tampered, good);
    let unsigned: String = good
        .split('&')
        .filter(|kv| !kv.starts_with("sign="))
        .collect::<Vec<_>>()
        .join("&");
    let mut wrong_partner = payment_fields("2023111522002", "1.00", "");
    wrong_partner.push(("partner", "2088999999999999"));
    let mut duplicated_key = good.clone();
    duplicated_key.push_str("&total_fee=0.01");
    let injected = alipay_form(&[
        ("trade_no", "2023111522003"),
        ("out_trade_no", "M3"),
        ("trade_status", "TRADE_SUCCESS"),
        ("total_fee", "1.00"),
        ("subject", "x&total_fee=900.00"),
        ("currency", "CNY"),
    ]);
    let cases = [
        (
            "tampered amount",
            "vm-1",
            tampered,
            400,
            "fail: bad_signature",
        ),
        ("no signature", "vm-1", unsigned, 400, "fail: bad_signature"),
        (
            "another partner",
            "vm-1",
            alipay_form(&wrong_partner),
            400,
            "fail: wrong_partner",
        ),
        (
            "duplicated key",
            "vm-1",
            duplicated_key,
            400,
            "fail: malformed",
        ),
        ("injected field", "vm-1", injected, 400, "fail: malformed"),
        (
            "not a form",
            "vm-1",
            "%%%".to_owned(),
            400,
            "fail: malformed",
        ),
        (
            "unknown device",
            "vm-9",
            good.clone(),
            404,
            "fail: unknown_device",
        ),
        (
            "invalid device id",
            "vm%201",
            good.clone(),
            404,
            "fail: unknown_device",
        ),
        (
            "passback names another machine",
            "vm-1",
            alipay_form(&payment_fields(
                "2023111522004",
                "1.00",
                r#"{"device_id":"vm-2"}"#,
            )),
            400,
            "fail: device_mismatch",
        ),
        (
            "amount with too many decimals",
            "vm-1",
            alipay_form(&payment_fields("2023111522005", "1.005", "")),
            400,
            "fail: malformed",
        ),
    ];
    for (what, device, body, status, text) in cases {
        assert_eq!(
            answer(&h, notify(device, body)).await,
            (status, text.to_owned()),
            "{what}"
        );
    }
    let get = Request::builder()
        .uri("/alipay/notify/vm-1")
        .body(Bytes::new())
        .expect("request");
    assert_eq!(answer(&h, get).await.0, 405);
    // Nothing above moved money.
    let (_, b) = h
        .call("GET", "/devices/vm-1/session", "vm-1", &secret, "")
        .await;
    assert_eq!(b, json!({"state": "idle"}));
}

#[tokio::test]
async fn refund_echoes_and_closed_trades_are_acknowledged_without_moving_money() {
    let h = harness().await;
    let secret = h.register("vm-1", "pay_first").await;
    let echo = alipay_form(&[
        ("notify_action_type", "refundFPAction"),
        ("trade_no", "2023111522001"),
        ("out_trade_no", "M1"),
        ("trade_status", "TRADE_SUCCESS"),
        ("total_fee", "10.50"),
        ("currency", "CNY"),
    ]);
    let closed = alipay_form(&[
        ("trade_no", "2023111522009"),
        ("trade_status", "TRADE_CLOSED"),
    ]);
    for body in [echo, closed] {
        assert_eq!(
            answer(&h, notify("vm-1", body)).await,
            (200, "success".into())
        );
    }
    let (_, b) = h
        .call("GET", "/devices/vm-1/session", "vm-1", &secret, "")
        .await;
    assert_eq!(b, json!({"state": "idle"}));
}

#[tokio::test]
async fn a_payment_in_another_currency_is_acknowledged_and_refunded_in_full() {
    let h = harness().await;
    let secret = h.register("vm-1", "pay_first").await;
    let body = alipay_form(&[
        ("notify_id", "nid-11"),
        ("trade_no", "2023111522011"),
        ("out_trade_no", "M11"),
        ("trade_status", "TRADE_SUCCESS"),
        ("total_fee", "3.00"),
        ("trans_currency", "USD"),
    ]);
    assert_eq!(
        answer(&h, notify("vm-1", body)).await,
        (200, "success".into())
    );
    let refunds = h
        .refunds
        .refunds
        .lock()
        .map(|r| r.clone())
        .unwrap_or_default();
    assert_eq!(refunds.len(), 1, "refunded at once");
    let (_, b) = h
        .call("GET", "/devices/vm-1/session", "vm-1", &secret, "")
        .await;
    assert_eq!(b, json!({"state": "idle"}), "nothing was opened");
}

/// A harness whose notification route checks first-seen trades with a fake Alipay on the harness clock.
async fn with_alipay() -> (Harness, Arc<FakeAlipay>) {
    let mut fake = None;
    let h = harness_with(|clock| {
        let f = FakeAlipay::new(clock);
        fake = Some(f.clone());
        Some(f as Arc<dyn NotifyCheck>)
    })
    .await;
    (h, fake.expect("the harness built the fake"))
}

async fn balance(h: &Harness, secret: &str) -> serde_json::Value {
    let (s, b) = h
        .call("GET", "/devices/vm-1/session", "vm-1", secret, "")
        .await;
    assert_eq!(s, 200, "{b}");
    b
}

const VM1: &str = r#"{"device_id":"vm-1"}"#;

#[tokio::test]
async fn a_payment_notification_without_notify_id_is_refused() {
    let (h, _alipay) = with_alipay().await;
    let secret = h.register("vm-1", "pay_first").await;
    let mut fields = payment_fields("2023111522021", "10.50", VM1);
    fields.retain(|(k, _)| *k != "notify_id");
    let (status, text) = answer(&h, notify("vm-1", alipay_form(&fields))).await;
    assert_eq!((status, text.as_str()), (400, "fail: malformed"));
    assert_eq!(balance(&h, &secret).await, json!({"state": "idle"}));
}

#[tokio::test]
async fn a_foreign_merchants_notification_with_a_folded_notify_id_is_not_credited() {
    let (h, alipay) = with_alipay().await;
    let secret = h.register("vm-1", "pay_first").await;
    // Alipay signs every merchant's notifications with the same key: this one is genuine, but for a
    // trade paid to another merchant account.
    let foreign = alipay.pay_elsewhere(88_800);
    let folded = foreign.folded_notification();
    assert!(
        !folded.contains("&notify_id="),
        "notify_id is no field of its own"
    );
    let got = answer(&h, notify("vm-1", folded)).await;
    assert_eq!(
        got,
        (400, "fail: malformed".to_owned()),
        "a foreign trade was acknowledged"
    );
    // As sent by Alipay, notify_verify under our partner id does not vouch for it.
    assert_eq!(
        answer(&h, notify("vm-1", foreign.notification(None))).await,
        (400, "fail: not_genuine".to_owned())
    );
    assert_eq!(balance(&h, &secret).await, json!({"state": "idle"}));
    let seen = h
        .ledger
        .store()
        .trade(&TradeNo::parse(foreign.trade_no.clone()).expect("trade"))
        .await
        .expect("store");
    assert_eq!(seen, None, "the foreign trade was recorded");
}

#[tokio::test]
async fn a_resend_after_a_failed_commit_is_confirmed_by_query_and_credited_once() {
    let (h, alipay) = with_alipay().await;
    let secret = h.register("vm-1", "pay_first").await;
    let trade = alipay.pay(1050);
    let body = trade.notification(Some(VM1));

    // First delivery: notify_verify vouches for it, then the write fails.
    h.fail_commits.store(1, Ordering::SeqCst);
    assert_eq!(
        answer(&h, notify("vm-1", body.clone())).await,
        (503, "fail: unavailable".to_owned())
    );
    assert_eq!(balance(&h, &secret).await, json!({"state": "idle"}));

    // Alipay's first resend comes 2 minutes later; the notification id has expired by then.
    h.clock.advance(Duration::from_secs(120));
    assert!(!alipay.notify_verify(&trade.notify_id).expect("verify"));
    assert_eq!(
        answer(&h, notify("vm-1", body.clone())).await,
        (200, "success".to_owned()),
        "a genuine payment whose notify id expired was refused"
    );
    assert_eq!(alipay.query_calls.load(Ordering::SeqCst), 1);
    assert_eq!(balance(&h, &secret).await["balance"], cny(1050));

    // Later resends are duplicates: acknowledged, not asked about, not credited again.
    h.clock.advance(Duration::from_secs(600));
    assert_eq!(
        answer(&h, notify("vm-1", body)).await,
        (200, "success".to_owned())
    );
    assert_eq!(alipay.query_calls.load(Ordering::SeqCst), 1);
    assert_eq!(balance(&h, &secret).await["balance"], cny(1050));

    // A trade our partner id does not know, its notify id expired: refused, never credited.
    let foreign = alipay.pay_elsewhere(5000);
    h.clock.advance(NOTIFY_ID_TTL + Duration::from_secs(1));
    assert_eq!(
        answer(&h, notify("vm-1", foreign.notification(Some(VM1)))).await,
        (400, "fail: not_genuine".to_owned())
    );
    assert_eq!(balance(&h, &secret).await["balance"], cny(1050));
}

#[tokio::test]
async fn query_unreachable_answers_503_and_a_mismatch_is_refused() {
    let (h, alipay) = with_alipay().await;
    let secret = h.register("vm-1", "pay_first").await;

    // notify_verify unreachable on the first delivery: the query decides, at once.
    let first = alipay.pay(300);
    alipay.verify_down.store(1, Ordering::SeqCst);
    assert_eq!(
        answer(&h, notify("vm-1", first.notification(Some(VM1)))).await,
        (200, "success".to_owned())
    );
    assert_eq!(balance(&h, &secret).await["balance"], cny(300));

    // Expired id and the query unreachable too: nothing is known, so Alipay must come back.
    let second = alipay.pay(200);
    h.clock.advance(Duration::from_secs(120));
    alipay.query_down.store(1, Ordering::SeqCst);
    let body = second.notification(Some(VM1));
    assert_eq!(
        answer(&h, notify("vm-1", body.clone())).await,
        (503, "fail: unavailable".to_owned())
    );
    assert_eq!(balance(&h, &secret).await["balance"], cny(300));
    assert_eq!(
        answer(&h, notify("vm-1", body)).await,
        (200, "success".to_owned())
    );
    assert_eq!(balance(&h, &secret).await["balance"], cny(500));

    // Signed over another amount than Alipay's books hold for that trade: not what was paid.
    let third = alipay.pay(100);
    h.clock.advance(Duration::from_secs(120));
    let mut fields = third.fields(Some(VM1));
    for (k, v) in fields.iter_mut() {
        if *k == "total_fee" {
            *v = "100.00".into();
        }
    }
    let inflated: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
    assert_eq!(
        answer(&h, notify("vm-1", alipay_form(&inflated))).await,
        (400, "fail: not_genuine".to_owned())
    );
    assert_eq!(balance(&h, &secret).await["balance"], cny(500));
}

/// xorshift64*: deterministic, and enough to shuffle deliveries.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// What an attacker (or a confused sender) may POST: bodies that must never credit anything.
fn forgeries(
    alipay: &FakeAlipay,
    rng: &mut Rng,
    ours: &[FakeTrade],
) -> Vec<(String, Option<String>)> {
    let foreign = alipay.pay_elsewhere(100 + rng.below(10_000));
    let mut out = vec![
        // Another merchant's genuine notification, as Alipay sent it.
        (
            foreign.notification(Some(VM1)),
            Some(foreign.trade_no.clone()),
        ),
        // ... with its notify_id folded away.
        (
            foreign.folded_notification(),
            Some(foreign.trade_no.clone()),
        ),
    ];
    if let Some(t) = ours.get(rng.below(ours.len() as u64) as usize) {
        // One of ours, its amount changed after Alipay signed it.
        let body = t.notification(Some(VM1));
        let fee = format!("total_fee={}", t.amount.to_decimal());
        out.push((body.replace(&fee, "total_fee=9999.00"), None));
        // One of ours, signed by someone without Alipay's key.
        let fields: Vec<(String, String)> = t
            .fields(Some(VM1))
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .chain([("sign".to_owned(), "c2lnbmVkIGJ5IG5vYm9keQ==".to_owned())])
            .chain([("sign_type".to_owned(), "RSA2".to_owned())])
            .collect();
        out.push((encode(&fields), None));
    }
    out
}

#[tokio::test]
async fn seeded_delivery_orders_credit_every_genuine_trade_once_and_nothing_foreign() {
    let mut total = Paths::default();
    for seed in 0..200u64 {
        let p = run_seed(seed).await;
        total.unavailable += p.unavailable;
        total.queried += p.queried;
        total.forged += p.forged;
    }
    // The seeds must reach every path, or the test proves less than it says.
    assert!(
        total.unavailable > 0 && total.queried > 0 && total.forged > 0,
        "{total:?}"
    );
}

#[derive(Debug, Default)]
struct Paths {
    /// Genuine deliveries answered 503 (a failed write, Alipay unreachable).
    unavailable: usize,
    /// overseas.query calls (genuine resends after expiry, foreign trades).
    queried: usize,
    /// Forged or foreign bodies refused.
    forged: usize,
}

async fn run_seed(seed: u64) -> Paths {
    let mut paths = Paths::default();
    let mut rng = Rng::new(seed);
    let (h, alipay) = with_alipay().await;
    h.register("vm-1", "pay_first").await;
    let ours: Vec<FakeTrade> = (0..1 + rng.below(5))
        .map(|_| alipay.pay(1 + rng.below(5_000)))
        .collect();
    let bodies: Vec<String> = ours.iter().map(|t| t.notification(Some(VM1))).collect();
    let mut acknowledged = vec![false; ours.len()];
    let mut foreign_trades: Vec<String> = Vec::new();
    for _ in 0..10 + rng.below(30) {
        match rng.below(10) {
            0..=5 => {
                let i = rng.below(ours.len() as u64) as usize;
                let mut faulty = false;
                for (switch, percent) in [
                    (h.fail_commits.as_ref(), 30),
                    (&alipay.verify_down, 15),
                    (&alipay.query_down, 15),
                ] {
                    if rng.chance(percent) {
                        switch.store(1, Ordering::SeqCst);
                        faulty = true;
                    }
                }
                let (status, text) = answer(&h, notify("vm-1", bodies[i].clone())).await;
                assert!(
                    (status, text.as_str()) == (200, "success") || (faulty && status == 503),
                    "seed {seed}: genuine trade {} answered {status} {text}",
                    ours[i].trade_no
                );
                acknowledged[i] |= status == 200;
                paths.unavailable += usize::from(status == 503);
                h.fail_commits.store(0, Ordering::SeqCst);
                alipay.verify_down.store(0, Ordering::SeqCst);
                alipay.query_down.store(0, Ordering::SeqCst);
            }
            6..=7 => {
                for (body, trade) in forgeries(&alipay, &mut rng, &ours) {
                    let (status, text) = answer(&h, notify("vm-1", body)).await;
                    assert_ne!(
                        text, "success",
                        "seed {seed}: a forged or foreign notification was acknowledged ({status})"
                    );
                    foreign_trades.extend(trade);
                    paths.forged += 1;
                }
            }
            _ => h.clock.advance(Duration::from_secs(rng.below(900))),
        }
    }
    // Alipay keeps resending whatever was not acknowledged (25 hours: well past any notify id).
    h.clock.advance(Duration::from_secs(3600));
    for (i, body) in bodies.iter().enumerate() {
        if !acknowledged[i] {
            assert_eq!(
                answer(&h, notify("vm-1", body.clone())).await,
                (200, "success".to_owned()),
                "seed {seed}: trade {} never acknowledged",
                ours[i].trade_no
            );
        }
    }
    let store = h.ledger.store();
    for t in &ours {
        let outcome = store
            .trade(&TradeNo::parse(t.trade_no.clone()).expect("trade"))
            .await
            .expect("store")
            .unwrap_or_else(|| panic!("seed {seed}: trade {} not credited", t.trade_no));
        let session = store
            .session(&outcome.session)
            .await
            .expect("store")
            .unwrap_or_else(|| panic!("seed {seed}: no session {}", outcome.session));
        let credited: Vec<_> = session
            .payments
            .iter()
            .filter(|p| p.trade_no.as_str() == t.trade_no)
            .map(|p| p.amount)
            .collect();
        assert_eq!(
            credited,
            vec![t.amount],
            "seed {seed}: trade {} credited {credited:?}",
            t.trade_no
        );
    }
    for f in &foreign_trades {
        let seen = store
            .trade(&TradeNo::parse(f.clone()).expect("trade"))
            .await
            .expect("store");
        assert_eq!(seen, None, "seed {seed}: foreign trade {f} was credited");
    }
    paths.queried = alipay.query_calls.load(Ordering::SeqCst);
    paths
}

#[tokio::test]
async fn a_hanging_notify_verify_leaves_time_for_the_query() {
    // The function has 28 s; notify_verify gets 5 of them, so the query still decides.
    let (h, alipay) = with_alipay().await;
    let secret = h.register("vm-1", "pay_first").await;
    let trade = alipay.pay(800);
    alipay.verify_hangs.store(1, Ordering::SeqCst);
    let started = std::time::Instant::now();
    let got = answer(&h, notify("vm-1", trade.notification(Some(VM1)))).await;
    assert_eq!(got, (200, "success".to_owned()));
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "answered after {:?}",
        started.elapsed()
    );
    assert_eq!(alipay.query_calls.load(Ordering::SeqCst), 1);
    assert_eq!(balance(&h, &secret).await["balance"], cny(800));
}
