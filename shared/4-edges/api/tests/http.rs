//! Black-box tests of the HTTP contract (see `docs/contract.md`) through `Api::handle`, on the
//! embedded SQLite store.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code asserts by panicking

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use http::Request;
use serde_json::{json, Value};

#[tokio::test]
async fn pay_first_over_http() {
    let h = harness().await;
    let secret = h.register("vm-1", "pay_first").await;
    let (s, b) = h
        .call("GET", "/devices/vm-1/session", "vm-1", &secret, "")
        .await;
    assert_eq!((s, b), (200, json!({"state": "idle"})));

    let buy = |rid: &str| json!({"request_id": rid, "slot": "A1", "price": cny(350)}).to_string();
    let (s, b) = h
        .call(
            "POST",
            "/devices/vm-1/purchases",
            "vm-1",
            &secret,
            &buy("r0"),
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(
        (b["decision"].as_str(), b["reason"].as_str()),
        (Some("declined"), Some("no_session"))
    );

    h.pay("vm-1", "T1", 1000).await;
    let (s, b) = h
        .call("GET", "/devices/vm-1/session", "vm-1", &secret, "")
        .await;
    assert_eq!(s, 200);
    assert_eq!(b["state"], "open");
    assert_eq!(b["mode"], "pay_first");
    assert_eq!(b["balance"], cny(1000));
    assert_eq!(b["held"], cny(0));
    assert_eq!(b["deadline_at"], "2023-11-14T22:18:20.000Z");

    let (s, b) = h
        .call(
            "POST",
            "/devices/vm-1/purchases",
            "vm-1",
            &secret,
            &buy("r1"),
        )
        .await;
    assert_eq!(
        (s, b["decision"].as_str(), &b["balance"]),
        (200, Some("approved"), &cny(650))
    );
    // A retry of the same request answers the same and holds nothing more.
    let (_, again) = h
        .call(
            "POST",
            "/devices/vm-1/purchases",
            "vm-1",
            &secret,
            &buy("r1"),
        )
        .await;
    assert_eq!(again, b);
    let (s, b) = h
        .call(
            "POST",
            "/devices/vm-1/purchases/r1/result",
            "vm-1",
            &secret,
            r#"{"delivered": true}"#,
        )
        .await;
    assert_eq!((s, &b["balance"], &b["held"]), (200, &cny(650), &cny(0)));

    let (s, b) = h
        .call("POST", "/devices/vm-1/session/end", "vm-1", &secret, "")
        .await;
    assert_eq!((s, b["state"].as_str()), (200, Some("settling")));
    let refunds = h.refunds.refunds.lock().map(|r| r.len()).unwrap_or(0);
    assert_eq!(refunds, 1, "the free balance is refunded at once");

    let sid = b["session_id"].as_str().expect("session id").to_owned();
    let (s, detail) = send(
        &h.api,
        admin("GET", &format!("/admin/sessions/{sid}"), Value::Null),
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(detail["payments"][0]["amount"], cny(1000));
    assert_eq!(detail["purchases"][0]["status"], "delivered");
    assert_eq!(detail["refunds"][0]["amount"], cny(650));
    assert_eq!(detail["refunds"][0]["status"], "pending");
}

#[tokio::test]
async fn purchase_first_over_http() {
    let h = harness().await;
    let secret = h.register("vm-2", "purchase_first").await;
    let body = json!({"order_id": "o1", "slot": "B2", "price": cny(400)}).to_string();
    let (s, b) = h
        .call("POST", "/devices/vm-2/orders", "vm-2", &secret, &body)
        .await;
    assert_eq!(
        (s, b["state"].as_str(), b["mode"].as_str()),
        (200, Some("awaiting_payment"), Some("purchase_first"))
    );
    assert_eq!(b["expires_at"], "2023-11-14T22:15:20.000Z");
    let (_, again) = h
        .call("POST", "/devices/vm-2/orders", "vm-2", &secret, &body)
        .await;
    assert_eq!(again, b, "an order is idempotent on its id");

    h.clock.advance(Duration::from_secs(5));
    h.pay("vm-2", "T9", 500).await;
    let (s, b) = h
        .call("GET", "/devices/vm-2/session", "vm-2", &secret, "")
        .await;
    assert_eq!((s, b["state"].as_str()), (200, Some("paid")));
    assert_eq!((&b["price"], &b["paid"]), (&cny(400), &cny(500)));
    assert_eq!(b["deadline_at"], "2023-11-14T22:13:50.000Z");
    let (s, b) = h
        .call(
            "POST",
            "/devices/vm-2/purchases/o1/result",
            "vm-2",
            &secret,
            r#"{"delivered": true}"#,
        )
        .await;
    assert_eq!((s, b["state"].as_str()), (200, Some("settling")), "{b}");
}

#[tokio::test]
async fn machines_are_authenticated() {
    let h = harness().await;
    let secret = h.register("vm-1", "mixed").await;
    let now = h.now_secs();
    let path = "/devices/vm-1/session";
    let cases: Vec<(&str, Request<Bytes>, u16, &str)> = vec![
        (
            "header names another device",
            signed("GET", path, "vm-2", &secret, now, ""),
            403,
            "device_mismatch",
        ),
        (
            "wrong secret",
            signed("GET", path, "vm-1", "not-the-secret", now, ""),
            401,
            "bad_signature",
        ),
        (
            "stale timestamp",
            signed("GET", path, "vm-1", &secret, now - 301, ""),
            401,
            "stale_timestamp",
        ),
        (
            "future timestamp",
            signed("GET", path, "vm-1", &secret, now + 301, ""),
            401,
            "stale_timestamp",
        ),
        (
            "unknown device",
            signed("GET", "/devices/vm-9/session", "vm-9", &secret, now, ""),
            401,
            "unknown_device",
        ),
        (
            "invalid device id",
            signed("GET", "/devices/vm%20x/session", "vm%20x", &secret, now, ""),
            401,
            "unknown_device",
        ),
        (
            "no headers",
            Request::builder()
                .uri(path)
                .body(Bytes::new())
                .expect("request"),
            401,
            "missing_auth_header",
        ),
        (
            "signature over another body",
            {
                let mut r = signed(
                    "POST",
                    "/devices/vm-1/session/end",
                    "vm-1",
                    &secret,
                    now,
                    "",
                );
                *r.body_mut() = Bytes::from_static(b"{}");
                r
            },
            401,
            "bad_signature",
        ),
        (
            "signature over another path",
            {
                let mut r = signed("GET", path, "vm-1", &secret, now, "");
                *r.uri_mut() = "/devices/vm-1/session?x=1".parse().expect("uri");
                r
            },
            401,
            "bad_signature",
        ),
    ];
    for (what, req, status, code) in cases {
        let (s, b) = send(&h.api, req).await;
        assert_eq!(
            (s, b["error"]["code"].as_str()),
            (status, Some(code)),
            "{what}: {b}"
        );
    }
    // The query string is part of what is signed.
    let (s, _) = h
        .call(
            "GET",
            "/devices/vm-1/session?verbose=1",
            "vm-1",
            &secret,
            "",
        )
        .await;
    assert_eq!(s, 200);
}

#[tokio::test]
async fn bad_machine_input_is_refused_precisely() {
    let h = harness().await;
    let secret = h.register("vm-1", "mixed").await;
    h.pay("vm-1", "T1", 1000).await;
    let p = "/devices/vm-1/purchases";
    let cases = [
        ("not json", "{", 400, "invalid_json"),
        ("not an object", "[1]", 400, "invalid_json"),
        (
            "no request_id",
            r#"{"slot":"A","price":{"minor":1,"currency":"CNY"}}"#,
            400,
            "missing_field",
        ),
        (
            "no slot",
            r#"{"request_id":"r","price":{"minor":1,"currency":"CNY"}}"#,
            400,
            "missing_field",
        ),
        (
            "no price, for a machine without a slot map",
            r#"{"request_id":"r","slot":"A"}"#,
            400,
            "missing_price",
        ),
        (
            "bad request id",
            r#"{"request_id":"a b","slot":"A","price":{"minor":1,"currency":"CNY"}}"#,
            400,
            "invalid_field",
        ),
        (
            "zero price",
            r#"{"request_id":"r","slot":"A","price":{"minor":0,"currency":"CNY"}}"#,
            400,
            "invalid_price",
        ),
        (
            "negative price",
            r#"{"request_id":"r","slot":"A","price":{"minor":-5,"currency":"CNY"}}"#,
            400,
            "invalid_price",
        ),
        (
            "fractional minor",
            r#"{"request_id":"r","slot":"A","price":{"minor":1.5,"currency":"CNY"}}"#,
            400,
            "invalid_field",
        ),
        (
            "price as string",
            r#"{"request_id":"r","slot":"A","price":"3.50"}"#,
            400,
            "invalid_field",
        ),
        (
            "other currency",
            r#"{"request_id":"r","slot":"A","price":{"minor":100,"currency":"USD"}}"#,
            400,
            "currency_mismatch",
        ),
        (
            "unknown currency",
            r#"{"request_id":"r","slot":"A","price":{"minor":100,"currency":"XXX"}}"#,
            400,
            "invalid_field",
        ),
    ];
    for (what, body, status, code) in cases {
        let (s, b) = h.call("POST", p, "vm-1", &secret, body).await;
        assert_eq!(
            (s, b["error"]["code"].as_str()),
            (status, Some(code)),
            "{what}: {b}"
        );
        assert!(
            b["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{what}"
        );
    }
    let (s, b) = h
        .call(
            "POST",
            "/devices/vm-1/purchases/nope/result",
            "vm-1",
            &secret,
            r#"{"delivered":true}"#,
        )
        .await;
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (404, Some("unknown_purchase"))
    );
    let (s, b) = h
        .call(
            "POST",
            "/devices/vm-1/purchases/nope/result",
            "vm-1",
            &secret,
            r#"{"delivered":"yes"}"#,
        )
        .await;
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (400, Some("invalid_field"))
    );
    let (s, b) = h
        .call("DELETE", "/devices/vm-1/session", "vm-1", &secret, "")
        .await;
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (405, Some("method_not_allowed"))
    );
    let (s, b) = h
        .call("GET", "/devices/vm-1/nothing", "vm-1", &secret, "")
        .await;
    assert_eq!((s, b["error"]["code"].as_str()), (404, Some("not_found")));
    // A request id reused with another body is a conflict, not a second purchase; the same body
    // still gets the stored answer.
    let ok = r#"{"request_id":"r1","slot":"A","price":{"minor":100,"currency":"CNY"}}"#;
    let other = r#"{"request_id":"r1","slot":"A","price":{"minor":200,"currency":"CNY"}}"#;
    let (s, first) = h.call("POST", p, "vm-1", &secret, ok).await;
    assert_eq!(s, 200);
    let (s, b) = h.call("POST", p, "vm-1", &secret, other).await;
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (409, Some("idempotency_conflict")),
        "{b}"
    );
    assert_eq!(h.call("POST", p, "vm-1", &secret, ok).await, (200, first));
}

