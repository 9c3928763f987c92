//! The bad-input catalogue: what each function refuses, one case per line, with the status and error
//! code it answers — and proof that nothing changed (the machine's session, the session's ledger, the
//! refunds at Alipay and the queues read the same before and after every case).
//!
//! A genuine, verified payment that cannot be credited (wrong currency, machine busy) is not bad input:
//! it is refunded in full (see `docs/contract.md`, “Money rules”) and tested elsewhere.
//!
//! The catalogue and inventory routes (`docs/contract.md`, “Catalogue and inventory”) are checked over `vendpay serve` itself, on the
//! embedded store and on `--store aws` against moto: every refusal answers its precise code and leaves
//! the catalogue, each machine's inventory, the machines' sessions and the restocking round as they were.
//!
//! Run with `scripts/with-moto cargo test -p vendpay-e2e --test bad_input`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code asserts by panicking

mod lambda;

use lambda::*;
use serde_json::{json, Value};
use vendpay_e2e::MachineKeys;

/// Which function a case is sent to.
#[derive(Clone, Copy, Debug)]
enum F {
    Notify,
    Device,
    DeviceQueue,
    Admin,
    Deadline,
    Refund,
}

/// What a machine-signed event needs.
struct Ctx {
    secret: String,
}

type Mutate = fn(&mut Value, &Ctx);

/// One refusal: the function, what is wrong, the fixture it starts from, the change, the expected
/// answer (`"<status> <code>"` for HTTP, `"dropped <alert>"` / `"retried"` for SQS records, `"error"`
/// for an invocation that fails).
struct Case {
    f: F,
    what: &'static str,
    fixture: &'static str,
    mutate: Mutate,
    expect: &'static str,
}

fn form(ev: &Value) -> Vec<(String, String)> {
    use base64::Engine;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(ev["body"].as_str().unwrap_or_default())
        .unwrap_or_default();
    form_urlencoded::parse(&raw).into_owned().collect()
}
fn set_form(ev: &mut Value, body: &str) {
    let path = ev["rawPath"].clone();
    *ev = notification_with_body(body);
    ev["rawPath"] = path.clone();
    ev["requestContext"]["http"]["path"] = path;
}
fn with_field(ev: &mut Value, key: &str, value: &str, resign: bool) {
    let mut fields: Vec<(String, String)> = form(ev)
        .into_iter()
        .filter(|(k, _)| k != "sign" && k != "sign_type" && k != key)
        .collect();
    fields.push((key.to_owned(), value.to_owned()));
    let body = if resign {
        sign_form(&fields, vendpay_alipay_sandbox::TEST_ALIPAY_PRIVATE_KEY)
    } else {
        let mut signed: Vec<(String, String)> = form(ev);
        for kv in signed.iter_mut() {
            if kv.0 == key {
                kv.1 = value.to_owned();
            }
        }
        form_urlencoded::Serializer::new(String::new())
            .extend_pairs(signed)
            .finish()
    };
    set_form(ev, &body);
}
fn notify_path(ev: &mut Value, device: &str) {
    let p = format!("/alipay/notify/{device}");
    ev["rawPath"] = json!(p);
    ev["requestContext"]["http"]["path"] = json!(p);
}
fn path(ev: &mut Value, p: &str) {
    ev["rawPath"] = json!(p);
    ev["requestContext"]["http"]["path"] = json!(p);
}
fn method(ev: &mut Value, m: &str) {
    ev["requestContext"]["http"]["method"] = json!(m);
}
fn body(ev: &mut Value, b: &str) {
    ev["body"] = json!(b);
}
fn sign(ev: &mut Value, c: &Ctx) {
    sign_http(ev, &c.secret, now_secs());
}
fn price(ev: &mut Value, c: &Ctx, price: Value) {
    let mut b: Value =
        serde_json::from_str(ev["body"].as_str().unwrap_or("{}")).unwrap_or(json!({}));
    b["price"] = price;
    b["request_id"] = json!("bad-price");
    b["order_id"] = json!("bad-price");
    body(ev, &b.to_string());
    sign(ev, c);
}
fn queued_body(ev: &mut Value, b: &str) {
    ev["Records"][0]["body"] = json!(b);
}

