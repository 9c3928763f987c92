//! The bad-input catalogue: what each function refuses, one case per line, with the status and error
//! code it answers — and proof that nothing changed (the machine's session, the session's ledger, the
//! refunds at Alipay and the queues read the same before and after every case).
//!
//! A genuine, verified payment that cannot be credited (wrong currency, machine busy) is not bad input:
//! it is refunded in full (see `docs/contract.md`, “Money rules”) and tested elsewhere.
//!
//! Run with `scripts/with-moto cargo test -p vendpay-e2e --test bad_input`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code asserts by panicking

mod lambda;

use lambda::*;
use serde_json::{json, Value};

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
