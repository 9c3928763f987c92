//! Catalogue and inventory over HTTP (see `docs/contract.md`, “Catalogue and inventory”): every route,
//! the money routes on slot-map slots, and every refusal — each a precise error that changes nothing —
//! through `Api::handle` on the embedded SQLite store.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code asserts by panicking

mod common;

use std::sync::atomic::Ordering;

use bytes::Bytes;
use common::*;
use http::Request;
use serde_json::{json, Value};

async fn op(h: &Harness, method: &str, path: &str, body: Value) -> (u16, Value) {
    send(&h.api, admin(method, path, body)).await
}

/// An admin request whose body is the given text, byte for byte.
async fn op_raw(h: &Harness, method: &str, path: &str, body: &str) -> (u16, Value) {
    let mut req = admin(method, path, Value::Null);
    *req.body_mut() = Bytes::from(body.to_owned());
    send(&h.api, req).await
}

fn code(b: &Value) -> Option<&str> {
    b["error"]["code"].as_str()
}

async fn product(h: &Harness, sku: &str, name: &str, minor: u64) {
    let (s, b) = op(
        h,
        "PUT",
        &format!("/admin/products/{sku}"),
        json!({"name": name, "price": cny(minor)}),
    )
    .await;
    assert_eq!(s, 200, "{b}");
}

async fn slots(h: &Harness, device: &str, slots: Value) -> Value {
    let (s, b) = op(
        h,
        "PUT",
        &format!("/admin/devices/{device}/slots"),
        json!({ "slots": slots }),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    b
}

async fn restock(h: &Harness, device: &str, counts: Value) -> Value {
    let (s, b) = op(
        h,
        "POST",
        &format!("/admin/devices/{device}/restock"),
        json!({ "slots": counts }),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    b
}

async fn inventory(h: &Harness, device: &str) -> Value {
    let (s, b) = op(
        h,
        "GET",
        &format!("/admin/devices/{device}/inventory"),
        Value::Null,
    )
    .await;
    assert_eq!(s, 200, "{b}");
    b
}

/// The inventory line of `slot`.
fn line<'a>(inv: &'a Value, slot: &str) -> &'a Value {
    inv["slots"]
        .as_array()
        .and_then(|ls| ls.iter().find(|l| l["slot"] == slot))
        .unwrap_or_else(|| panic!("no slot {slot} in {inv}"))
}

fn counts(inv: &Value, slot: &str) -> (u64, u64) {
    let l = line(inv, slot);
    (
        l["stock"].as_u64().unwrap_or(u64::MAX),
        l["reserved"].as_u64().unwrap_or(u64::MAX),
    )
}

/// A catalogue (cola 3.50, water 2.00) and machine `id` with A1 = cola ×10 and A2 = water ×8 at its
/// own price of 1.80, stocked `a1` and `a2`.
async fn stocked(h: &Harness, id: &str, mode: &str, a1: u32, a2: u32) -> String {
    let secret = h.register(id, mode).await;
    product(h, "cola", "Cola 330ml", 350).await;
    product(h, "water", "Water 500ml", 200).await;
    slots(
        h,
        id,
        json!([
            {"slot": "A1", "sku": "cola", "capacity": 10},
            {"slot": "A2", "sku": "water", "capacity": 8, "price": cny(180)},
        ]),
    )
    .await;
    restock(
        h,
        id,
        json!([{"slot": "A1", "stock": a1}, {"slot": "A2", "stock": a2}]),
    )
    .await;
    secret
}

fn buy(rid: &str, slot: &str, price: Option<u64>) -> String {
    let mut b = json!({"request_id": rid, "slot": slot});
    if let Some(p) = price {
        b["price"] = cny(p);
    }
    b.to_string()
}

#[tokio::test]
async fn products_are_upserted_and_listed_by_sku() {
    let h = harness().await;
    let (s, b) = op(&h, "GET", "/admin/products", Value::Null).await;
    assert_eq!((s, b), (200, json!({"products": []})));

    let (s, b) = op(
        &h,
        "PUT",
        "/admin/products/water-500",
        json!({"name": "Water", "price": cny(200), "category": "drinks"}),
    )
    .await;
    assert_eq!(
        (s, b),
        (
            200,
            json!({"product": {"sku": "water-500", "name": "Water", "price": cny(200), "category": "drinks"}})
        )
    );
    let (s, b) = op(
        &h,
        "PUT",
        "/admin/products/cola_330.v2",
        json!({"name": "  Cola  ", "price": cny(350)}),
    )
    .await;
    assert_eq!(
        (s, b),
        (
            200,
            json!({"product": {"sku": "cola_330.v2", "name": "Cola", "price": cny(350)}})
        ),
        "no category: the field is left out; the name is trimmed"
    );
    // The same sku again replaces the product.
    let (s, _) = op(
        &h,
        "PUT",
        "/admin/products/water-500",
        json!({"name": "Still water", "price": cny(250)}),
    )
    .await;
    assert_eq!(s, 200);
    let (s, b) = op(&h, "GET", "/admin/products", Value::Null).await;
    assert_eq!(s, 200);
    assert_eq!(
        b,
        json!({"products": [
            {"sku": "cola_330.v2", "name": "Cola", "price": cny(350)},
            {"sku": "water-500", "name": "Still water", "price": cny(250)},
        ]})
    );
}