#[rustfmt::skip]
const CASES: &[Case] = &[
    // alipay-notify: anything unverifiable is answered with a non-`success` body.
    Case { f: F::Notify, what: "forged: signed with the merchant's key, not Alipay's", fixture: "alipay-notify.json", mutate: |ev, _| set_form(ev, &sign_form(&notification_fields(), vendpay_alipay_sandbox::TEST_MERCHANT_PRIVATE_KEY)), expect: "400 fail: bad_signature" },
    Case { f: F::Notify, what: "signature missing", fixture: "alipay-notify.json", mutate: |ev, _| { let f: Vec<_> = form(ev).into_iter().filter(|(k, _)| k != "sign").collect(); set_form(ev, &form_urlencoded::Serializer::new(String::new()).extend_pairs(f).finish()) }, expect: "400 fail: bad_signature" },
    Case { f: F::Notify, what: "sign_type MD5 on an RSA2 signature", fixture: "alipay-notify.json", mutate: |ev, _| { let f: Vec<_> = form(ev).into_iter().map(|(k, v)| if k == "sign_type" { (k, "MD5".to_owned()) } else { (k, v) }).collect(); set_form(ev, &form_urlencoded::Serializer::new(String::new()).extend_pairs(f).finish()) }, expect: "400 fail: bad_signature" },
    Case { f: F::Notify, what: "amount tampered after signing", fixture: "alipay-notify.json", mutate: |ev, _| with_field(ev, "total_fee", "1000.00", false), expect: "400 fail: bad_signature" },
    Case { f: F::Notify, what: "another partner (validly signed)", fixture: "alipay-notify.json", mutate: |ev, _| with_field(ev, "partner", "2088999999999999", true), expect: "400 fail: wrong_partner" },
    Case { f: F::Notify, what: "unknown device in the path", fixture: "alipay-notify.json", mutate: |ev, _| notify_path(ev, "vm-nobody"), expect: "404 fail: unknown_device" },
    Case { f: F::Notify, what: "passback names another machine than the path", fixture: "alipay-notify.json", mutate: |ev, _| with_field(ev, "passback_parameters", r#"{"device_id":"vm-other"}"#, true), expect: "400 fail: device_mismatch" },
    Case { f: F::Notify, what: "notify_id folded into the value before it (validly signed)", fixture: "alipay-notify.json", mutate: |ev, _| { let f: Vec<_> = form(ev).into_iter().filter(|(k, _)| k != "sign" && k != "sign_type" && k != "notify_id").map(|(k, v)| if k == "notify_action_type" { (k, format!("{v}&notify_id=fixture-notify-1")) } else { (k, v) }).collect(); set_form(ev, &sign_form(&f, vendpay_alipay_sandbox::TEST_ALIPAY_PRIVATE_KEY)) }, expect: "400 fail: malformed" },
    Case { f: F::Notify, what: "payment without notify_id (validly signed)", fixture: "alipay-notify.json", mutate: |ev, _| { let f: Vec<_> = form(ev).into_iter().filter(|(k, _)| k != "sign" && k != "sign_type" && k != "notify_id").collect(); set_form(ev, &sign_form(&f, vendpay_alipay_sandbox::TEST_ALIPAY_PRIVATE_KEY)) }, expect: "400 fail: malformed" },
    Case { f: F::Notify, what: "malformed form body", fixture: "alipay-notify.json", mutate: |ev, _| set_form(ev, "%%%&&=="), expect: "400 fail: malformed" },
    Case { f: F::Notify, what: "amount with three decimals (validly signed)", fixture: "alipay-notify.json", mutate: |ev, _| with_field(ev, "total_fee", "10.005", true), expect: "400 fail: malformed" },
    Case { f: F::Notify, what: "oversized body (100 KiB)", fixture: "alipay-notify.json", mutate: |ev, _| set_form(ev, &format!("pad={}", "x".repeat(100 * 1024))), expect: "413 body_too_large" },
    Case { f: F::Notify, what: "GET instead of POST", fixture: "alipay-notify.json", mutate: |ev, _| method(ev, "GET"), expect: "405 method_not_allowed" },
    Case { f: F::Notify, what: "unknown route", fixture: "alipay-notify.json", mutate: |ev, _| path(ev, "/alipay/refund-notify"), expect: "404 not_found" },
    // device-api over HTTP.
    Case { f: F::Device, what: "signature forged (wrong secret)", fixture: "device-purchase.json", mutate: |ev, _| sign_http(ev, &"ab".repeat(32), now_secs()), expect: "401 bad_signature" },
    Case { f: F::Device, what: "signature headers missing", fixture: "device-purchase.json", mutate: |ev, _| { if let Some(h) = ev["headers"].as_object_mut() { h.remove("x-signature"); } }, expect: "401 missing_auth_header" },
    Case { f: F::Device, what: "signature not hex", fixture: "device-purchase.json", mutate: |ev, c| { sign(ev, c); ev["headers"]["x-signature"] = json!("not-hex"); }, expect: "401 bad_signature" },
    Case { f: F::Device, what: "body changed after signing", fixture: "device-purchase.json", mutate: |ev, c| { sign(ev, c); body(ev, r#"{"request_id":"p-1","slot":"A1","price":{"minor":1,"currency":"CNY"}}"#); }, expect: "401 bad_signature" },
    Case { f: F::Device, what: "stale timestamp (a replay 10 minutes later)", fixture: "device-purchase.json", mutate: |ev, c| sign_http(ev, &c.secret, now_secs() - 600), expect: "401 stale_timestamp" },
    Case { f: F::Device, what: "timestamp from the future", fixture: "device-purchase.json", mutate: |ev, c| sign_http(ev, &c.secret, now_secs() + 600), expect: "401 stale_timestamp" },
    Case { f: F::Device, what: "timestamp not a number", fixture: "device-purchase.json", mutate: |ev, c| { sign(ev, c); ev["headers"]["x-timestamp"] = json!("yesterday"); }, expect: "401 bad_timestamp" },
    Case { f: F::Device, what: "X-Device-Id differs from the path", fixture: "device-purchase.json", mutate: |ev, c| { sign(ev, c); ev["headers"]["x-device-id"] = json!("vm-other"); }, expect: "403 device_mismatch" },
    Case { f: F::Device, what: "unknown device", fixture: "device-get-session.json", mutate: |ev, c| { path(ev, "/devices/vm-nobody/session"); ev["headers"]["x-device-id"] = json!("vm-nobody"); sign(ev, c); }, expect: "401 unknown_device" },
    Case { f: F::Device, what: "malformed JSON", fixture: "device-purchase.json", mutate: |ev, c| { body(ev, "{\"request_id\": "); sign(ev, c); }, expect: "400 invalid_json" },
    Case { f: F::Device, what: "slot missing", fixture: "device-purchase.json", mutate: |ev, c| { body(ev, r#"{"request_id":"x-1","price":{"minor":100,"currency":"CNY"}}"#); sign(ev, c); }, expect: "400 missing_field" },
    Case { f: F::Device, what: "zero price", fixture: "device-purchase.json", mutate: |ev, c| price(ev, c, json!({"minor": 0, "currency": "CNY"})), expect: "400 invalid_price" },
    Case { f: F::Device, what: "negative price", fixture: "device-purchase.json", mutate: |ev, c| price(ev, c, json!({"minor": -350, "currency": "CNY"})), expect: "400 invalid_price" },
    Case { f: F::Device, what: "price as a float", fixture: "device-purchase.json", mutate: |ev, c| price(ev, c, json!({"minor": 3.5, "currency": "CNY"})), expect: "400 invalid_field" },
    Case { f: F::Device, what: "price in another currency", fixture: "device-purchase.json", mutate: |ev, c| price(ev, c, json!({"minor": 350, "currency": "USD"})), expect: "400 currency_mismatch" },
    Case { f: F::Device, what: "order with a zero price", fixture: "device-order.json", mutate: |ev, c| price(ev, c, json!({"minor": 0, "currency": "CNY"})), expect: "400 invalid_price" },
    Case { f: F::Device, what: "oversized body (100 KiB)", fixture: "device-purchase.json", mutate: |ev, c| { body(ev, &format!("{{\"pad\":\"{}\"}}", "x".repeat(100 * 1024))); sign(ev, c); }, expect: "413 body_too_large" },
    Case { f: F::Device, what: "unknown route", fixture: "device-get-session.json", mutate: |ev, c| { path(ev, &format!("/devices/{DEVICE}/refunds")); sign(ev, c); }, expect: "404 not_found" },
    Case { f: F::Device, what: "wrong method on a route", fixture: "device-get-session.json", mutate: |ev, c| { method(ev, "DELETE"); sign(ev, c); }, expect: "405 method_not_allowed" },
    Case { f: F::Device, what: "end-session naming a session id that is not a string", fixture: "device-end-session.json", mutate: |ev, c| { body(ev, r#"{"session_id": 42}"#); sign(ev, c); }, expect: "400 invalid_field" },
    Case { f: F::Device, what: "end-session naming a session this machine never had", fixture: "device-end-session.json", mutate: |ev, c| { body(ev, r#"{"session_id": "s:NOPE"}"#); sign(ev, c); }, expect: "404 unknown_session" },
    Case { f: F::Device, what: "purchase naming a malformed session id", fixture: "device-purchase.json", mutate: |ev, c| { body(ev, r#"{"request_id":"x-2","slot":"A1","price":{"minor":100,"currency":"CNY"},"session_id":"no spaces allowed"}"#); sign(ev, c); }, expect: "400 invalid_field" },
    Case { f: F::Device, what: "vend result for an unknown purchase", fixture: "device-vend-result.json", mutate: |ev, c| { path(ev, &format!("/devices/{DEVICE}/purchases/p-unknown/result")); sign(ev, c); }, expect: "404 unknown_purchase" },
    // device-api from the queue: refused records are dropped with an alert, never retried forever.
    Case { f: F::DeviceQueue, what: "queued message not JSON", fixture: "device-events-sqs.json", mutate: |ev, _| queued_body(ev, "purchase p-1 please"), expect: "dropped device_event_refused" },
    Case { f: F::DeviceQueue, what: "queued request with a forged signature", fixture: "device-events-sqs.json", mutate: |ev, _| sign_queued(ev, &"ab".repeat(32), now_secs()), expect: "dropped device_event_refused" },
    Case { f: F::DeviceQueue, what: "queued request signed long before the queue got it", fixture: "device-events-sqs.json", mutate: |ev, c| { sign_queued(ev, &c.secret, now_secs() - 900); ev["Records"][0]["attributes"]["SentTimestamp"] = json!((now_secs() * 1000).to_string()); }, expect: "dropped device_event_refused" },
    Case { f: F::DeviceQueue, what: "queued request processed 90 s after the queue got it (freshly signed)", fixture: "device-events-sqs.json", mutate: |ev, c| { sign_queued(ev, &c.secret, now_secs()); ev["Records"][0]["attributes"]["SentTimestamp"] = json!(((now_secs() - 90) * 1000).to_string()); }, expect: "dropped device_event_refused" },
    Case { f: F::DeviceQueue, what: "queued request for an admin route", fixture: "device-events-sqs.json", mutate: |ev, _| queued_body(ev, r#"{"method":"POST","path":"/admin/devices","headers":{},"body":""}"#), expect: "dropped device_event_refused" },
    // qr-provision.
    Case { f: F::Admin, what: "no IAM identity (route deployed without IAM auth)", fixture: "admin-get-device.json", mutate: |ev, _| { if let Some(c) = ev["requestContext"].as_object_mut() { c.remove("authorizer"); } }, expect: "401 unauthorized" },
    Case { f: F::Admin, what: "register: malformed JSON", fixture: "admin-register-device.json", mutate: |ev, _| body(ev, "{"), expect: "400 invalid_json" },
    Case { f: F::Admin, what: "register: device id with a space", fixture: "admin-register-device.json", mutate: |ev, _| body(ev, r#"{"device_id":"vm 2","name":"n","district":"d","currency":"CNY"}"#), expect: "400 invalid_field" },
    Case { f: F::Admin, what: "register: a name with '&' (Alipay echoes it in signed notifications)", fixture: "admin-register-device.json", mutate: |ev, _| body(ev, r#"{"device_id":"vm-2","name":"Tea&more=1","district":"d","currency":"CNY"}"#), expect: "400 invalid_field" },
    Case { f: F::Admin, what: "register: unknown currency", fixture: "admin-register-device.json", mutate: |ev, _| body(ev, r#"{"device_id":"vm-2","name":"n","district":"d","currency":"XXX"}"#), expect: "400 invalid_field" },
    Case { f: F::Admin, what: "register: the same device again", fixture: "admin-register-device.json", mutate: |_, _| {}, expect: "409 device_exists" },
    Case { f: F::Admin, what: "QR code for an unknown device", fixture: "admin-create-qrcode.json", mutate: |ev, _| path(ev, "/admin/devices/vm-nobody/qrcode"), expect: "404 unknown_device" },
    Case { f: F::Admin, what: "unknown session", fixture: "admin-get-session.json", mutate: |ev, _| path(ev, "/admin/sessions/s:0000"), expect: "404 unknown_session" },
    Case { f: F::Admin, what: "oversized body (100 KiB)", fixture: "admin-register-device.json", mutate: |ev, _| body(ev, &"x".repeat(100 * 1024)), expect: "413 body_too_large" },
    Case { f: F::Admin, what: "unknown route", fixture: "admin-get-device.json", mutate: |ev, _| path(ev, "/admin/everything"), expect: "404 not_found" },
    // deadline.
    Case { f: F::Deadline, what: "deadline message not JSON", fixture: "deadline-sqs.json", mutate: |ev, _| queued_body(ev, "settle please"), expect: "dropped deadline_message_refused" },
    Case { f: F::Deadline, what: "deadline for an unknown session", fixture: "deadline-sqs.json", mutate: |ev, _| queued_body(ev, r#"{"session":"s:0000","at":1764122700000}"#), expect: "dropped deadline_message_refused" },
    Case { f: F::Deadline, what: "an event that is neither SQS nor a sweep", fixture: "deadline-sweep.json", mutate: |ev, _| *ev = json!({"action": "settle-everything"}), expect: "error" },
    // refund-executor.
    Case { f: F::Refund, what: "refund message not JSON", fixture: "refund-sqs.json", mutate: |ev, _| queued_body(ev, "refund it"), expect: "dropped refund_message_refused" },
    Case { f: F::Refund, what: "refund that was never decided", fixture: "refund-sqs.json", mutate: |ev, _| queued_body(ev, r#"{"refund_id":"2026112622001400010001-r9","session":"s:2026112622001400010001"}"#), expect: "dropped refund_message_refused" },
];

async fn snapshot(world: &World, f: &Functions, secret: &str) -> Value {
    json!({
        "machine": f.machine_status(secret).await,
        "session": f.admin_session(SESSION).await,
        "refunded": world.sandbox.refunded(TRADE).map(|m| m.minor()),
        "refund_queue": world.peek(&world.refund_queue).await.len(),
    })
}

async fn run(f: &Functions, case: &Case, ctx: &Ctx) -> String {
    let mut ev = fixture(case.fixture);
    (case.mutate)(&mut ev, ctx);
    let sqs = |failed: Vec<String>| {
        if failed.is_empty() {
            "dropped".to_owned()
        } else {
            "retried".to_owned()
        }
    };
    match case.f {
        F::Notify => {
            let a = f.notify(&ev).await;
            if a.text.starts_with("fail: ") || a.text == "success" {
                format!("{} {}", a.status, a.text)
            } else {
                format!("{} {}", a.status, a.code())
            }
        }
        F::Device => {
            let a = f.device(&ev).await;
            format!("{} {}", a.status, a.code())
        }
        F::Admin => {
            let a = f.admin(&ev).await;
            format!("{} {}", a.status, a.code())
        }
        F::DeviceQueue => sqs(f.device_queue(&ev).await),
        F::Refund => sqs(f.refund(&ev).await),
        F::Deadline => match f.deadline(&ev).await {
            Ok(v) => {
                let failed: Vec<String> = v["batchItemFailures"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|x| x["itemIdentifier"].as_str().map(str::to_owned))
                    .collect();
                sqs(failed)
            }
            Err(_) => "error".to_owned(),
        },
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_function_refuses_bad_input_clearly_and_changes_nothing() {
    let world = World::new(&[]).await;
    let f = world.functions().await;
    let reg = f.admin(&fixture("admin-register-device.json")).await;
    assert_eq!(reg.status, 201, "{}", reg.text);
    let ctx = Ctx {
        secret: reg.json()["secret"].as_str().expect("secret").to_owned(),
    };
    assert_eq!(
        f.notify(&fixture("alipay-notify.json")).await.text,
        "success"
    );

    let mut wrong = Vec::new();
    for case in CASES {
        let before = snapshot(&world, &f, &ctx.secret).await;
        let got = run(&f, case, &ctx).await;
        // SQS refusals say which alarm they raise in the log; the record is acknowledged.
        let expected = case
            .expect
            .split(' ')
            .next()
            .filter(|w| *w == "dropped")
            .unwrap_or(case.expect);
        if got != expected {
            wrong.push(format!(
                "{:?} {}: expected {:?}, got {got:?}",
                case.f, case.what, case.expect
            ));
        }
        let after = snapshot(&world, &f, &ctx.secret).await;
        if before != after {
            wrong.push(format!(
                "{:?} {}: state changed\n  before {before}\n  after  {after}",
                case.f, case.what
            ));
        }
    }
    eprintln!("bad-input catalogue: {} cases", CASES.len());
    assert!(
        wrong.is_empty(),
        "{} of {} cases wrong:\n{}",
        wrong.len(),
        CASES.len(),
        wrong.join("\n")
    );
    // The genuine payment is still credited exactly once.
    assert_eq!(
        f.machine_status(&ctx.secret).await["balance"]["minor"],
        1000
    );
}

// --- catalogue and inventory over `vendpay serve` (`docs/contract.md`, “Catalogue and inventory”) ---

/// Who sends an inventory case.
#[derive(Clone, Copy, Debug)]
enum By {
    /// The operator, with the admin token.
    Admin,
    /// Anyone, without a token.
    Nobody,
    /// Machine `vm-inv-a` (mixed, a pay-first session open), signing with its secret.
    A,
    /// Machine `vm-inv-b` (purchase first, idle), signing with its secret.
    B,
    /// Machine `vm-inv-a`'s secret, but claiming to be `vm-inv-b` in `X-Device-Id`.
    AasB,
}

struct InvCase {
    what: &'static str,
    by: By,
    method: &'static str,
    path: String,
    body: Value,
    expect: &'static str,
}

fn inv(
    what: &'static str,
    by: By,
    method: &'static str,
    path: &str,
    body: Value,
    expect: &'static str,
) -> InvCase {
    InvCase {
        what,
        by,
        method,
        path: path.to_owned(),
        body,
        expect,
    }
}

fn money(minor: i64, currency: &str) -> Value {
    json!({"minor": minor, "currency": currency})
}

/// A slot map for `vm-inv-a` with one slot changed from the good one.
fn slots_with(slot: Value) -> Value {
    json!({"slots": [slot, {"slot": "A2", "sku": "water-500", "capacity": 10, "price": money(180, "CNY")}]})
}

#[rustfmt::skip]
fn inventory_cases() -> Vec<InvCase> {
    use By::*;
    let a_slots = "/admin/devices/vm-inv-a/slots";
    let a_restock = "/admin/devices/vm-inv-a/restock";
    let cola = |capacity: Value| json!({"slot": "A1", "sku": "cola-330", "capacity": capacity});
    let many: Vec<Value> = (0..49)
        .map(|i| json!({"slot": format!("S{i}"), "sku": "cola-330", "capacity": 1}))
        .collect();
    let counts = |pairs: &[(&str, Value)]| json!({"slots": pairs.iter().map(|(s, n)| json!({"slot": s, "stock": n})).collect::<Vec<_>>()});
    vec![
        // The catalogue.
        inv(
            "product: sku with a space",
            Admin,
            "PUT",
            "/admin/products/co%20ke",
            json!({"name": "Coke", "price": money(300, "CNY")}),
            "400 invalid_sku",
        ),
        inv(
            "product: sku with '!'",
            Admin,
            "PUT",
            "/admin/products/cola!1",
            json!({"name": "Coke", "price": money(300, "CNY")}),
            "400 invalid_sku",
        ),
        inv(
            "product: sku of 65 characters",
            Admin,
            "PUT",
            &format!("/admin/products/{}", "a".repeat(65)),
            json!({"name": "Coke", "price": money(300, "CNY")}),
            "400 invalid_sku",
        ),
        inv(
            "product: empty name",
            Admin,
            "PUT",
            "/admin/products/cola-330",
            json!({"name": " ", "price": money(300, "CNY")}),
            "400 invalid_name",
        ),
        inv(
            "product: zero price",
            Admin,
            "PUT",
            "/admin/products/cola-330",
            json!({"name": "Cola", "price": money(0, "CNY")}),
            "400 invalid_price",
        ),
        inv(
            "product: negative price",
            Admin,
            "PUT",
            "/admin/products/cola-330",
            json!({"name": "Cola", "price": money(-350, "CNY")}),
            "400 invalid_price",
        ),
        inv(
            "product: no price",
            Admin,
            "PUT",
            "/admin/products/cola-330",
            json!({"name": "Cola"}),
            "400 missing_field",
        ),
        inv(
            "product: empty category",
            Admin,
            "PUT",
            "/admin/products/cola-330",
            json!({"name": "Cola", "price": money(300, "CNY"), "category": ""}),
            "400 invalid_category",
        ),
        inv(
            "product: no admin token",
            Nobody,
            "PUT",
            "/admin/products/cola-330",
            json!({"name": "Cola", "price": money(100, "CNY")}),
            "401 unauthorized",
        ),
        // The slot map.
        inv(
            "slot map: unknown sku",
            Admin,
            "PUT",
            a_slots,
            slots_with(json!({"slot": "A1", "sku": "tea", "capacity": 4})),
            "400 unknown_sku",
        ),
        inv(
            "slot map: sku with '#'",
            Admin,
            "PUT",
            a_slots,
            slots_with(json!({"slot": "A1", "sku": "cola#1", "capacity": 4})),
            "400 invalid_sku",
        ),
        inv(
            "slot map: capacity 0",
            Admin,
            "PUT",
            a_slots,
            slots_with(cola(json!(0))),
            "400 invalid_capacity",
        ),
        inv(
            "slot map: capacity 1001",
            Admin,
            "PUT",
            a_slots,
            slots_with(cola(json!(1001))),
            "400 invalid_capacity",
        ),
        inv(
            "slot map: negative capacity",
            Admin,
            "PUT",
            a_slots,
            slots_with(cola(json!(-4))),
            "400 invalid_capacity",
        ),
        inv(
            "slot map: capacity 2.5",
            Admin,
            "PUT",
            a_slots,
            slots_with(cola(json!(2.5))),
            "400 invalid_capacity",
        ),
        inv(
            "slot map: a slot twice",
            Admin,
            "PUT",
            a_slots,
            json!({"slots": [cola(json!(4)), cola(json!(5))]}),
            "400 duplicate_slot",
        ),
        inv(
            "slot map: 49 slots",
            Admin,
            "PUT",
            a_slots,
            json!({ "slots": many }),
            "400 too_many_slots",
        ),
        inv(
            "slot map: a slot price in USD on a CNY machine",
            Admin,
            "PUT",
            a_slots,
            slots_with(
                json!({"slot": "A1", "sku": "cola-330", "capacity": 4, "price": money(350, "USD")}),
            ),
            "400 currency_mismatch",
        ),
        inv(
            "slot map: a USD product's price on a CNY machine",
            Admin,
            "PUT",
            a_slots,
            slots_with(json!({"slot": "A1", "sku": "usd-tea", "capacity": 4})),
            "400 currency_mismatch",
        ),
        inv(
            "slot map: a zero slot price",
            Admin,
            "PUT",
            a_slots,
            slots_with(
                json!({"slot": "A1", "sku": "cola-330", "capacity": 4, "price": money(0, "CNY")}),
            ),
            "400 invalid_price",
        ),
        inv(
            "slot map: no slots field",
            Admin,
            "PUT",
            a_slots,
            json!({}),
            "400 missing_field",
        ),
        inv(
            "slot map: unknown machine",
            Admin,
            "PUT",
            "/admin/devices/vm-nobody/slots",
            slots_with(cola(json!(4))),
            "404 unknown_device",
        ),
        // Restocks.
        inv(
            "restock: stock above capacity",
            Admin,
            "POST",
            a_restock,
            counts(&[("A1", json!(5))]),
            "400 invalid_stock",
        ),
        inv(
            "restock: negative stock",
            Admin,
            "POST",
            a_restock,
            counts(&[("A1", json!(-1))]),
            "400 invalid_stock",
        ),
        inv(
            "restock: stock 1.5",
            Admin,
            "POST",
            a_restock,
            counts(&[("A1", json!(1.5))]),
            "400 invalid_stock",
        ),
        inv(
            "restock: an unknown slot",
            Admin,
            "POST",
            a_restock,
            counts(&[("B9", json!(1))]),
            "400 unknown_slot",
        ),
        inv(
            "restock: a good slot with an unknown one (refused whole)",
            Admin,
            "POST",
            a_restock,
            counts(&[("A2", json!(3)), ("B9", json!(1))]),
            "400 unknown_slot",
        ),
        inv(
            "restock: a good slot with one above capacity (refused whole)",
            Admin,
            "POST",
            a_restock,
            counts(&[("A2", json!(3)), ("A1", json!(9))]),
            "400 invalid_stock",
        ),
        inv(
            "restock: a slot twice",
            Admin,
            "POST",
            a_restock,
            counts(&[("A1", json!(1)), ("A1", json!(2))]),
            "400 duplicate_slot",
        ),
        inv(
            "restock: a machine without a slot map",
            Admin,
            "POST",
            "/admin/devices/vm-inv-bare/restock",
            counts(&[("A1", json!(1))]),
            "400 no_slot_map",
        ),
        inv(
            "restock: unknown machine",
            Admin,
            "POST",
            "/admin/devices/vm-nobody/restock",
            counts(&[("A1", json!(1))]),
            "404 unknown_device",
        ),
        inv(
            "inventory: unknown machine",
            Admin,
            "GET",
            "/admin/devices/vm-nobody/inventory",
            Value::Null,
            "404 unknown_device",
        ),
        inv(
            "restocking round: below=0",
            Admin,
            "GET",
            "/admin/inventory?below=0",
            Value::Null,
            "400 invalid_threshold",
        ),
        inv(
            "restocking round: below=1.5",
            Admin,
            "GET",
            "/admin/inventory?below=1.5",
            Value::Null,
            "400 invalid_threshold",
        ),
        inv(
            "restocking round: below=abc",
            Admin,
            "GET",
            "/admin/inventory?below=abc",
            Value::Null,
            "400 invalid_threshold",
        ),
        // Machines: sales.
        inv(
            "purchase: another price than the slot's",
            A,
            "POST",
            "/devices/vm-inv-a/purchases",
            json!({"request_id": "bad-1", "slot": "A1", "price": money(300, "CNY")}),
            "400 price_mismatch",
        ),
        inv(
            "purchase: the slot's price in another currency",
            A,
            "POST",
            "/devices/vm-inv-a/purchases",
            json!({"request_id": "bad-2", "slot": "A1", "price": money(350, "USD")}),
            "400 currency_mismatch",
        ),
        inv(
            "purchase: a slot outside the slot map without a price",
            A,
            "POST",
            "/devices/vm-inv-a/purchases",
            json!({"request_id": "bad-3", "slot": "Z9"}),
            "400 missing_price",
        ),
        inv(
            "order: another price than the slot's",
            B,
            "POST",
            "/devices/vm-inv-b/orders",
            json!({"order_id": "bad-4", "slot": "B2", "price": money(100, "CNY")}),
            "400 price_mismatch",
        ),
        inv(
            "order: a sold-out slot",
            B,
            "POST",
            "/devices/vm-inv-b/orders",
            json!({"order_id": "bad-5", "slot": "B1"}),
            "409 sold_out",
        ),
        // Machines: their own count.
        inv(
            "machine count: stock above capacity",
            A,
            "POST",
            "/devices/vm-inv-a/inventory",
            counts(&[("A1", json!(5))]),
            "400 invalid_stock",
        ),
        inv(
            "machine count: an unknown slot",
            A,
            "POST",
            "/devices/vm-inv-a/inventory",
            counts(&[("B9", json!(1))]),
            "400 unknown_slot",
        ),
        inv(
            "machine count: another machine's inventory",
            A,
            "POST",
            "/devices/vm-inv-b/inventory",
            counts(&[("B2", json!(0))]),
            "403 device_mismatch",
        ),
        inv(
            "machine count: another machine's id with this machine's secret",
            AasB,
            "POST",
            "/devices/vm-inv-b/inventory",
            counts(&[("B2", json!(0))]),
            "401 bad_signature",
        ),
    ]
}

/// What the catalogue and inventory refusals must leave alone.
async fn inventory_snapshot(h: &vendpay_e2e::Harness, a: &MachineKeys, b: &MachineKeys) -> Value {
    let bare = h
        .admin("GET", "/admin/devices/vm-inv-bare/inventory", None)
        .await;
    json!({
        "products": h.admin("GET", "/admin/products", None).await.body,
        "a": h.inventory("vm-inv-a").await,
        "b": h.inventory("vm-inv-b").await,
        "bare": [bare.status, bare.body],
        "a_session": h.session(a).await,
        "b_session": h.session(b).await,
        "round": h.restocking_round(Some(1.0)).await,
    })
}

async fn inventory_bad_input(aws: bool) {
    use vendpay_e2e::{plan, Harness, SlotPlan};
    let h = Harness::start_on(aws, &[]).await;
    h.put_product("cola-330", "Cola 330 ml", 350).await;
    h.put_product("water-500", "Water 500 ml", 200).await;
    h.client
        .put_product("usd-tea", "Tea", &money(300, "USD"), None)
        .await
        .expect("a product priced in USD");
    let a = h.register("vm-inv-a", "mixed").await;
    let b = h.register("vm-inv-b", "purchase_first").await;
    h.register("vm-inv-bare", "pay_first").await;
    h.set_slots(
        "vm-inv-a",
        &[
            plan("A1", "cola-330", 4),
            SlotPlan {
                price: Some(vendpay_e2e::cny(180)),
                ..plan("A2", "water-500", 10)
            },
        ],
    )
    .await;
    h.restock("vm-inv-a", &[("A1", 2), ("A2", 10)]).await;
    h.set_slots(
        "vm-inv-b",
        &[plan("B1", "water-500", 5), plan("B2", "cola-330", 5)],
    )
    .await;
    h.restock("vm-inv-b", &[("B2", 3)]).await;
    h.pay(&a, 1000).await;
    vendpay_e2e::wait_for(
        "vm-inv-a's session to open",
        std::time::Duration::from_secs(20),
        async || (h.session(&a).await["state"] == "open").then_some(()),
    )
    .await;

    let cases = inventory_cases();
    let mut wrong = Vec::new();
    for case in &cases {
        let before = inventory_snapshot(&h, &a, &b).await;
        let body = (!case.body.is_null()).then_some(&case.body);
        let answer = match case.by {
            By::Admin => h.client.admin(case.method, &case.path, body).await,
            By::Nobody => {
                h.client
                    .call(case.method, &case.path, &[], case.body.to_string())
                    .await
            }
            By::A => h.client.device(&a, case.method, &case.path, body).await,
            By::B => h.client.device(&b, case.method, &case.path, body).await,
            By::AasB => {
                let forged = MachineKeys {
                    id: b.id.clone(),
                    secret: a.secret.clone(),
                    qrcode: String::new(),
                };
                h.client
                    .device(&forged, case.method, &case.path, body)
                    .await
            }
        }
        .expect("HTTP");
        let got = format!(
            "{} {}",
            answer.status,
            answer.body["error"]["code"].as_str().unwrap_or("-")
        );
        if got != case.expect {
            wrong.push(format!(
                "{:?} {}: expected {:?}, got {got:?} ({})",
                case.by, case.what, case.expect, answer.body
            ));
        } else if answer.body["error"]["message"]
            .as_str()
            .is_none_or(str::is_empty)
        {
            wrong.push(format!(
                "{:?} {}: no message: {}",
                case.by, case.what, answer.body
            ));
        }
        let after = inventory_snapshot(&h, &a, &b).await;
        if before != after {
            wrong.push(format!(
                "{:?} {}: state changed\n  before {before}\n  after  {after}",
                case.by, case.what
            ));
        }
    }
    eprintln!(
        "inventory bad-input catalogue ({}): {} cases",
        if aws { "aws" } else { "sqlite" },
        cases.len()
    );
    assert!(
        wrong.is_empty(),
        "{} of {} cases wrong:\n{}",
        wrong.len(),
        cases.len(),
        wrong.join("\n")
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inventory_routes_refuse_bad_input_precisely_and_change_nothing() {
    inventory_bad_input(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inventory_routes_refuse_bad_input_precisely_and_change_nothing_on_aws() {
    inventory_bad_input(true).await;
}
