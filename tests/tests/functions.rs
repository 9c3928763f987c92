//! Every fixture of `events/` through its function's handler, against moto and the Alipay sandbox:
//! a whole pay-first session on a machine with a slot map (catalogue, planogram, refill, the machine's
//! own count, the restocking round), a queued device request, a refund, an order and the sweep — and
//! the AWS calls each function made, held to its `aws-calls.json`; and the DynamoDB requests of one
//! purchase with and without a slot map.
//!
//! Run with `scripts/with-moto cargo test -p vendpay-e2e --test functions`.
//! `VENDPAY_WRITE_FIXTURES=1` regenerates `events/alipay-notify.json` (signed with the committed test
//! Alipay key); otherwise the test checks the committed fixture is exactly that signed request.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code asserts by panicking

mod lambda;

use lambda::*;
use serde_json::{json, Value};

#[test]
fn the_notification_fixture_is_the_signed_request() {
    let expected = notification_event();
    let path = root().join("events/alipay-notify.json");
    if std::env::var("VENDPAY_WRITE_FIXTURES").is_ok() {
        let text = serde_json::to_string_pretty(&expected).expect("json") + "\n";
        std::fs::write(&path, text).expect("write fixture");
    }
    assert_eq!(
        fixture("alipay-notify.json"),
        expected,
        "events/alipay-notify.json is stale: rerun with VENDPAY_WRITE_FIXTURES=1"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_fixture_runs_through_its_function() {
    let world = World::new(&[]).await;
    let f = world.functions().await;

    // Operator: register the machine (IAM-authorised event), its QR code at the sandbox, its label.
    let reg = f.admin(&fixture("admin-register-device.json")).await;
    assert_eq!(reg.status, 201, "{}", reg.text);
    let secret = reg.json()["secret"]
        .as_str()
        .expect("secret shown once")
        .to_owned();
    let dev = f.admin(&fixture("admin-get-device.json")).await;
    assert_eq!(dev.status, 200, "{}", dev.text);
    assert!(
        dev.json().get("secret").is_none(),
        "the secret is shown only once"
    );
    let qr = f.admin(&fixture("admin-create-qrcode.json")).await;
    assert_eq!(qr.status, 200, "{}", qr.text);
    let code = qr.json()["qrcode"].as_str().unwrap_or_default().to_owned();
    assert!(code.starts_with("http"), "{}", qr.text);
    let again = f.admin(&fixture("admin-create-qrcode.json")).await;
    assert_eq!(
        again.json()["qrcode"],
        json!(code),
        "QR code creation is idempotent"
    );
    let label = f.admin(&fixture("admin-label.json")).await;
    assert_eq!(label.status, 200);
    assert!(
        label.text.starts_with("<svg") || label.text.contains("<svg"),
        "{}",
        label.text
    );
    assert!(label.text.contains(DEVICE) && label.text.contains("Lobby drinks"));

    // Operator: the catalogue, the machine's slot map (A1 at the product's 3.50, A2 at its own 1.50)
    // and a refill.
    let a = f.admin(&fixture("admin-put-product.json")).await;
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(
        a.json(),
        json!({"product": {"sku": "cola-330", "name": "Cola 330ml", "price": cny(350), "category": "drinks"}})
    );
    let a = f.admin(&fixture("admin-list-products.json")).await;
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(a.json()["products"][0]["sku"], "cola-330", "{}", a.text);
    let a = f.admin(&fixture("admin-set-slots.json")).await;
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(stock(&a.json(), "A1"), (0, 0), "{}", a.text);
    assert_eq!(a.json()["slots"][1]["price"], cny(150), "{}", a.text);
    let a = f.admin(&fixture("admin-restock.json")).await;
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(
        (stock(&a.json(), "A1"), stock(&a.json(), "A2")),
        ((10, 0), (2, 0))
    );

    // Alipay: the signed notification, twice — acknowledged both times, credited once.
    let note = fixture("alipay-notify.json");
    for _ in 0..2 {
        let a = f.notify(&note).await;
        assert_eq!((a.status, a.text.as_str()), (200, "success"));
    }
    let status = f.machine_status(&secret).await;
    assert_eq!(status["state"], "open", "{status}");
    assert_eq!(status["balance"], json!({"minor": 1000, "currency": "CNY"}));
    // Its deadline went to the deadline queue, delayed 300 s (so not visible yet).
    let notify_calls = f
        .proxies
        .get("alipay-notify")
        .map(Proxy::calls)
        .unwrap_or_default();
    assert!(
        notify_calls.contains("sqs:SendMessage"),
        "the payment scheduled its deadline: {notify_calls:?}"
    );

    // Machine over HTTP: buy 3.50, report it delivered.
    let mut buy = fixture("device-purchase.json");
    sign_http(&mut buy, &secret, now_secs());
    let a = f.device(&buy).await;
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(a.json()["decision"], "approved");
    assert_eq!(a.json()["balance"]["minor"], 650);
    assert_eq!(
        stock(&f.inventory().await, "A1"),
        (10, 1),
        "one item promised"
    );
    let mut vend = fixture("device-vend-result.json");
    sign_http(&mut vend, &secret, now_secs());
    let a = f.device(&vend).await;
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(stock(&f.inventory().await, "A1"), (9, 0), "delivered");

    // Machine through the queue: buy 1.50 (signed; verified against the time the queue received it).
    let mut queued = fixture("device-events-sqs.json");
    sign_queued(&mut queued, &secret, now_secs());
    assert_eq!(f.device_queue(&queued).await, Vec::<String>::new());
    let status = f.machine_status(&secret).await;
    assert_eq!(status["balance"]["minor"], 500, "{status}");
    assert_eq!(status["held"]["minor"], 150, "{status}");

    // The machine counts its slots (signed like every machine request): A1 holds 8, not 9.
    let mut count = fixture("device-inventory.json");
    sign_http(&mut count, &secret, now_secs());
    let a = f.device(&count).await;
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(
        (stock(&a.json(), "A1"), stock(&a.json(), "A2")),
        ((8, 0), (2, 1)),
        "{}",
        a.text
    );
    let a = f.admin(&fixture("admin-get-inventory.json")).await;
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(stock(&a.json(), "A1"), (8, 0), "{}", a.text);
    // The restocking round: A2 has 1 of 8 available (≤ 25 %), A1 is fine.
    let a = f.admin(&fixture("admin-fleet-inventory.json")).await;
    assert_eq!(a.status, 200, "{}", a.text);
    let round = a.json();
    assert_eq!(round["districts"][0]["district"], "Xuhui", "{round}");
    let machine = &round["districts"][0]["machines"][0];
    assert_eq!(machine["device_id"], DEVICE, "{round}");
    assert_eq!(machine["location"], "Building A, 1F", "{round}");
    assert_eq!(
        machine["slots"]
            .as_array()
            .map(|ls| ls.iter().map(|l| l["slot"].clone()).collect::<Vec<_>>()),
        Some(vec![json!("A2")]),
        "{round}"
    );

    // The deadline message arrives early (the session is not due): a no-op, acknowledged.
    assert_eq!(
        f.deadline(&fixture("deadline-sqs.json"))
            .await
            .map(|v| v["batchItemFailures"].clone()),
        Ok(json!([]))
    );
    assert_eq!(f.machine_status(&secret).await["state"], "open");

    // The customer ends the session: the free 5.00 is refunded at once (the 1.50 hold waits).
    let mut end = fixture("device-end-session.json");
    sign_http(&mut end, &secret, now_secs());
    let a = f.device(&end).await;
    assert_eq!(a.status, 200, "{}", a.text);
    let refunds = world.peek(&world.refund_queue).await;
    assert!(
        refunds
            .iter()
            .any(|m| m["refund_id"] == format!("{TRADE}-r1")),
        "the refund was queued at once: {refunds:?}"
    );

    // The refund executor sends it to the sandbox: the first answer is UNKNOW (the refund is made but
    // Alipay will not say), so the record is failed for redelivery, with a backoff; the redelivery
    // sends the same id and amount and is recorded.
    world
        .sandbox
        .push_gateway_fault(vendpay_alipay_sandbox::GatewayFault::Unknow);
    assert_eq!(
        f.refund(&fixture("refund-sqs.json")).await,
        vec!["refund-fixture-1".to_owned()]
    );
    let executor_calls = f
        .proxies
        .get("refund-executor")
        .map(Proxy::calls)
        .unwrap_or_default();
    assert!(
        executor_calls.contains("sqs:ChangeMessageVisibility"),
        "the retry was delayed: {executor_calls:?}"
    );
    assert_eq!(
        f.refund(&fixture("refund-sqs.json")).await,
        Vec::<String>::new()
    );
    let detail = f.admin_session(SESSION).await;
    let r1 = detail["refunds"]
        .as_array()
        .and_then(|rs| rs.iter().find(|r| r["refund_id"] == format!("{TRADE}-r1")))
        .cloned()
        .unwrap_or(Value::Null);
    assert_eq!(r1["status"], "succeeded", "{detail}");
    assert_eq!(r1["amount"]["minor"], 500, "{detail}");
    // The same message again (SQS delivers at least once): nothing more is refunded.
    assert_eq!(
        f.refund(&fixture("refund-sqs.json")).await,
        Vec::<String>::new()
    );
    assert_eq!(
        world.sandbox.refunded(TRADE).map(|m| m.minor()),
        Some(500),
        "Alipay refunded 5.00 once"
    );

    // The admin session fixture shows the whole ledger.
    let a = f.admin(&fixture("admin-get-session.json")).await;
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(a.json()["session_id"], SESSION);

    // The sweep runs (nothing overdue yet) and reports.
    let report = f
        .deadline(&fixture("deadline-sweep.json"))
        .await
        .expect("sweep");
    assert!(report.get("deadlines_settled").is_some(), "{report}");

    // Purchase first: the settling session does not block an order.
    let mut order = fixture("device-order.json");
    sign_http(&mut order, &secret, now_secs());
    let a = f.device(&order).await;
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(a.json()["state"], "awaiting_payment", "{}", a.text);

    // Each function called only what its manifest (and so its IAM policy) allows.
    assert_calls_listed(&f);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_due_deadline_refunds_and_long_windows_go_through_the_scheduler() {
    // A 1 s pay-first window: the deadline message settles the session and queues its refund. A
    // 20-minute order window: the order's deadline is beyond SQS's 15 minutes, so device-api creates an
    // EventBridge Scheduler schedule.
    let world = World::new(&[
        ("PAY_FIRST_WINDOW_SECS", "1"),
        ("ORDER_PAYMENT_WINDOW_SECS", "1200"),
    ])
    .await;
    let f = world.functions().await;
    let reg = f.admin(&fixture("admin-register-device.json")).await;
    let secret = reg.json()["secret"].as_str().expect("secret").to_owned();
    assert_eq!(
        f.notify(&fixture("alipay-notify.json")).await.text,
        "success"
    );
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
    let out = f
        .deadline(&fixture("deadline-sqs.json"))
        .await
        .expect("deadline");
    assert_eq!(out["batchItemFailures"], json!([]));
    let detail = f.admin_session(SESSION).await;
    assert_eq!(detail["refunds"][0]["amount"]["minor"], 1000, "{detail}");
    assert!(world
        .peek(&world.refund_queue)
        .await
        .iter()
        .any(|m| m["refund_id"] == format!("{TRADE}-r1")));

    let mut order = fixture("device-order.json");
    sign_http(&mut order, &secret, now_secs());
    let a = f.device(&order).await;
    assert_eq!(a.status, 200, "{}", a.text);
    let calls = f
        .proxies
        .get("device-api")
        .map(Proxy::calls)
        .unwrap_or_default();
    assert!(calls.contains("scheduler:CreateSchedule"), "{calls:?}");
    let _ = aws_sdk_scheduler::Client::new(&world.admin_sdk);
    assert_calls_listed(&f);
}

/// What each function's code reads is exactly what the SAM template sets (infra/function-env.json,
/// which scripts/check-infra holds the template to). `RUST_LOG` is read by the log subscriber.
#[test]
fn the_template_sets_exactly_what_each_function_reads() {
    let path = root().join("infra/function-env.json");
    let doc: Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("function-env.json"))
            .expect("function-env.json is JSON");
    let reads: [(&str, Vec<&str>); 6] = [
        ("alipay-notify", alipay_notify::settings()),
        ("device-api", device_api::settings()),
        ("qr-provision", qr_provision::settings()),
        ("deadline", deadline::settings()),
        ("refund-executor", refund_executor::settings()),
        ("analytics-export", analytics_export::settings()),
    ];
    for (name, settings) in reads {
        let mut template: Vec<String> = doc["functions"][name]
            .as_array()
            .unwrap_or_else(|| panic!("{name} missing from infra/function-env.json"))
            .iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .filter(|v| v != "RUST_LOG")
            .collect();
        let mut code: Vec<String> = settings
            .iter()
            .map(|s| (*s).to_owned())
            // ADMIN_TOKEN is for deployments without IAM auth; the template uses IAM.
            .filter(|s| s != "ADMIN_TOKEN")
            .collect();
        template.sort();
        code.sort();
        assert_eq!(
            template, code,
            "{name}: infra/function-env.json vs what {name}::settings() reads"
        );
        if name == "analytics-export" {
            // Its one setting names the delivery stream: never a secret reference, so it needs no
            // place in the ledger functions' groups (which name a setting whose reference fails).
            continue;
        }
        let known = vendpay_lambda::setting_groups::names(vendpay_lambda::setting_groups::ALL);
        for s in &settings {
            assert!(
                known.contains(s),
                "{name} reads {s}, which vendpay_lambda::setting_groups::ALL does not list"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_command_processed_too_late_is_refused_and_changes_nothing() {
    let world = World::new(&[]).await;
    let f = world.functions().await;
    let reg = f.admin(&fixture("admin-register-device.json")).await;
    assert_eq!(reg.status, 201, "{}", reg.text);
    let secret = reg.json()["secret"].as_str().expect("secret").to_owned();
    assert_eq!(
        f.notify(&fixture("alipay-notify.json")).await.text,
        "success"
    );
    let queued_at = |ago: i64| {
        let mut ev = fixture("device-events-sqs.json");
        sign_queued(&mut ev, &secret, now_secs());
        ev["Records"][0]["attributes"]["SentTimestamp"] =
            json!(((now_secs() - ago) * 1000).to_string());
        ev["Records"][0]["attributes"]["ApproximateReceiveCount"] = json!("2");
        ev
    };

    // A purchase the queue received 61 s ago (a backlog, or a redelivery): it may have been meant for
    // a customer who has gone. Refused for good — acknowledged, not retried — and nothing is held.
    assert_eq!(f.device_queue(&queued_at(61)).await, Vec::<String>::new());
    let status = f.machine_status(&secret).await;
    assert_eq!(status["balance"]["minor"], 1000, "{status}");
    assert_eq!(status["held"]["minor"], 0, "{status}");

    // The same purchase 30 s after the queue received it is on time.
    assert_eq!(f.device_queue(&queued_at(30)).await, Vec::<String>::new());
    let status = f.machine_status(&secret).await;
    assert_eq!(status["balance"]["minor"], 850, "{status}");
    assert_eq!(status["held"]["minor"], 150, "{status}");

    // Its vend result arrives 5 minutes after the queue got it (a backlog): a vend result names its
    // purchase and reports a fact, so it is applied, never refused as late — refusing "delivered"
    // would refund an item the customer has.
    let mut ev = fixture("device-events-sqs.json");
    let mut q: Value = serde_json::from_str(ev["Records"][0]["body"].as_str().unwrap_or_default())
        .expect("queued");
    q["path"] = json!(format!("/devices/{DEVICE}/purchases/q-1/result"));
    q["body"] = json!(r#"{"delivered": true}"#);
    ev["Records"][0]["body"] = json!(q.to_string());
    // Signed when it was sent; the queue received it then (SentTimestamp = the signature's time).
    sign_queued(&mut ev, &secret, now_secs() - 300);
    assert_eq!(f.device_queue(&ev).await, Vec::<String>::new());
    let status = f.machine_status(&secret).await;
    assert_eq!(status["balance"]["minor"], 850, "{status}");
    assert_eq!(
        status["held"]["minor"], 0,
        "delivered: the hold is spent: {status}"
    );
    assert_calls_listed(&f);
}

#[test]
fn held_back_device_events_are_tried_before_the_queue_dead_letters_them() {
    // vendpay_lambda::sqs tries a held-back record once it is one delivery short of this limit; a
    // higher limit in the template would give up order sooner than needed, a lower one would
    // dead-letter it untried.
    let template = std::fs::read_to_string(root().join("infra/template.yaml")).expect("template");
    let limit = template
        .lines()
        .skip_while(|l| l.trim() != "DeviceEventsQueue:")
        .find_map(|l| l.trim().strip_prefix("maxReceiveCount:"))
        .and_then(|v| v.trim().parse::<u32>().ok());
    assert_eq!(limit, Some(vendpay_lambda::sqs::MAX_RECEIVE_COUNT));
}

/// The machine's purchase event for `request_id` on `slot`, with `price` (minor CNY) or none.
fn purchase(secret: &str, request_id: &str, slot: &str, price: Option<u64>) -> Value {
    let mut ev = fixture("device-purchase.json");
    let mut body = json!({"request_id": request_id, "slot": slot});
    if let Some(p) = price {
        body["price"] = cny(p);
    }
    ev["body"] = json!(body.to_string());
    sign_http(&mut ev, secret, now_secs());
    ev
}

/// The DynamoDB requests that write.
fn writes(requests: &[String]) -> Vec<&str> {
    requests
        .iter()
        .map(String::as_str)
        .filter(|r| {
            matches!(
                *r,
                "dynamodb:TransactWriteItems"
                    | "dynamodb:PutItem"
                    | "dynamodb:UpdateItem"
                    | "dynamodb:DeleteItem"
                    | "dynamodb:BatchWriteItem"
            )
        })
        .collect()
}

fn sorted_dynamodb(requests: &[String]) -> Vec<&str> {
    let mut out: Vec<&str> = requests
        .iter()
        .map(String::as_str)
        .filter(|r| r.starts_with("dynamodb:"))
        .collect();
    out.sort_unstable();
    out
}

/// The purchase hot path on device-api (issue 15, "Performance"): a slot map adds the slot row to the
/// purchase's one write, never a second write; a slot at its product's price reads the product (one
/// `GetItem`), a slot with its own price reads nothing more than a machine without a slot map.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purchase_is_one_write_with_or_without_a_slot_map() {
    let world = World::new(&[]).await;
    let f = world.functions().await;
    let reg = f.admin(&fixture("admin-register-device.json")).await;
    assert_eq!(reg.status, 201, "{}", reg.text);
    let secret = reg.json()["secret"].as_str().expect("secret").to_owned();
    assert_eq!(
        f.notify(&fixture("alipay-notify.json")).await.text,
        "success"
    );
    let device = f.proxy("device-api");

    // A machine without a slot map: the machine names the price.
    let (a, no_map) = device
        .during(f.device(&purchase(&secret, "m-1", "A1", Some(350))))
        .await;
    assert_eq!(a.json()["decision"], "approved", "{}", a.text);

    for name in [
        "admin-put-product.json",
        "admin-set-slots.json",
        "admin-restock.json",
    ] {
        let a = f.admin(&fixture(name)).await;
        assert_eq!(a.status, 200, "{name}: {}", a.text);
    }
    // A1 sells at its product's price, A2 at its own; the machine omits the price.
    let (a, product_price) = device
        .during(f.device(&purchase(&secret, "m-2", "A1", None)))
        .await;
    assert_eq!(a.json()["decision"], "approved", "{}", a.text);
    let (a, own_price) = device
        .during(f.device(&purchase(&secret, "m-3", "A2", None)))
        .await;
    assert_eq!(a.json()["decision"], "approved", "{}", a.text);
    assert_eq!(a.json()["balance"]["minor"], 1000 - 350 - 350 - 150);
    assert_eq!(
        (
            stock(&f.inventory().await, "A1"),
            stock(&f.inventory().await, "A2")
        ),
        ((10, 1), (2, 1))
    );
    eprintln!("device-api requests of one purchase:");
    for (what, r) in [
        ("machine without a slot map", &no_map),
        ("slot map, slot at its product's price", &product_price),
        ("slot map, slot with its own price", &own_price),
    ] {
        eprintln!("  {what}: {} requests", r.ops.len());
        for d in &r.detailed {
            eprintln!("    {d}");
        }
    }
    let (no_map, product_price, own_price) = (no_map.ops, product_price.ops, own_price.ops);

    for (what, requests) in [
        ("no slot map", &no_map),
        ("product's price", &product_price),
        ("own price", &own_price),
    ] {
        assert_eq!(
            writes(requests),
            vec!["dynamodb:TransactWriteItems"],
            "{what}: one write, a transaction: {requests:?}"
        );
    }
    assert_eq!(
        sorted_dynamodb(&own_price),
        sorted_dynamodb(&no_map),
        "a slot with its own price reads nothing more"
    );
    let mut plus_product = sorted_dynamodb(&no_map);
    plus_product.push("dynamodb:GetItem");
    plus_product.sort_unstable();
    assert_eq!(
        sorted_dynamodb(&product_price),
        plus_product,
        "a slot at its product's price reads the product, once"
    );

    // An operator drops A2 from the slot map: not while m-3's item is promised (409), then, once it
    // is vended, its row is deleted in qr-provision's transaction.
    let mut one_slot = fixture("admin-set-slots.json");
    one_slot["body"] =
        json!(json!({"slots": [{"slot": "A1", "sku": "cola-330", "capacity": 10}]}).to_string());
    let a = f.admin(&one_slot).await;
    assert_eq!(a.status, 409, "{}", a.text);
    assert_eq!(a.json()["error"]["code"], "slot_reserved", "{}", a.text);
    let mut vend = fixture("device-vend-result.json");
    let path = "/devices/vm-fixture-1/purchases/m-3/result";
    vend["rawPath"] = json!(path);
    vend["requestContext"]["http"]["path"] = json!(path);
    vend["pathParameters"]["request_id"] = json!("m-3");
    sign_http(&mut vend, &secret, now_secs());
    let a = f.device(&vend).await;
    assert_eq!(a.status, 200, "{}", a.text);
    let a = f.admin(&one_slot).await;
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(
        a.json()["slots"].as_array().map(Vec::len),
        Some(1),
        "{}",
        a.text
    );
    assert!(
        f.proxy("qr-provision")
            .calls()
            .contains("dynamodb:DeleteItem"),
        "{:?}",
        f.proxy("qr-provision").log().detailed
    );
    assert_calls_listed(&f);
}

/// Moto's server checks no signature, but routes a request to S3, and as a signed one (an unsigned
/// one is anonymous and may not read objects), by its credential scope: path-style requests with this
/// header are enough to read back what Firehose wrote, without an S3 SDK in the tests.
const MOTO_S3_AUTH: &str = "AWS4-HMAC-SHA256 Credential=testing/20261126/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=0";

/// A bucket on moto's S3.
async fn moto_bucket(prefix: &str) -> String {
    let bucket = vendpay_test_kit::moto::unique(prefix);
    let url = format!("{}/{bucket}", vendpay_test_kit::moto::endpoint());
    let res = reqwest::Client::new()
        .put(&url)
        .header("authorization", MOTO_S3_AUTH)
        .send()
        .await
        .expect("create bucket");
    assert!(res.status().is_success(), "create bucket: {}", res.status());
    bucket
}

/// Every line of every object in `bucket`, as JSON, sorted by fact id (objects are named by the time
/// Firehose wrote them, to the second: two deliveries in one second have no order).
async fn delivered_rows(bucket: &str) -> Vec<Value> {
    let http = reqwest::Client::new();
    let base = format!("{}/{bucket}", vendpay_test_kit::moto::endpoint());
    let listing = http
        .get(format!("{base}?list-type=2"))
        .header("authorization", MOTO_S3_AUTH)
        .send()
        .await
        .expect("list")
        .text()
        .await
        .expect("listing");
    let keys: Vec<&str> = listing
        .split("<Key>")
        .skip(1)
        .filter_map(|k| k.split("</Key>").next())
        .collect();
    assert!(!keys.is_empty(), "nothing delivered: {listing}");
    let mut rows = Vec::new();
    for key in keys {
        assert!(key.starts_with("facts/"), "{key}: the destination's prefix");
        let body = http
            .get(format!("{base}/{key}"))
            .header("authorization", MOTO_S3_AUTH)
            .send()
            .await
            .expect("get object")
            .text()
            .await
            .expect("object");
        assert!(body.ends_with('\n'), "newline-terminated records: {body:?}");
        for line in body.lines() {
            rows.push(serde_json::from_str::<Value>(line).expect("one JSON object per line"));
        }
    }
    rows.sort_by(|a, b| a["id"].as_str().cmp(&b["id"].as_str()));
    rows
}

/// A Firehose delivery stream on moto writing straight to `bucket` under `facts/`.
async fn moto_delivery_stream(bucket: &str) -> String {
    let name = vendpay_test_kit::moto::unique("vp-facts");
    let admin = vendpay_test_kit::moto::sdk_for(&vendpay_test_kit::moto::endpoint()).await;
    aws_sdk_firehose::Client::new(&admin)
        .create_delivery_stream()
        .delivery_stream_name(&name)
        .delivery_stream_type(aws_sdk_firehose::types::DeliveryStreamType::DirectPut)
        .extended_s3_destination_configuration(
            aws_sdk_firehose::types::ExtendedS3DestinationConfiguration::builder()
                .bucket_arn(format!("arn:aws:s3:::{bucket}"))
                .role_arn("arn:aws:iam::123456789012:role/firehose")
                .prefix("facts/")
                .build()
                .expect("destination"),
        )
        .send()
        .await
        .expect("create delivery stream");
    name
}

fn stream_event(v: &Value) -> analytics_export::stream::StreamEvent {
    serde_json::from_value(v.clone()).expect("a DynamoDB stream event")
}

fn stream_failures(r: &analytics_export::stream::StreamBatchResponse) -> Vec<String> {
    r.batch_item_failures
        .iter()
        .map(|f| f.item_identifier.clone())
        .collect()
}

/// The fixture's INSERT facts as the Glue table's rows: every column, null where the fact has none.
fn expected_rows(event: &Value) -> Vec<Value> {
    let text = event["Records"][0]["dynamodb"]["NewImage"]["facts"]["S"]
        .as_str()
        .expect("the fixture's first record holds the facts");
    let facts: Vec<Value> = serde_json::from_str(text).expect("facts JSON");
    let mut rows: Vec<Value> = facts
        .iter()
        .map(|f| {
            Value::Object(
                analytics_export::rows::COLUMNS
                    .iter()
                    .map(|c| ((*c).to_owned(), f.get(*c).cloned().unwrap_or(Value::Null)))
                    .collect(),
            )
        })
        .collect();
    rows.sort_by(|a, b| a["id"].as_str().cmp(&b["id"].as_str()));
    rows
}

/// analytics-export on moto's Firehose with an S3 destination: the fixture's INSERT of a facts item
/// reaches S3 as one JSON row per fact with exactly the Glue table's columns; the session's MODIFY and
/// the TTL's REMOVE send nothing. Delivered again (a stream retry), the same rows arrive again with the
/// same ids (the queries count each id once). Its calls are its aws-calls.json exactly.
#[tokio::test(flavor = "current_thread")]
async fn analytics_export_delivers_each_fact_to_s3_as_a_glue_row() {
    let bucket = moto_bucket("vp-analytics").await;
    let stream = moto_delivery_stream(&bucket).await;
    let (exporter, proxy) = analytics_export(&stream).await;
    let event = fixture("analytics-export-stream.json");
    let expected = expected_rows(&event);
    assert_eq!(expected.len(), 3, "the fixture's three facts");

    let answer = analytics_export::handler::handle(&exporter, &stream_event(&event)).await;
    assert_eq!(stream_failures(&answer), Vec::<String>::new());
    let rows = delivered_rows(&bucket).await;
    assert_eq!(rows, expected);
    for row in &rows {
        assert!(row["at"].is_i64(), "`at` is bigint milliseconds: {row}");
    }
    assert_eq!(proxy.log().ops, vec!["firehose:PutRecordBatch"], "one call");

    let again = analytics_export::handler::handle(&exporter, &stream_event(&event)).await;
    assert_eq!(stream_failures(&again), Vec::<String>::new());
    let twice: Vec<Value> = expected
        .iter()
        .flat_map(|r| [r.clone(), r.clone()])
        .collect();
    assert_eq!(
        delivered_rows(&bucket).await,
        twice,
        "the same rows, same ids"
    );

    assert_proxies_listed([("analytics-export", &proxy)]);
    assert_eq!(
        proxy.calls(),
        manifest("analytics-export"),
        "functions/analytics-export/aws-calls.json is what the function calls"
    );
}

/// Log lines captured as the Lambda JSON log format writes them.
#[derive(Clone, Default)]
struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log buffer").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    /// The `fields` of every JSON line whose `fields.alert` is `alert`.
    fn alerts(&self, alert: &str) -> Vec<Value> {
        let text = String::from_utf8(self.0.lock().expect("log buffer").clone()).expect("utf-8");
        text.lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v["fields"]["alert"] == alert)
            .map(|v| v["fields"].clone())
            .collect()
    }
}

/// A facts item that cannot be read is acknowledged with `alert = "unreadable_fact"` (the alarm's
/// metric filter reads `$.fields.alert`), never retried; when Firehose cannot take the facts (here:
/// no such delivery stream), the first stream record not delivered is the batch item failure — not
/// the unreadable one before it, which is done.
#[tokio::test(flavor = "current_thread")]
async fn analytics_export_acknowledges_an_unreadable_item_and_reports_a_firehose_failure() {
    let logs = Captured::default();
    let writer = logs.clone();
    let _guard = tracing::subscriber::set_default(
        tracing_subscriber::fmt()
            .json()
            .with_writer(move || writer.clone())
            .finish(),
    );
    let fixture = fixture("analytics-export-stream.json");
    let mut unreadable = fixture["Records"][0].clone();
    unreadable["dynamodb"]["SequenceNumber"] = json!("4610000000000012345678800");
    unreadable["dynamodb"]["NewImage"]["facts"]["S"] = json!("[{\"id\": \"payment:1\", \"kind\"");
    let readable = fixture["Records"][0].clone();
    let event = json!({"Records": [unreadable, readable]});

    let bucket = moto_bucket("vp-analytics").await;
    let stream = moto_delivery_stream(&bucket).await;
    let (exporter, _) = analytics_export(&stream).await;
    let answer = analytics_export::handler::handle(&exporter, &stream_event(&event)).await;
    assert_eq!(
        stream_failures(&answer),
        Vec::<String>::new(),
        "acknowledged"
    );
    let alerts = logs.alerts("unreadable_fact");
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(alerts[0]["sequence_number"], "4610000000000012345678800");
    assert_eq!(delivered_rows(&bucket).await, expected_rows(&fixture));

    let (mut broken, proxy) = analytics_export(&moto_unique_missing_stream()).await;
    broken.retry.first_backoff = std::time::Duration::from_millis(1);
    let answer = analytics_export::handler::handle(&broken, &stream_event(&event)).await;
    assert_eq!(
        stream_failures(&answer),
        vec![fixture["Records"][0]["dynamodb"]["SequenceNumber"]
            .as_str()
            .expect("sequence number")
            .to_owned()],
        "the readable record is retried from; the unreadable one before it is done"
    );
    assert_eq!(logs.alerts("unreadable_fact").len(), 2);
    assert!(
        proxy.log().ops.len() >= 2,
        "retried before giving the record back: {:?}",
        proxy.log().ops
    );
}

fn moto_unique_missing_stream() -> String {
    vendpay_test_kit::moto::unique("vp-no-such-stream")
}

/// Every fixture of `events/` is run by a test of this file (or its harness) and listed in
/// events/README.md's table.
#[test]
fn every_fixture_is_run_here() {
    let source = [include_str!("functions.rs"), include_str!("lambda/mod.rs")].concat();
    let readme = std::fs::read_to_string(root().join("events/README.md")).expect("README");
    let mut names: Vec<String> = std::fs::read_dir(root().join("events"))
        .expect("events/")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".json"))
        .collect();
    names.sort();
    assert!(names.len() >= 22, "{names:?}");
    for n in &names {
        assert!(
            source.contains(&format!("\"{n}\"")),
            "events/{n} is run by no test of tests/tests/functions.rs (nor named by its harness)"
        );
        assert!(
            readme.contains(&format!("`{n}`")),
            "events/README.md does not list {n}"
        );
    }
}

/// The same numbers both ways (docs/sales.md): ten simulated days of six machines through the real
/// ledger; their facts, written as the DynamoDB store writes them (items of facts), are streamed through
/// analytics-export to moto's Firehose and S3; the delivered rows are turned into Parquet with the Glue
/// table's schema and every named query of the template — parsed as Trino SQL and transpiled by sqlglot
/// — runs on DuckDB over them (`tests/athena/crosscheck.py`); each section must equal `vendpay report
/// --format json` on the same store, to the minor unit. moto does not run Athena; this is how the SQL
/// is proven here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn athena_named_queries_equal_vendpay_report_on_exported_facts() {
    use vendpay_app::FactStore;
    use vendpay_domain::facts::AnalyticsKey;

    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("sim.sqlite");
    let options = vendpay::simulate::Options {
        machines: 6,
        days: 10,
        seed: 11,
        db: Some(db.clone()),
        analytics_key: Some(AnalyticsKey::new(b"cross-check analytics key".to_vec())),
        ..vendpay::simulate::Options::default()
    };
    let summary = vendpay::simulate::run(&options).await.expect("simulate");
    assert!(summary.ok(), "the simulation settled everything");

    let store = vendpay_store_sqlite::SqliteStore::open(&db)
        .await
        .expect("the simulated store");
    let facts = store
        .facts(
            vendpay_domain::Timestamp::from_millis(0),
            vendpay_domain::Timestamp::FAR_FUTURE,
        )
        .await
        .expect("facts");
    assert!(facts.len() > 1000, "a real data set: {} facts", facts.len());

    // As the table's stream carries them: one INSERT per facts item (a decision's facts; here up to 20
    // per item), in order, a hundred records per invocation.
    let bucket = moto_bucket("vp-athena").await;
    let stream = moto_delivery_stream(&bucket).await;
    let (exporter, _proxy) = analytics_export(&stream).await;
    let records: Vec<Value> = facts
        .chunks(20)
        .enumerate()
        .map(|(n, chunk)| {
            let pk = format!("facts#{}#{n}", chunk[0].session);
            let body = serde_json::to_string(chunk).expect("facts JSON");
            json!({
                "eventID": format!("{n:032x}"),
                "eventName": "INSERT",
                "eventVersion": "1.1",
                "eventSource": "aws:dynamodb",
                "awsRegion": "us-east-1",
                "eventSourceARN": "arn:aws:dynamodb:us-east-1:123456789012:table/vendpay/stream/2026-11-01T00:00:00.000",
                "dynamodb": {
                    "Keys": {"pk": {"S": pk}, "sk": {"S": "facts"}},
                    "NewImage": {
                        "pk": {"S": pk},
                        "sk": {"S": "facts"},
                        "facts": {"S": body},
                        "expires_at": {"N": "1900000000"}
                    },
                    "SequenceNumber": format!("{:025}", n + 1),
                    "SizeBytes": body.len(),
                    "StreamViewType": "NEW_IMAGE"
                }
            })
        })
        .collect();
    for batch in records.chunks(100) {
        let event = json!({ "Records": batch });
        let answer = analytics_export::handler::handle(&exporter, &stream_event(&event)).await;
        assert_eq!(stream_failures(&answer), Vec::<String>::new());
    }
    let rows = delivered_rows(&bucket).await;
    assert_eq!(rows.len(), facts.len(), "every fact delivered once");
    let records_dir = dir.path().join("records");
    std::fs::create_dir_all(&records_dir).expect("records dir");
    let lines: String = rows.iter().map(|r| format!("{r}\n")).collect();
    std::fs::write(records_dir.join("delivered.json"), lines).expect("records");

    let (from, to) = ("2026-11-06", "2026-11-10");
    let report = dir.path().join("report.json");
    vendpay::report::run(&vendpay::report::Options {
        from: from.into(),
        to: to.into(),
        format: vendpay::report::Format::Json,
        out: Some(report.clone()),
        campaign: None,
        db: Some(db.clone()),
    })
    .await
    .expect("vendpay report");

    // Privacy: none of the simulated buyers' Alipay ids is in the exported rows, the report (JSON,
    // HTML, text) or the campaign file — only their keys are.
    let html = dir.path().join("report.html");
    let text = dir.path().join("report.txt");
    let campaign = dir.path().join("campaign.csv");
    for (format, out) in [
        (vendpay::report::Format::Html, &html),
        (vendpay::report::Format::Text, &text),
    ] {
        vendpay::report::run(&vendpay::report::Options {
            from: from.into(),
            to: to.into(),
            format,
            out: Some(out.clone()),
            campaign: Some(campaign.clone()),
            db: Some(db.clone()),
        })
        .await
        .expect("vendpay report");
    }
    let buyers = vendpay::simulate::buyer_ids(&options).expect("the simulated buyer ids");
    assert!(buyers.len() > 100, "{} buyers", buyers.len());
    let campaign_text = std::fs::read_to_string(&campaign).expect("campaign");
    assert!(
        campaign_text.lines().count() > 10
            && campaign_text.starts_with("district,buyer_key,tags\n"),
        "{campaign_text}"
    );
    let outputs = [
        (
            "the exported rows",
            std::fs::read_to_string(records_dir.join("delivered.json")),
        ),
        ("the JSON report", std::fs::read_to_string(&report)),
        ("the HTML report", std::fs::read_to_string(&html)),
        ("the text report", std::fs::read_to_string(&text)),
        ("the campaign CSV", Ok(campaign_text)),
    ];
    for (what, body) in outputs {
        let body = body.expect("an output");
        for buyer in &buyers {
            assert!(
                !body.contains(buyer.as_str()),
                "{what} holds the raw buyer id {buyer}"
            );
        }
    }

    let athena = root().join("tests").join("athena");
    let venv = std::process::Command::new(athena.join("venv"))
        .output()
        .expect("tests/athena/venv runs");
    assert!(
        venv.status.success(),
        "the cross-check's virtualenv: {}",
        String::from_utf8_lossy(&venv.stderr)
    );
    let python = String::from_utf8_lossy(&venv.stdout).trim().to_owned();
    let out = std::process::Command::new(python)
        .arg(athena.join("crosscheck.py"))
        .args(["--records", &records_dir.display().to_string()])
        .args(["--report", &report.display().to_string()])
        .args(["--from", from, "--to", to, "--tz=+08:00"])
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .expect("crosscheck.py runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{text}");
    assert!(
        out.status.success(),
        "the named queries and vendpay report differ:\n{text}"
    );
}