#[tokio::test]
async fn bad_products_are_refused_and_change_nothing() {
    let h = harness().await;
    product(&h, "cola", "Cola", 350).await;
    let (_, before) = op(&h, "GET", "/admin/products", Value::Null).await;
    let long_sku = "a".repeat(65);
    let ok = json!({"name": "Cola", "price": cny(300)});
    let cases: Vec<(&str, String, Value, &str)> = vec![
        (
            "a space in the sku",
            "co%20la".into(),
            ok.clone(),
            "invalid_sku",
        ),
        (
            "a star in the sku",
            "co*la".into(),
            ok.clone(),
            "invalid_sku",
        ),
        ("a 65-character sku", long_sku, ok.clone(), "invalid_sku"),
        (
            "no name",
            "cola".into(),
            json!({"price": cny(300)}),
            "missing_field",
        ),
        (
            "an empty name",
            "cola".into(),
            json!({"name": "  ", "price": cny(300)}),
            "invalid_name",
        ),
        (
            "a 121-character name",
            "cola".into(),
            json!({"name": "n".repeat(121), "price": cny(300)}),
            "invalid_name",
        ),
        (
            "no price",
            "cola".into(),
            json!({"name": "Cola"}),
            "missing_field",
        ),
        (
            "a zero price",
            "cola".into(),
            json!({"name": "Cola", "price": cny(0)}),
            "invalid_price",
        ),
        (
            "a negative price",
            "cola".into(),
            json!({"name": "Cola", "price": {"minor": -1, "currency": "CNY"}}),
            "invalid_price",
        ),
        (
            "a price as text",
            "cola".into(),
            json!({"name": "Cola", "price": "3.00"}),
            "invalid_field",
        ),
        (
            "an unknown currency",
            "cola".into(),
            json!({"name": "Cola", "price": {"minor": 300, "currency": "XXX"}}),
            "invalid_field",
        ),
        (
            "an empty category",
            "cola".into(),
            json!({"name": "Cola", "price": cny(300), "category": ""}),
            "invalid_category",
        ),
        (
            "a 65-character category",
            "cola".into(),
            json!({"name": "Cola", "price": cny(300), "category": "c".repeat(65)}),
            "invalid_category",
        ),
        (
            "a category that is not text",
            "cola".into(),
            json!({"name": "Cola", "price": cny(300), "category": 7}),
            "invalid_field",
        ),
    ];
    for (what, sku, body, want) in cases {
        let (s, b) = op(&h, "PUT", &format!("/admin/products/{sku}"), body).await;
        assert_eq!((s, code(&b)), (400, Some(want)), "{what}: {b}");
        assert!(
            b["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{what}"
        );
    }
    let (s, b) = op_raw(&h, "PUT", "/admin/products/cola", "{").await;
    assert_eq!((s, code(&b)), (400, Some("invalid_json")));
    let (_, after) = op(&h, "GET", "/admin/products", Value::Null).await;
    assert_eq!(after, before, "nothing changed");
}

#[tokio::test]
async fn a_slot_map_is_the_machines_inventory() {
    let h = harness().await;
    h.register("vm-1", "mixed").await;
    product(&h, "cola", "Cola 330ml", 350).await;
    product(&h, "water", "Water 500ml", 200).await;
    let (s, empty) = op(&h, "GET", "/admin/devices/vm-1/inventory", Value::Null).await;
    assert_eq!((s, empty), (200, json!({"device_id": "vm-1", "slots": []})));

    let inv = slots(
        &h,
        "vm-1",
        json!([
            {"slot": "A1", "sku": "cola", "capacity": 10},
            {"slot": "A2", "sku": "water", "capacity": 8, "price": cny(180)},
        ]),
    )
    .await;
    assert_eq!(
        inv,
        json!({"device_id": "vm-1", "slots": [
            {"slot": "A1", "sku": "cola", "name": "Cola 330ml", "price": cny(350), "capacity": 10,
             "stock": 0, "reserved": 0, "low": true},
            {"slot": "A2", "sku": "water", "name": "Water 500ml", "price": cny(180), "capacity": 8,
             "stock": 0, "reserved": 0, "low": true},
        ]})
    );
    assert_eq!(inventory(&h, "vm-1").await, inv);

    // A refill sets the counts; low is available ≤ 25 % of capacity.
    let inv = restock(
        &h,
        "vm-1",
        json!([{"slot": "A1", "stock": 10}, {"slot": "A2", "stock": 2}]),
    )
    .await;
    assert_eq!(
        (
            line(&inv, "A1")["low"].clone(),
            line(&inv, "A2")["low"].clone()
        ),
        (json!(false), json!(true))
    );
    assert_eq!((counts(&inv, "A1"), counts(&inv, "A2")), ((10, 0), (2, 0)));

    // Replacing the map: A1 keeps cola (its stock, clamped to the new capacity), A2 changes sku (0),
    // B1 is new, and a slot left out is gone.
    let inv = slots(
        &h,
        "vm-1",
        json!([
            {"slot": "A1", "sku": "cola", "capacity": 6},
            {"slot": "A2", "sku": "cola", "capacity": 8},
        ]),
    )
    .await;
    assert_eq!((counts(&inv, "A1"), counts(&inv, "A2")), ((6, 0), (0, 0)));
    assert_eq!(line(&inv, "A2")["price"], cny(350), "the product's price");
    let inv = slots(
        &h,
        "vm-1",
        json!([{"slot": "B1", "sku": "water", "capacity": 5}]),
    )
    .await;
    assert_eq!(inv["slots"].as_array().map(Vec::len), Some(1), "{inv}");
    assert_eq!(counts(&inv, "B1"), (0, 0));
    // An empty map removes every slot.
    let inv = slots(&h, "vm-1", json!([])).await;
    assert_eq!(inv, json!({"device_id": "vm-1", "slots": []}));
}

#[tokio::test]
async fn bad_slot_maps_are_refused_and_change_nothing() {
    let h = harness().await;
    stocked(&h, "vm-1", "mixed", 4, 3).await;
    // A product priced in dollars: a CNY machine cannot sell it at the product's price.
    let (s, _) = op(
        &h,
        "PUT",
        "/admin/products/soda-usd",
        json!({"name": "Soda", "price": {"minor": 150, "currency": "USD"}}),
    )
    .await;
    assert_eq!(s, 200);
    let before = inventory(&h, "vm-1").await;
    let slot = |extra: Value| {
        let mut s = json!({"slot": "A1", "sku": "cola", "capacity": 10});
        if let (Some(o), Value::Object(e)) = (s.as_object_mut(), extra) {
            o.extend(e);
        }
        s
    };
    let many: Vec<Value> = (0..49)
        .map(|i| json!({"slot": format!("S{i}"), "sku": "cola", "capacity": 1}))
        .collect();
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "an unknown sku",
            json!([slot(json!({"sku": "tea"}))]),
            "unknown_sku",
        ),
        (
            "a sku with a space",
            json!([slot(json!({"sku": "co la"}))]),
            "invalid_sku",
        ),
        (
            "a sku with a slash",
            json!([slot(json!({"sku": "cola/1"}))]),
            "invalid_sku",
        ),
        (
            "capacity 0",
            json!([slot(json!({"capacity": 0}))]),
            "invalid_capacity",
        ),
        (
            "capacity 1001",
            json!([slot(json!({"capacity": 1001}))]),
            "invalid_capacity",
        ),
        (
            "capacity -1",
            json!([slot(json!({"capacity": -1}))]),
            "invalid_capacity",
        ),
        (
            "capacity 2.5",
            json!([slot(json!({"capacity": 2.5}))]),
            "invalid_capacity",
        ),
        (
            "capacity as text",
            json!([slot(json!({"capacity": "10"}))]),
            "invalid_capacity",
        ),
        (
            "a huge capacity",
            json!([slot(json!({"capacity": 18_446_744_073_709_551_615u64}))]),
            "invalid_capacity",
        ),
        (
            "a price in another currency",
            json!([slot(json!({"price": {"minor": 300, "currency": "USD"}}))]),
            "currency_mismatch",
        ),
        (
            "a product priced in another currency",
            json!([slot(json!({"sku": "soda-usd"}))]),
            "currency_mismatch",
        ),
        (
            "a zero price",
            json!([slot(json!({"price": cny(0)}))]),
            "invalid_price",
        ),
        (
            "a slot named twice",
            json!([slot(json!({})), slot(json!({"sku": "water"}))]),
            "duplicate_slot",
        ),
        ("49 slots", Value::Array(many), "too_many_slots"),
        (
            "no sku",
            json!([{"slot": "A1", "capacity": 10}]),
            "missing_field",
        ),
        (
            "no capacity",
            json!([{"slot": "A1", "sku": "cola"}]),
            "missing_field",
        ),
        (
            "a bad slot name",
            json!([slot(json!({"slot": "A 1"}))]),
            "invalid_field",
        ),
        (
            "a slot that is not an object",
            json!(["A1"]),
            "invalid_field",
        ),
    ];
    for (what, body, want) in cases {
        let (s, b) = op(
            &h,
            "PUT",
            "/admin/devices/vm-1/slots",
            json!({ "slots": body }),
        )
        .await;
        assert_eq!((s, code(&b)), (400, Some(want)), "{what}: {b}");
        assert_eq!(
            inventory(&h, "vm-1").await,
            before,
            "{what}: nothing changed"
        );
    }
    for (what, body, want) in [
        ("no slots", json!({}), "missing_field"),
        (
            "slots not an array",
            json!({"slots": {"A1": 1}}),
            "invalid_field",
        ),
    ] {
        let (s, b) = op(&h, "PUT", "/admin/devices/vm-1/slots", body).await;
        assert_eq!((s, code(&b)), (400, Some(want)), "{what}: {b}");
    }
    // An unknown machine, or a name that cannot be one, is a 404 as on the other admin routes.
    for path in ["/admin/devices/vm-9/slots", "/admin/devices/vm%20x/slots"] {
        let (s, b) = op(&h, "PUT", path, json!({"slots": [slot(json!({}))]})).await;
        assert_eq!((s, code(&b)), (404, Some("unknown_device")), "{path}: {b}");
    }
    for path in [
        "/admin/devices/vm-9/inventory",
        "/admin/devices/vm%20x/inventory",
    ] {
        let (s, b) = op(&h, "GET", path, Value::Null).await;
        assert_eq!((s, code(&b)), (404, Some("unknown_device")), "{path}: {b}");
    }
    assert_eq!(inventory(&h, "vm-1").await, before);
}