#[tokio::test]
async fn operators_register_provision_and_print() {
    let h = harness().await;
    let (s, b) = send(
        &h.api,
        Request::builder()
            .method("POST")
            .uri("/admin/devices")
            .body(Bytes::new())
            .expect("req"),
    )
    .await;
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (401, Some("unauthorized"))
    );
    let mut wrong = admin("GET", "/admin/devices/vm-1", Value::Null);
    wrong
        .headers_mut()
        .insert("authorization", "Bearer nope".parse().expect("header"));
    assert_eq!(send(&h.api, wrong).await.0, 401);

    let bad = [
        (
            json!({"name": "n", "district": "d", "currency": "CNY"}),
            "missing_field",
        ),
        (
            json!({"device_id": "vm 1", "name": "n", "district": "d", "currency": "CNY"}),
            "invalid_field",
        ),
        (
            json!({"device_id": "x".repeat(33), "name": "n", "district": "d", "currency": "CNY"}),
            "invalid_field",
        ),
        (
            json!({"device_id": "vm-1", "name": "", "district": "d", "currency": "CNY"}),
            "invalid_field",
        ),
        (
            json!({"device_id": "vm-1", "name": "n", "district": "d", "currency": "ABC"}),
            "invalid_field",
        ),
        (
            json!({"device_id": "vm-1", "name": "n", "district": "d", "currency": "CNY", "mode": "both"}),
            "invalid_field",
        ),
    ];
    for (body, code) in bad {
        let (s, b) = send(&h.api, admin("POST", "/admin/devices", body.clone())).await;
        assert_eq!(
            (s, b["error"]["code"].as_str()),
            (400, Some(code)),
            "{body}: {b}"
        );
    }
    let secret = h.register("vm-1", "mixed").await;
    assert_eq!(secret.len(), 64);
    let (s, b) = send(
        &h.api,
        admin(
            "POST",
            "/admin/devices",
            json!({"device_id": "vm-1", "name": "n", "district": "d", "currency": "CNY"}),
        ),
    )
    .await;
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (409, Some("device_exists"))
    );

    let (s, b) = send(
        &h.api,
        admin("GET", "/admin/devices/vm-1/label.svg", Value::Null),
    )
    .await;
    assert_eq!((s, b["error"]["code"].as_str()), (409, Some("no_qrcode")));
    let (s, qr) = send(
        &h.api,
        admin("POST", "/admin/devices/vm-1/qrcode", Value::Null),
    )
    .await;
    assert_eq!(
        (s, qr["qrcode"].as_str()),
        (200, Some("https://qr.alipay.com/test-vm-1"))
    );
    let (_, again) = send(
        &h.api,
        admin("POST", "/admin/devices/vm-1/qrcode", Value::Null),
    )
    .await;
    assert_eq!(again, qr);
    let res = h
        .api
        .handle(admin("GET", "/admin/devices/vm-1/label.svg", Value::Null))
        .await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "image/svg+xml");
    let svg = String::from_utf8(res.body().to_vec()).expect("utf-8");
    assert!(svg.contains("vm-1") && svg.contains("Lobby"));
    let (s, b) = send(&h.api, admin("GET", "/admin/sessions/nope", Value::Null)).await;
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (404, Some("unknown_session"))
    );
}

