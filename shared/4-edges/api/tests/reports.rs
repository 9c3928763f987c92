//! `GET /admin/reports/sales` (see `docs/sales.md`) through `Api::handle` on the embedded store: a
//! sale's numbers in JSON, the HTML page, an empty period, and every malformed period refused with a
//! precise 400.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code asserts by panicking

mod common;

use common::*;
use serde_json::{json, Value};

/// T0 (2023-11-14T22:13:20Z) is 2023-11-15 at +08:00.
const DAY: &str = "2023-11-15";

async fn report(h: &Harness, query: &str) -> (u16, Value) {
    send(
        &h.api,
        admin("GET", &format!("/admin/reports/sales?{query}"), Value::Null),
    )
    .await
}

#[tokio::test]
async fn a_sale_shows_in_the_report_with_its_money() {
    let h = harness().await;
    let secret = h.register("vm-1", "pay_first").await;
    h.pay("vm-1", "T1", 1000).await;
    let (s, b) = h
        .call(
            "POST",
            "/devices/vm-1/purchases",
            "vm-1",
            &secret,
            &json!({"request_id": "r1", "slot": "A1", "price": cny(350)}).to_string(),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let (s, b) = h
        .call(
            "POST",
            "/devices/vm-1/purchases/r1/result",
            "vm-1",
            &secret,
            &json!({"delivered": true}).to_string(),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let (s, b) = h
        .call("POST", "/devices/vm-1/session/end", "vm-1", &secret, "{}")
        .await;
    assert_eq!(s, 200, "{b}");

    let (s, b) = report(&h, &format!("from={DAY}&to={DAY}")).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(
        (b["from"].as_str(), b["days"].as_u64()),
        (Some(DAY), Some(1))
    );
    let m = &b["machines"][0];
    assert_eq!(m["device"], "vm-1");
    assert_eq!(m["district"], "Xuhui");
    assert_eq!(m["sales"], 1);
    assert_eq!(m["revenue"], cny(350));
    assert_eq!(m["gross"], cny(1000));
    assert_eq!(m["refunds"], cny(650));
    assert_eq!(m["net"], cny(350));
    assert_eq!(m["average_basket"], cny(350));
    assert_eq!(b["districts"][0]["rank"], 1);
    assert_eq!(b["items"][0]["slot"], "A1");
    assert_eq!(b["items"][0]["units"], 1);

    let res = h
        .api
        .handle(admin(
            "GET",
            &format!("/admin/reports/sales?from={DAY}&to={DAY}&format=html"),
            Value::Null,
        ))
        .await;
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("text/html; charset=utf-8")
    );
    let page = String::from_utf8(res.body().to_vec()).expect("utf-8");
    assert!(page.contains("<svg") && page.contains("vm-1"), "{page}");
}

#[tokio::test]
async fn a_period_without_facts_is_an_empty_report() {
    let h = harness().await;
    let (s, b) = report(&h, "from=2020-01-01&to=2020-12-31").await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["days"], 366);
    for section in ["machines", "districts", "items", "targets"] {
        assert_eq!(b[section], json!([]), "{section}: {b}");
    }
    assert_eq!(b["tags"]["buyers"], 0);
}

#[tokio::test]
async fn malformed_periods_are_refused_precisely() {
    let h = harness().await;
    for (query, code, says) in [
        ("to=2026-01-01", "bad_period", "from"),
        ("from=2026-01-01", "bad_period", "to"),
        ("from=2026-13-01&to=2026-12-31", "bad_period", "2026-13-01"),
        ("from=2026-02-30&to=2026-03-01", "bad_period", "2026-02-30"),
        ("from=yesterday&to=2026-03-01", "bad_period", "yesterday"),
        ("from=2026-03-02&to=2026-03-01", "bad_period", "before"),
        ("from=2025-01-01&to=2026-01-02", "bad_period", "366"),
        (
            "from=2026-01-01&to=2026-01-02&from=2026-01-01",
            "bad_period",
            "more than once",
        ),
        ("from=2026-01-01&to=2026-01-02&tz=Z", "bad_period", "tz"),
        (
            "from=2026-01-01&to=2026-01-02&format=pdf",
            "bad_format",
            "pdf",
        ),
    ] {
        let (s, b) = report(&h, query).await;
        assert_eq!(s, 400, "{query}: {b}");
        assert_eq!(b["error"]["code"], code, "{query}: {b}");
        let message = b["error"]["message"].as_str().unwrap_or_default();
        assert!(
            message.contains(says),
            "{query}: {message:?} should name {says:?}"
        );
    }
    let res = h
        .api
        .handle(
            http::Request::builder()
                .uri("/admin/reports/sales?from=2026-01-01&to=2026-01-01")
                .body(bytes::Bytes::new())
                .expect("request"),
        )
        .await;
    assert_eq!(res.status(), 401, "without the admin token");
    let (s, _) = send(
        &h.api,
        admin(
            "POST",
            "/admin/reports/sales?from=2026-01-01&to=2026-01-01",
            Value::Null,
        ),
    )
    .await;
    assert_eq!(s, 405);
}