#[tokio::test]
async fn bad_restocks_are_refused_and_change_nothing() {
    let h = harness().await;
    stocked(&h, "vm-1", "mixed", 4, 3).await;
    let before = inventory(&h, "vm-1").await;
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "stock above capacity",
            json!([{"slot": "A1", "stock": 11}]),
            "invalid_stock",
        ),
        (
            "stock above any capacity",
            json!([{"slot": "A1", "stock": 5000}]),
            "invalid_stock",
        ),
        (
            "a negative stock",
            json!([{"slot": "A1", "stock": -1}]),
            "invalid_stock",
        ),
        (
            "a hugely negative stock",
            json!([{"slot": "A1", "stock": i64::MIN}]),
            "invalid_stock",
        ),
        (
            "a fractional stock",
            json!([{"slot": "A1", "stock": 1.5}]),
            "invalid_stock",
        ),
        (
            "a stock as text",
            json!([{"slot": "A1", "stock": "3"}]),
            "invalid_stock",
        ),
        (
            "an unknown slot (with a good one first)",
            json!([{"slot": "A1", "stock": 9}, {"slot": "Z9", "stock": 1}]),
            "unknown_slot",
        ),
        (
            "a slot named twice",
            json!([{"slot": "A1", "stock": 9}, {"slot": "A1", "stock": 1}]),
            "duplicate_slot",
        ),
        ("no stock", json!([{"slot": "A1"}]), "missing_field"),
        ("no slot", json!([{"stock": 1}]), "missing_field"),
    ];
    for (what, body, want) in cases {
        let (s, b) = op(
            &h,
            "POST",
            "/admin/devices/vm-1/restock",
            json!({ "slots": body }),
        )
        .await;
        assert_eq!((s, code(&b)), (400, Some(want)), "{what}: {b}");
        assert_eq!(
            inventory(&h, "vm-1").await,
            before,
            "{what}: nothing changed"
        );
    }
    // A negative number written by hand (not through serde_json's own writer) is a clean 400 too.
    let (s, b) = op_raw(
        &h,
        "POST",
        "/admin/devices/vm-1/restock",
        r#"{"slots": [{"slot": "A1", "stock": -0.0}, {"slot": "A2", "stock": -3e2}]}"#,
    )
    .await;
    assert_eq!((s, code(&b)), (400, Some("invalid_stock")), "{b}");
    // A machine without a slot map has nothing to restock; an unknown machine is a 404.
    h.register("vm-2", "mixed").await;
    let (s, b) = op(
        &h,
        "POST",
        "/admin/devices/vm-2/restock",
        json!({"slots": [{"slot": "A1", "stock": 1}]}),
    )
    .await;
    assert_eq!((s, code(&b)), (400, Some("no_slot_map")), "{b}");
    let (s, b) = op(
        &h,
        "POST",
        "/admin/devices/vm-9/restock",
        json!({"slots": [{"slot": "A1", "stock": 1}]}),
    )
    .await;
    assert_eq!((s, code(&b)), (404, Some("unknown_device")), "{b}");
    assert_eq!(inventory(&h, "vm-1").await, before);
}