#[tokio::test]
async fn a_replayed_end_or_purchase_never_touches_the_next_customers_session() {
    let h = harness().await;
    let secret = h.register("vm-1", "pay_first").await;
    h.pay("vm-1", "T1", 1000).await;
    let (_, b) = h
        .call("GET", "/devices/vm-1/session", "vm-1", &secret, "")
        .await;
    let first = b["session_id"].as_str().unwrap_or_default().to_owned();
    assert!(!first.is_empty(), "{b}");
    let end = json!({ "session_id": first }).to_string();
    let (s, b) = h
        .call("POST", "/devices/vm-1/session/end", "vm-1", &secret, &end)
        .await;
    assert_eq!((s, b["state"].as_str()), (200, Some("settling")), "{b}");

    // The next customer pays; then the first customer's end arrives again (a retry after a lost
    // answer, a queue redelivery, a replay inside the signature window) and a late purchase for it.
    h.pay("vm-1", "T2", 700).await;
    let (s, b) = h
        .call("POST", "/devices/vm-1/session/end", "vm-1", &secret, &end)
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["session_id"].as_str(), Some(first.as_str()), "{b}");
    let late =
        json!({"request_id": "late-1", "slot": "A1", "price": cny(100), "session_id": first})
            .to_string();
    let (s, b) = h
        .call("POST", "/devices/vm-1/purchases", "vm-1", &secret, &late)
        .await;
    assert_eq!(
        (s, b["decision"].as_str(), b["reason"].as_str()),
        (200, Some("declined"), Some("session_closed")),
        "{b}"
    );
    let (_, b) = h
        .call("GET", "/devices/vm-1/session", "vm-1", &secret, "")
        .await;
    assert_eq!(
        b["state"], "open",
        "the second customer's session is untouched: {b}"
    );
    assert_ne!(b["session_id"].as_str(), Some(first.as_str()));
    assert_eq!(b["balance"], cny(700));
    assert_eq!(b["held"], cny(0));

    // An end naming a session this machine never had is a precise 404.
    let (s, b) = h
        .call(
            "POST",
            "/devices/vm-1/session/end",
            "vm-1",
            &secret,
            &json!({"session_id": "s:NOPE"}).to_string(),
        )
        .await;
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (404, Some("unknown_session")),
        "{b}"
    );
}
