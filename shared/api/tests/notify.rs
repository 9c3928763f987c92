//! `POST /alipay/notify/{device_id}`: what is acknowledged, what is refused, and that money moves once.

mod common;

use bytes::Bytes;
use common::*;
use http::Request;
use serde_json::json;

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