#[tokio::test]
async fn a_machine_reports_its_own_count_and_no_other_machines() {
    let h = harness().await;
    let secret = stocked(&h, "vm-1", "mixed", 4, 3).await;
    let other = h.register("vm-2", "mixed").await;
    let count = json!({"slots": [{"slot": "A1", "stock": 7}]}).to_string();
    let (s, inv) = h
        .call("POST", "/devices/vm-1/inventory", "vm-1", &secret, &count)
        .await;
    assert_eq!(s, 200, "{inv}");
    assert_eq!(inv["device_id"], "vm-1");
    assert_eq!((counts(&inv, "A1"), counts(&inv, "A2")), ((7, 0), (3, 0)));
    assert_eq!(inventory(&h, "vm-1").await, inv);

    // vm-2, signing with its own secret, reports vm-1's inventory: 403, nothing changed.
    let wrong = json!({"slots": [{"slot": "A1", "stock": 0}]}).to_string();
    let req = signed(
        "POST",
        "/devices/vm-1/inventory",
        "vm-2",
        &other,
        h.now_secs(),
        &wrong,
    );
    let (s, b) = send(&h.api, req).await;
    assert_eq!((s, code(&b)), (403, Some("device_mismatch")), "{b}");
    // ... nor with vm-1's header and its own secret.
    let (s, b) = h
        .call("POST", "/devices/vm-1/inventory", "vm-1", &other, &wrong)
        .await;
    assert_eq!((s, code(&b)), (401, Some("bad_signature")), "{b}");
    assert_eq!(inventory(&h, "vm-1").await, inv, "nothing changed");

    // The machine's count is held to the same rules as an operator's.
    for (body, want) in [
        (
            json!({"slots": [{"slot": "A1", "stock": 11}]}),
            "invalid_stock",
        ),
        (
            json!({"slots": [{"slot": "A1", "stock": -2}]}),
            "invalid_stock",
        ),
        (
            json!({"slots": [{"slot": "Q7", "stock": 1}]}),
            "unknown_slot",
        ),
        (json!({}), "missing_field"),
    ] {
        let (s, b) = h
            .call(
                "POST",
                "/devices/vm-1/inventory",
                "vm-1",
                &secret,
                &body.to_string(),
            )
            .await;
        assert_eq!((s, code(&b)), (400, Some(want)), "{body}: {b}");
    }
    let (s, b) = h
        .call("POST", "/devices/vm-2/inventory", "vm-2", &other, &count)
        .await;
    assert_eq!((s, code(&b)), (400, Some("no_slot_map")), "{b}");
    let (s, b) = h
        .call("GET", "/devices/vm-1/inventory", "vm-1", &secret, "")
        .await;
    assert_eq!((s, code(&b)), (405, Some("method_not_allowed")), "{b}");
    assert_eq!(inventory(&h, "vm-1").await, inv, "nothing changed");
}

#[tokio::test]
async fn purchases_on_the_slot_map_take_its_price_and_its_stock() {
    let h = harness().await;
    let secret = stocked(&h, "vm-1", "pay_first", 2, 1).await;
    h.pay("vm-1", "T1", 2000).await;
    let p = "/devices/vm-1/purchases";

    // No price: the product's (A1, 3.50) or the slot's own (A2, 1.80); one item reserved each.
    let (s, b) = h
        .call("POST", p, "vm-1", &secret, &buy("r1", "A1", None))
        .await;
    assert_eq!((s, b["decision"].as_str()), (200, Some("approved")), "{b}");
    assert_eq!(b["balance"], cny(1650));
    let (s, b) = h
        .call("POST", p, "vm-1", &secret, &buy("r2", "A2", None))
        .await;
    assert_eq!((s, b["decision"].as_str()), (200, Some("approved")), "{b}");
    assert_eq!(b["balance"], cny(1470));
    let inv = inventory(&h, "vm-1").await;
    assert_eq!((counts(&inv, "A1"), counts(&inv, "A2")), ((2, 1), (1, 1)));
    assert_eq!(line(&inv, "A2")["low"], true, "nothing left to promise");

    // The slot's price given explicitly is fine; another price is refused and changes nothing.
    let (s, b) = h
        .call("POST", p, "vm-1", &secret, &buy("r3", "A1", Some(300)))
        .await;
    assert_eq!((s, code(&b)), (400, Some("price_mismatch")), "{b}");
    let (s, b) = h
        .call("POST", p, "vm-1", &secret, &buy("r3", "A2", Some(200)))
        .await;
    assert_eq!(
        (s, code(&b)),
        (400, Some("price_mismatch")),
        "the slot's own price wins over its product's: {b}"
    );
    let (s, b) = h
        .call(
            "POST",
            p,
            "vm-1",
            &secret,
            &json!({"request_id": "r3", "slot": "A1", "price": {"minor": 350, "currency": "USD"}})
                .to_string(),
        )
        .await;
    assert_eq!((s, code(&b)), (400, Some("currency_mismatch")), "{b}");
    assert_eq!(inventory(&h, "vm-1").await, inv, "nothing changed");
    let (_, status) = h
        .call("GET", "/devices/vm-1/session", "vm-1", &secret, "")
        .await;
    assert_eq!(
        (&status["balance"], &status["held"]),
        (&cny(1470), &cny(530)),
        "{status}"
    );

    // Delivered: one fewer in stock and promised. Failed: the promise is released, the stock stays.
    let (s, _) = h
        .call(
            "POST",
            "/devices/vm-1/purchases/r1/result",
            "vm-1",
            &secret,
            r#"{"delivered": true}"#,
        )
        .await;
    assert_eq!(s, 200);
    let (s, _) = h
        .call(
            "POST",
            "/devices/vm-1/purchases/r2/result",
            "vm-1",
            &secret,
            r#"{"delivered": false}"#,
        )
        .await;
    assert_eq!(s, 200);
    let inv = inventory(&h, "vm-1").await;
    assert_eq!((counts(&inv, "A1"), counts(&inv, "A2")), ((1, 0), (1, 0)));

    // The last cola: approved, reserved; the next one is a sold_out decline (a 200, nothing held).
    let (s, b) = h
        .call("POST", p, "vm-1", &secret, &buy("r4", "A1", Some(350)))
        .await;
    assert_eq!((s, b["decision"].as_str()), (200, Some("approved")), "{b}");
    let (s, b) = h
        .call("POST", p, "vm-1", &secret, &buy("r5", "A1", None))
        .await;
    assert_eq!(
        (s, b["decision"].as_str(), b["reason"].as_str()),
        (200, Some("declined"), Some("sold_out")),
        "{b}"
    );
    assert_eq!(b["balance"], cny(1470 + 180 - 350), "{b}");
    assert_eq!(counts(&inventory(&h, "vm-1").await, "A1"), (1, 1));

    // A slot outside the map works as before: the machine names the price, no stock is kept; without
    // a price it is refused.
    let (s, b) = h
        .call("POST", p, "vm-1", &secret, &buy("r6", "C9", None))
        .await;
    assert_eq!((s, code(&b)), (400, Some("missing_price")), "{b}");
    let (s, b) = h
        .call("POST", p, "vm-1", &secret, &buy("r6", "C9", Some(120)))
        .await;
    assert_eq!((s, b["decision"].as_str()), (200, Some("approved")), "{b}");
    let after = inventory(&h, "vm-1").await;
    assert_eq!(after["slots"].as_array().map(Vec::len), Some(2), "{after}");
}

#[tokio::test]
async fn a_purchase_whose_write_fails_reserves_nothing() {
    let h = harness().await;
    let secret = stocked(&h, "vm-1", "pay_first", 1, 0).await;
    h.pay("vm-1", "T1", 1000).await;
    let before = inventory(&h, "vm-1").await;
    h.fail_commits.store(50, Ordering::SeqCst);
    let (s, b) = h
        .call(
            "POST",
            "/devices/vm-1/purchases",
            "vm-1",
            &secret,
            &buy("r1", "A1", None),
        )
        .await;
    assert_eq!((s, code(&b)), (503, Some("unavailable")), "{b}");
    h.fail_commits.store(0, Ordering::SeqCst);
    assert_eq!(inventory(&h, "vm-1").await, before, "no item reserved");
    // The retry is decided afresh and reserves the item once.
    let (s, b) = h
        .call(
            "POST",
            "/devices/vm-1/purchases",
            "vm-1",
            &secret,
            &buy("r1", "A1", None),
        )
        .await;
    assert_eq!((s, b["decision"].as_str()), (200, Some("approved")), "{b}");
    assert_eq!(counts(&inventory(&h, "vm-1").await, "A1"), (1, 1));
}

#[tokio::test]
async fn orders_on_the_slot_map_take_its_price_and_reserve_an_item() {
    let h = harness().await;
    let secret = stocked(&h, "vm-1", "purchase_first", 1, 0).await;
    let o = "/devices/vm-1/orders";
    let order = |id: &str, slot: &str, price: Option<u64>| {
        let mut b = json!({"order_id": id, "slot": slot});
        if let Some(p) = price {
            b["price"] = cny(p);
        }
        b.to_string()
    };
    // Refusals first: nothing is placed or reserved.
    let (s, b) = h
        .call("POST", o, "vm-1", &secret, &order("o0", "A1", Some(100)))
        .await;
    assert_eq!((s, code(&b)), (400, Some("price_mismatch")), "{b}");
    let (s, b) = h
        .call("POST", o, "vm-1", &secret, &order("o0", "A2", None))
        .await;
    assert_eq!((s, code(&b)), (409, Some("sold_out")), "{b}");
    let (s, b) = h
        .call("POST", o, "vm-1", &secret, &order("o0", "C9", None))
        .await;
    assert_eq!((s, code(&b)), (400, Some("missing_price")), "{b}");
    let inv = inventory(&h, "vm-1").await;
    assert_eq!((counts(&inv, "A1"), counts(&inv, "A2")), ((1, 0), (0, 0)));
    let (_, status) = h
        .call("GET", "/devices/vm-1/session", "vm-1", &secret, "")
        .await;
    assert_eq!(status, json!({"state": "idle"}));

    // Placed without a price: the slot's, and its one item is promised.
    let (s, b) = h
        .call("POST", o, "vm-1", &secret, &order("o1", "A1", None))
        .await;
    assert_eq!(
        (s, b["state"].as_str()),
        (200, Some("awaiting_payment")),
        "{b}"
    );
    assert_eq!(b["price"], cny(350));
    assert_eq!(counts(&inventory(&h, "vm-1").await, "A1"), (1, 1));
    h.pay("vm-1", "T1", 350).await;
    let (s, b) = h
        .call(
            "POST",
            "/devices/vm-1/purchases/o1/result",
            "vm-1",
            &secret,
            r#"{"delivered": true}"#,
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(counts(&inventory(&h, "vm-1").await, "A1"), (0, 0));
}

#[tokio::test]
async fn a_delivery_from_an_empty_slot_is_flagged_stock_mismatch() {
    let h = harness().await;
    let secret = stocked(&h, "vm-1", "pay_first", 1, 0).await;
    h.pay("vm-1", "T1", 1000).await;
    let (s, b) = h
        .call(
            "POST",
            "/devices/vm-1/purchases",
            "vm-1",
            &secret,
            &buy("r1", "A1", None),
        )
        .await;
    assert_eq!((s, b["decision"].as_str()), (200, Some("approved")), "{b}");
    let sid = b["session_id"].as_str().unwrap_or_default().to_owned();
    // The operator counts 0 (the item was taken by hand) while the purchase is still promised.
    restock(&h, "vm-1", json!([{"slot": "A1", "stock": 0}])).await;
    let (s, _) = h
        .call(
            "POST",
            "/devices/vm-1/purchases/r1/result",
            "vm-1",
            &secret,
            r#"{"delivered": true}"#,
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(counts(&inventory(&h, "vm-1").await, "A1"), (0, 0));
    let (s, detail) = op(&h, "GET", &format!("/admin/sessions/{sid}"), Value::Null).await;
    assert_eq!(s, 200);
    let anomalies = detail["anomalies"].as_array().cloned().unwrap_or_default();
    assert!(
        anomalies.iter().any(|a| a["kind"] == "stock_mismatch"
            && a["detail"] == json!({"slot": "A1", "request_id": "r1"})),
        "{detail}"
    );
    // Money moved as without inventory: the 3.50 was spent.
    assert_eq!(detail["spent"], cny(350), "{detail}");
}

/// `district/machine/slot` of every line of a restocking round, in its order.
fn round_shape(round: &Value) -> Vec<String> {
    let list = |v: &Value| v.as_array().cloned().unwrap_or_default();
    let mut out = Vec::new();
    for d in list(&round["districts"]) {
        for m in list(&d["machines"]) {
            for l in list(&m["slots"]) {
                out.push(format!(
                    "{}/{}/{}",
                    d["district"].as_str().unwrap_or("?"),
                    m["device_id"].as_str().unwrap_or("?"),
                    l["slot"].as_str().unwrap_or("?")
                ));
            }
        }
    }
    out
}

#[tokio::test]
async fn the_restocking_round_lists_low_slots_by_district_and_machine() {
    let h = harness().await;
    stocked(&h, "vm-b", "mixed", 2, 8).await; // A1 2/10 low, A2 8/8
    stocked(&h, "vm-a", "mixed", 10, 2).await; // A1 10/10, A2 2/8 low
    stocked(&h, "vm-c", "mixed", 10, 8).await; // nothing low
    let (s, b) = op(
        &h,
        "POST",
        "/admin/devices",
        json!({"device_id": "vm-d", "name": "Gym", "district": "Anting", "location": "Hall 2",
               "currency": "CNY"}),
    )
    .await;
    assert_eq!(s, 201, "{b}");
    slots(
        &h,
        "vm-d",
        json!([{"slot": "B1", "sku": "cola", "capacity": 4}]),
    )
    .await;

    let (s, round) = op(&h, "GET", "/admin/inventory", Value::Null).await;
    assert_eq!(s, 200, "{round}");
    assert_eq!(
        round_shape(&round),
        ["Anting/vm-d/B1", "Xuhui/vm-a/A2", "Xuhui/vm-b/A1"],
        "by district, then machine: {round}"
    );
    let gym = &round["districts"][0]["machines"][0];
    assert_eq!(
        (&gym["name"], &gym["location"]),
        (&json!("Gym"), &json!("Hall 2"))
    );
    assert_eq!(
        round["districts"][1]["machines"][0]["slots"][0],
        json!({"slot": "A2", "sku": "water", "name": "Water 500ml", "price": cny(180),
               "capacity": 8, "stock": 2, "reserved": 0, "low": true})
    );
    assert_eq!(
        round["districts"][1]["machines"][0]["location"],
        Value::Null
    );

    // A higher threshold takes more slots; 1 takes every slot.
    let (s, wide) = op(&h, "GET", "/admin/inventory?below=1", Value::Null).await;
    assert_eq!(s, 200);
    assert_eq!(round_shape(&wide).len(), 7, "{wide}");
    let (s, b) = op(&h, "GET", "/admin/inventory?below=0.25", Value::Null).await;
    assert_eq!((s, b), (200, round.clone()), "0.25 is the default");
    let (s, narrow) = op(&h, "GET", "/admin/inventory?below=0.1", Value::Null).await;
    assert_eq!(s, 200);
    assert_eq!(
        round_shape(&narrow),
        ["Anting/vm-d/B1"],
        "only the empty B1 (0 ≤ 10 %): {narrow}"
    );

    for q in [
        "below=0",
        "below=-0.5",
        "below=1.01",
        "below=abc",
        "below=",
        "below=NaN",
        "below=inf",
        "below=0.2&below=0.3",
    ] {
        let (s, b) = op(&h, "GET", &format!("/admin/inventory?{q}"), Value::Null).await;
        assert_eq!((s, code(&b)), (400, Some("invalid_threshold")), "{q}: {b}");
    }
}

#[tokio::test]
async fn the_inventory_routes_are_operator_routes() {
    let h = harness().await;
    stocked(&h, "vm-1", "mixed", 1, 1).await;
    let before = inventory(&h, "vm-1").await;
    let routes = [
        ("GET", "/admin/products"),
        ("PUT", "/admin/products/cola"),
        ("PUT", "/admin/devices/vm-1/slots"),
        ("GET", "/admin/devices/vm-1/inventory"),
        ("POST", "/admin/devices/vm-1/restock"),
        ("GET", "/admin/inventory"),
    ];
    for (method, path) in routes {
        let req = Request::builder()
            .method(method)
            .uri(path)
            .body(Bytes::from(r#"{"slots": []}"#))
            .expect("request");
        let (s, b) = send(&h.api, req).await;
        assert_eq!(
            (s, code(&b)),
            (401, Some("unauthorized")),
            "{method} {path}"
        );
    }
    for (method, path) in [
        ("DELETE", "/admin/products"),
        ("POST", "/admin/products/cola"),
        ("GET", "/admin/devices/vm-1/slots"),
        ("PUT", "/admin/devices/vm-1/inventory"),
        ("GET", "/admin/devices/vm-1/restock"),
        ("POST", "/admin/inventory"),
    ] {
        let (s, b) = op(&h, method, path, json!({"slots": []})).await;
        assert_eq!(
            (s, code(&b)),
            (405, Some("method_not_allowed")),
            "{method} {path}"
        );
    }
    assert_eq!(inventory(&h, "vm-1").await, before, "nothing changed");
}

#[tokio::test]
async fn a_slot_with_items_promised_cannot_be_dropped_until_they_are_vended() {
    let h = harness().await;
    let secret = stocked(&h, "vm-1", "pay_first", 2, 1).await;
    h.pay("vm-1", "T1", 2000).await;
    let (s, b) = h
        .call(
            "POST",
            "/devices/vm-1/purchases",
            "vm-1",
            &secret,
            &buy("r1", "A2", None),
        )
        .await;
    assert_eq!((s, b["decision"].as_str()), (200, Some("approved")), "{b}");
    let before = inventory(&h, "vm-1").await;
    let only_a1 = json!({"slots": [{"slot": "A1", "sku": "cola", "capacity": 10}]});
    let (s, b) = op(&h, "PUT", "/admin/devices/vm-1/slots", only_a1.clone()).await;
    assert_eq!((s, code(&b)), (409, Some("slot_reserved")), "{b}");
    assert_eq!(inventory(&h, "vm-1").await, before, "nothing changed");

    let (s, _) = h
        .call(
            "POST",
            "/devices/vm-1/purchases/r1/result",
            "vm-1",
            &secret,
            r#"{"delivered": true}"#,
        )
        .await;
    assert_eq!(s, 200);
    let (s, b) = op(&h, "PUT", "/admin/devices/vm-1/slots", only_a1).await;
    assert_eq!(s, 200, "vended: the slot may go now: {b}");
    assert_eq!(b["slots"].as_array().map(Vec::len), Some(1));
}

#[tokio::test]
async fn a_count_taken_before_a_sale_never_undoes_it() {
    // The machine counts A1 (4), the answer is lost, a customer buys one, then the machine's retry of
    // the same signed request arrives (or the queue redelivers it, or someone replays it): the
    // count is older than the sale and is refused, so the sale stays counted.
    let h = harness().await;
    let secret = stocked(&h, "vm-1", "pay_first", 4, 3).await;
    let count = json!({"slots": [{"slot": "A1", "stock": 4}]}).to_string();
    let counted_at = h.now_secs();
    let (s, b) = send(
        &h.api,
        signed(
            "POST",
            "/devices/vm-1/inventory",
            "vm-1",
            &secret,
            counted_at,
            &count,
        ),
    )
    .await;
    assert_eq!(s, 200, "{b}");

    h.clock.advance(std::time::Duration::from_secs(5));
    h.pay("vm-1", "T1", 1000).await;
    let (s, b) = h
        .call(
            "POST",
            "/devices/vm-1/purchases",
            "vm-1",
            &secret,
            &buy("r1", "A1", None),
        )
        .await;
    assert_eq!((s, b["decision"].as_str()), (200, Some("approved")), "{b}");
    let (s, _) = h
        .call(
            "POST",
            "/devices/vm-1/purchases/r1/result",
            "vm-1",
            &secret,
            r#"{"delivered": true}"#,
        )
        .await;
    assert_eq!(s, 200);
    let after_sale = inventory(&h, "vm-1").await;
    assert_eq!(counts(&after_sale, "A1"), (3, 0));

    let (s, b) = send(
        &h.api,
        signed(
            "POST",
            "/devices/vm-1/inventory",
            "vm-1",
            &secret,
            counted_at,
            &count,
        ),
    )
    .await;
    assert_eq!((s, code(&b)), (409, Some("stale_count")), "{b}");
    assert_eq!(
        inventory(&h, "vm-1").await,
        after_sale,
        "the sale stays counted"
    );

    // A count taken after the sale is applied; an operator's refill is never stale.
    let (s, b) = h
        .call("POST", "/devices/vm-1/inventory", "vm-1", &secret, &count)
        .await;
    assert_eq!((s, counts(&b, "A1")), (200, (4, 0)), "{b}");
    assert_eq!(
        counts(
            &restock(&h, "vm-1", json!([{"slot": "A1", "stock": 2}])).await,
            "A1"
        ),
        (2, 0)
    );
}

#[tokio::test]
async fn a_product_keeps_its_currency() {
    // Slots relying on a product's price are in their machine's currency: moving the product to
    // another would make every one of them refuse sales, so the catalogue refuses it instead.
    let h = harness().await;
    product(&h, "cola", "Cola", 350).await;
    let (s, b) = op(
        &h,
        "PUT",
        "/admin/products/cola",
        json!({"name": "Cola", "price": {"minor": 50, "currency": "USD"}}),
    )
    .await;
    assert_eq!((s, code(&b)), (400, Some("currency_mismatch")), "{b}");
    let (s, b) = op(&h, "GET", "/admin/products", json!(null)).await;
    assert_eq!(s, 200);
    assert_eq!(b["products"][0]["price"], cny(350), "unchanged: {b}");
    let (s, b) = op(
        &h,
        "PUT",
        "/admin/products/cola",
        json!({"name": "Cola", "price": {"minor": 380, "currency": "CNY"}}),
    )
    .await;
    assert_eq!((s, &b["product"]["price"]), (200, &cny(380)), "{b}");
}
