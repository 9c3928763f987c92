//! The Lambda functions' handlers, run in-process against moto (DynamoDB, SQS, Scheduler, Secrets
//! Manager, Firehose and S3 — started by `scripts/with-moto`) and the Alipay sandbox, fed the fixtures
//! of `events/`. [`World::functions`] builds the five that share the ledger; analytics-export, which
//! touches neither the table nor Alipay, is built alone by [`analytics_export`].
//!
//! Each function gets its own SDK configuration whose endpoint is a small recording proxy in front of
//! moto: every AWS operation a function's code really calls is recorded (from `X-Amz-Target`, or the
//! REST path for Scheduler) and compared with the function's `functions/<name>/aws-calls.json`, which
//! the SAM template's IAM policies are checked against (scripts/check-infra). A `TransactWriteItems`
//! with a `Delete` part is recorded `dynamodb:DeleteItem` too: that part needs the IAM action, which the
//! other functions' transactions (Put, Update, ConditionCheck parts only) are not granted. A `Query`
//! naming a secondary index records that index, which the manifest's `indexes` must list (the template
//! grants `dynamodb:Query` on an index only to those functions). The proxy also keeps every request in
//! order ([`Proxy::log`]), to count the requests of one route.
//!
//! One file on purpose: it is the harness of all six functions on moto (resources, settings, the
//! recording proxy, invocation helpers), shared by the test binaries that include it.

#![allow(dead_code)] // each test binary uses a different part

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use aws_config::SdkConfig;
use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;
use base64::Engine;
use bytes::Bytes;
use serde_json::{json, Value};
use vendpay_alipay::PartnerId;
use vendpay_alipay::{SignType, Signer};
use vendpay_alipay_sandbox::{RunningSandbox, Sandbox, SandboxConfig};
use vendpay_lambda::Env;
use vendpay_test_kit::moto;

pub const DEVICE: &str = "vm-fixture-1";
pub const TRADE: &str = "2026112622001400010001";
pub const OUT_TRADE: &str = "VP20261126000001";
pub const SESSION: &str = "s:2026112622001400010001";
pub const PARTNER: &str = "2088101122136241";
pub const FUNCTIONS: [&str; 5] = [
    "alipay-notify",
    "device-api",
    "qr-provision",
    "deadline",
    "refund-executor",
];

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A fixture of `events/`, parsed.
pub fn fixture(name: &str) -> Value {
    let path = root().join("events").join(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("fixture {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("fixture {}: {e}", path.display()))
}

/// A recording proxy in front of moto.
#[derive(Clone)]
pub struct Proxy {
    pub url: String,
    pub calls: Arc<Mutex<BTreeSet<String>>>,
    /// The table's secondary indexes queried.
    pub indexes: Arc<Mutex<BTreeSet<String>>>,
    /// Every request, in order: its operation (as [`Proxy::calls`] names it) and what it names.
    pub requests: Arc<Mutex<Vec<(String, String)>>>,
}

/// The requests of one stretch of a test, in order.
#[derive(Clone, Debug, Default)]
pub struct Requests {
    /// Operations, as [`Proxy::calls`] names them.
    pub ops: Vec<String>,
    /// Each operation with the items it names (`dynamodb:GetItem dev#vm-1/device`).
    pub detailed: Vec<String>,
}

#[derive(Clone)]
struct ProxyState {
    upstream: String,
    http: reqwest::Client,
    calls: Arc<Mutex<BTreeSet<String>>>,
    indexes: Arc<Mutex<BTreeSet<String>>>,
    requests: Arc<Mutex<Vec<(String, String)>>>,
}

/// The IAM action of one AWS API request.
fn action(method: &str, path: &str, target: Option<&str>) -> String {
    if let Some(t) = target {
        let (service, op) = t.split_once('.').unwrap_or(("?", t));
        let prefix = match service {
            s if s.starts_with("DynamoDB") => "dynamodb",
            "AmazonSQS" => "sqs",
            "secretsmanager" => "secretsmanager",
            "AmazonSSM" => "ssm",
            "Firehose_20150804" => "firehose",
            other => other,
        };
        return format!("{prefix}:{op}");
    }
    if path.starts_with("/schedules/") {
        let op = match method {
            "POST" => "CreateSchedule",
            "GET" => "GetSchedule",
            "PUT" => "UpdateSchedule",
            "DELETE" => "DeleteSchedule",
            _ => "?",
        };
        return format!("scheduler:{op}");
    }
    format!("?:{method} {path}")
}

/// The items a DynamoDB request names (`pk/sk` of its key or item, a query's key values, a transaction's
/// parts); empty for other services.
fn describe(body: &[u8]) -> String {
    let Ok(v) = serde_json::from_slice::<Value>(body) else {
        return String::new();
    };
    let key = |k: &Value| {
        format!(
            "{}/{}",
            k["pk"]["S"].as_str().unwrap_or("?"),
            k["sk"]["S"].as_str().unwrap_or("?")
        )
    };
    if let Some(parts) = v["TransactItems"].as_array() {
        let parts: Vec<String> = parts
            .iter()
            .filter_map(|p| p.as_object()?.iter().next())
            .map(|(kind, part)| {
                let k = if part.get("Item").is_some() {
                    &part["Item"]
                } else {
                    &part["Key"]
                };
                format!("{kind} {}", key(k))
            })
            .collect();
        return format!("[{}]", parts.join(", "));
    }
    if v.get("Key").is_some() {
        return key(&v["Key"]);
    }
    if v.get("Item").is_some() {
        return key(&v["Item"]);
    }
    if let Some(values) = v["ExpressionAttributeValues"].as_object() {
        let mut shown: Vec<String> = values
            .values()
            .map(|x| {
                x["S"]
                    .as_str()
                    .or(x["N"].as_str())
                    .unwrap_or("?")
                    .to_owned()
            })
            .collect();
        shown.sort();
        let index = v["IndexName"]
            .as_str()
            .map(|i| format!(" on {i}"))
            .unwrap_or_default();
        return format!("{}{index}", shown.join(" "));
    }
    String::new()
}

/// Whether a `TransactWriteItems` request body has a `Delete` part.
fn transaction_deletes(body: &[u8]) -> bool {
    serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v["TransactItems"].as_array().cloned())
        .is_some_and(|parts| parts.iter().any(|p| p.get("Delete").is_some()))
}

async fn forward(State(s): State<ProxyState>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let target = parts
        .headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let path = parts.uri.path().to_owned();
    let bytes = axum::body::to_bytes(body, 1 << 24)
        .await
        .unwrap_or_default();
    let op = action(parts.method.as_str(), &path, target.as_deref());
    let deletes = op == "dynamodb:TransactWriteItems" && transaction_deletes(&bytes);
    if let Ok(mut c) = s.calls.lock() {
        c.insert(op.clone());
        if deletes {
            c.insert("dynamodb:DeleteItem".to_owned());
        }
    }
    if op == "dynamodb:Query" {
        let index = serde_json::from_slice::<Value>(&bytes)
            .ok()
            .and_then(|v| v["IndexName"].as_str().map(str::to_owned));
        if let (Some(index), Ok(mut i)) = (index, s.indexes.lock()) {
            i.insert(index);
        }
    }
    if let Ok(mut r) = s.requests.lock() {
        r.push((op, describe(&bytes)));
    }
    let url = format!(
        "{}{}",
        s.upstream.trim_end_matches('/'),
        parts.uri.path_and_query().map_or("/", |p| p.as_str())
    );
    let mut out = s.http.request(parts.method.clone(), url);
    for (k, v) in &parts.headers {
        if k != "host" && k != "content-length" {
            out = out.header(k, v);
        }
    }
    match out.body(bytes).send().await {
        Ok(res) => {
            let mut b = Response::builder().status(res.status());
            for (k, v) in res.headers() {
                if k != "content-length" && k != "transfer-encoding" {
                    b = b.header(k, v);
                }
            }
            let body = res.bytes().await.unwrap_or_default();
            b.body(Body::from(body))
                .unwrap_or_else(|_| Response::new(Body::empty()))
        }
        Err(e) => Response::builder()
            .status(502)
            .body(Body::from(format!("proxy: {e}")))
            .unwrap_or_else(|_| Response::new(Body::empty())),
    }
}

impl Proxy {
    pub async fn start(upstream: &str) -> Proxy {
        let calls = Arc::new(Mutex::new(BTreeSet::new()));
        let indexes = Arc::new(Mutex::new(BTreeSet::new()));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let state = ProxyState {
            upstream: upstream.to_owned(),
            http: reqwest::Client::new(),
            calls: calls.clone(),
            indexes: indexes.clone(),
            requests: requests.clone(),
        };
        let app = axum::Router::new().fallback(forward).with_state(state);
        let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .expect("bind proxy");
        let addr = listener.local_addr().expect("proxy address");
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Proxy {
            url: format!("http://{addr}"),
            calls,
            indexes,
            requests,
        }
    }

    pub fn indexes(&self) -> BTreeSet<String> {
        self.indexes.lock().map(|i| i.clone()).unwrap_or_default()
    }

    pub fn calls(&self) -> BTreeSet<String> {
        self.calls.lock().map(|c| c.clone()).unwrap_or_default()
    }

    /// Every request so far, in order.
    pub fn log(&self) -> Requests {
        self.requests
            .lock()
            .map(|r| Requests {
                ops: r.iter().map(|(op, _)| op.clone()).collect(),
                detailed: r
                    .iter()
                    .map(|(op, what)| format!("{op} {what}").trim_end().to_owned())
                    .collect(),
            })
            .unwrap_or_default()
    }

    /// The requests made while `f` ran (nothing else may use this proxy meanwhile).
    pub async fn during<T>(&self, f: impl std::future::Future<Output = T>) -> (T, Requests) {
        let from = self.log().ops.len();
        let out = f.await;
        let log = self.log();
        let since = |v: &[String]| v.get(from..).map(<[String]>::to_vec).unwrap_or_default();
        (
            out,
            Requests {
                ops: since(&log.ops),
                detailed: since(&log.detailed),
            },
        )
    }
}

/// One function's state, built the way its `main.rs` builds it, behind its own recording proxy.
pub struct Functions {
    pub notify: vendpay_api::NotifyRoute,
    pub device: device_api::DeviceApi,
    pub admin: vendpay_api::AdminRoutes,
    pub deadline: vendpay_app::Ledger,
    pub refunds: refund_executor::Executor,
    pub proxies: BTreeMap<&'static str, Proxy>,
}

/// Moto resources and the sandbox for one test.
pub struct World {
    pub admin_sdk: SdkConfig,
    pub table: String,
    pub deadline_queue: String,
    pub refund_queue: String,
    pub device_queue: String,
    pub sandbox: Sandbox,
    pub running: RunningSandbox,
    pub settings: BTreeMap<String, String>,
}

impl World {
    /// A fresh table, three queues, two secrets (Alipay keys as JSON fields, the device key as a plain
    /// secret) and a sandbox; the settings reference the secrets as the SAM template does.
    pub async fn new(extra: &[(&str, &str)]) -> World {
        let admin_sdk = moto::sdk_for(&moto::endpoint()).await;
        let table = moto::unique("vp-fn");
        vendpay_store_aws::create_table(&aws_sdk_dynamodb::Client::new(&admin_sdk), &table)
            .await
            .expect("create table");
        let moto::Queue {
            url: deadline_queue,
            arn: deadline_arn,
        } = moto::queue(&admin_sdk, "vp-deadline").await;
        let refund_queue = moto::queue(&admin_sdk, "vp-refund").await.url;
        let device_queue = moto::queue(&admin_sdk, "vp-device").await.url;
        let sm = aws_sdk_secretsmanager::Client::new(&admin_sdk);
        let alipay_secret = moto::unique("vp-alipay");
        sm.create_secret()
            .name(&alipay_secret)
            .secret_string(
                json!({
                    "private_key": vendpay_alipay_sandbox::TEST_MERCHANT_PRIVATE_KEY,
                    "public_key": vendpay_alipay_sandbox::TEST_ALIPAY_PUBLIC_KEY,
                    "md5_key": ""
                })
                .to_string(),
            )
            .send()
            .await
            .expect("alipay secret");
        let device_secret = moto::unique("vp-device-key");
        sm.create_secret()
            .name(&device_secret)
            .secret_string("0123456789abcdef".repeat(4))
            .send()
            .await
            .expect("device key secret");

        let mut config = SandboxConfig::with_test_keys(PartnerId::parse(PARTNER).expect("partner"));
        config.time_scale = 0.0001;
        let sandbox = Sandbox::new(config).expect("sandbox");
        let running = sandbox
            .serve(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .expect("sandbox serve");
        // The fixture notification's trade, as if the customer had paid at Alipay.
        let paid = vendpay_domain::Money::new(1000, vendpay_domain::Currency::Cny).expect("money");
        sandbox
            .import_trade(TRADE, OUT_TRADE, paid)
            .expect("import the fixture trade");

        let mut settings: BTreeMap<String, String> = [
            ("TABLE_NAME", table.clone()),
            ("DEADLINE_QUEUE_URL", deadline_queue.clone()),
            ("DEADLINE_QUEUE_ARN", deadline_arn),
            (
                "SCHEDULER_ROLE_ARN",
                "arn:aws:iam::123456789012:role/vendpay-scheduler".to_owned(),
            ),
            ("REFUND_QUEUE_URL", refund_queue.clone()),
            ("DEVICE_EVENTS_QUEUE_URL", device_queue.clone()),
            ("DEVICE_KEY", format!("secretsmanager:{device_secret}")),
            // Any ≥ 32-byte hex key; a secret reference like the template's.
            ("ANALYTICS_KEY", format!("secretsmanager:{device_secret}")),
            (
                "PUBLIC_BASE_URL",
                "https://abc123.execute-api.us-east-1.amazonaws.com".to_owned(),
            ),
            ("ALIPAY_GATEWAY_URL", running.gateway_url()),
            ("ALIPAY_PARTNER_ID", PARTNER.to_owned()),
            ("ALIPAY_SIGN_TYPE", "RSA2".to_owned()),
            (
                "ALIPAY_PRIVATE_KEY",
                format!("secretsmanager:{alipay_secret}#private_key"),
            ),
            (
                "ALIPAY_PUBLIC_KEY",
                format!("secretsmanager:{alipay_secret}#public_key"),
            ),
            (
                "ALIPAY_MD5_KEY",
                format!("secretsmanager:{alipay_secret}#md5_key"),
            ),
            // The fixture's notify_id is not one the sandbox issued.
            ("ALIPAY_NOTIFY_VERIFY", "false".to_owned()),
            ("ALIPAY_SECONDARY_MERCHANT_ID", "vendpay_fixture".to_owned()),
            (
                "ALIPAY_SECONDARY_MERCHANT_NAME",
                "vendpay fixture vending".to_owned(),
            ),
            ("ALIPAY_MERCHANT_INDUSTRY", "5499".to_owned()),
            ("ALIPAY_SETTLEMENT_CURRENCY", "CNY".to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        for (k, v) in extra {
            settings.insert((*k).to_owned(), (*v).to_owned());
        }
        World {
            admin_sdk,
            table,
            deadline_queue,
            refund_queue,
            device_queue,
            sandbox,
            running,
            settings,
        }
    }

    /// The settings one function reads (its `settings()`), secrets resolved through its own proxy.
    async fn env(&self, names: &[&str], sdk: &SdkConfig) -> Env {
        Env::from_pairs(
            self.settings
                .iter()
                .filter(|(k, _)| names.contains(&k.as_str()))
                .map(|(k, v)| (k.clone(), v.clone())),
        )
        .resolve(sdk)
        .await
        .expect("secrets resolve")
    }

    /// Builds all five functions as their `main.rs` does.
    pub async fn functions(&self) -> Functions {
        let mut proxies = BTreeMap::new();
        let mut sdks = BTreeMap::new();
        for f in FUNCTIONS {
            let p = Proxy::start(&moto::endpoint()).await;
            sdks.insert(f, moto::sdk_for(&p.url).await);
            proxies.insert(f, p);
        }
        let sdk = |f: &str| sdks.get(f).cloned().expect("sdk");
        let s = sdk("alipay-notify");
        let notify = alipay_notify::build(&s, &self.env(&alipay_notify::settings(), &s).await)
            .expect("alipay-notify builds");
        let s = sdk("device-api");
        let device = device_api::build(&s, &self.env(&device_api::settings(), &s).await)
            .expect("device-api builds");
        let s = sdk("qr-provision");
        let admin = qr_provision::build(&s, &self.env(&qr_provision::settings(), &s).await)
            .expect("qr-provision builds");
        let s = sdk("deadline");
        let deadline = deadline::build(&s, &self.env(&deadline::settings(), &s).await)
            .expect("deadline builds");
        let s = sdk("refund-executor");
        let refunds = refund_executor::build(&s, &self.env(&refund_executor::settings(), &s).await)
            .expect("refund-executor builds");
        Functions {
            notify,
            device,
            admin,
            deadline,
            refunds,
            proxies,
        }
    }

    /// Messages waiting on a queue (received with a zero visibility timeout, so they stay).
    pub async fn peek(&self, queue_url: &str) -> Vec<Value> {
        let out = aws_sdk_sqs::Client::new(&self.admin_sdk)
            .receive_message()
            .queue_url(queue_url)
            .max_number_of_messages(10)
            .visibility_timeout(0)
            .send()
            .await
            .expect("receive");
        out.messages
            .unwrap_or_default()
            .iter()
            .filter_map(|m| m.body().and_then(|b| serde_json::from_str(b).ok()))
            .collect()
    }
}

pub fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Signs an API Gateway event's device request with `secret` at `ts`, as a machine would.
pub fn sign_http(event: &mut Value, secret: &str, ts: i64) {
    let method = event["requestContext"]["http"]["method"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let mut path = event["rawPath"].as_str().unwrap_or_default().to_owned();
    if let Some(q) = event["rawQueryString"].as_str().filter(|q| !q.is_empty()) {
        path = format!("{path}?{q}");
    }
    let body = event["body"].as_str().unwrap_or_default().to_owned();
    let sig = vendpay_api::auth::sign(secret, &method, &path, &ts.to_string(), body.as_bytes());
    event["headers"]["x-timestamp"] = json!(ts.to_string());
    event["headers"]["x-signature"] = json!(sig);
}

/// Signs a queued device request (`events/device-events-sqs.json`) and marks it sent at `ts`.
pub fn sign_queued(event: &mut Value, secret: &str, ts: i64) {
    for record in event["Records"].as_array_mut().into_iter().flatten() {
        let mut q: Value =
            serde_json::from_str(record["body"].as_str().unwrap_or_default()).expect("queued");
        let method = q["method"].as_str().unwrap_or_default().to_owned();
        let path = q["path"].as_str().unwrap_or_default().to_owned();
        let body = q["body"].as_str().unwrap_or_default().to_owned();
        let sig = vendpay_api::auth::sign(secret, &method, &path, &ts.to_string(), body.as_bytes());
        q["headers"]["x-timestamp"] = json!(ts.to_string());
        q["headers"]["x-signature"] = json!(sig);
        record["body"] = json!(q.to_string());
        record["attributes"]["SentTimestamp"] = json!((ts * 1000).to_string());
    }
}

/// An HTTP answer as the tests look at it.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub text: String,
}

impl Answer {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or(Value::Null)
    }
    pub fn code(&self) -> String {
        self.json()["error"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }
}

fn answer(res: lambda_http::Response<lambda_http::Body>) -> Answer {
    let status = res.status().as_u16();
    let text = match res.into_body() {
        lambda_http::Body::Text(t) => t,
        lambda_http::Body::Binary(b) => String::from_utf8_lossy(&b).into_owned(),
        _ => String::new(),
    };
    Answer { status, text }
}

fn http_request(event: &Value) -> lambda_http::Request {
    lambda_http::request::from_str(&event.to_string()).expect("an API Gateway v2 event")
}

fn ctx() -> lambda_runtime::Context {
    lambda_runtime::Context::default()
}

impl Functions {
    pub async fn notify(&self, event: &Value) -> Answer {
        answer(alipay_notify::handler::handle(&self.notify, http_request(event)).await)
    }

    pub async fn admin(&self, event: &Value) -> Answer {
        answer(qr_provision::handler::handle(&self.admin, http_request(event)).await)
    }

    /// The device function with an HTTP event: its raw Lambda answer, decoded.
    pub async fn device(&self, event: &Value) -> Answer {
        let out = device_api::handler::handle(
            &self.device,
            lambda_runtime::LambdaEvent::new(event.clone(), ctx()),
        )
        .await
        .expect("device-api answers HTTP events");
        let status = out["statusCode"].as_u64().unwrap_or(0) as u16;
        let text = out["body"].as_str().unwrap_or_default().to_owned();
        Answer { status, text }
    }

    /// The device function with an SQS event: the records it asks SQS to redeliver.
    pub async fn device_queue(&self, event: &Value) -> Vec<String> {
        let out = device_api::handler::handle(
            &self.device,
            lambda_runtime::LambdaEvent::new(event.clone(), ctx()),
        )
        .await
        .expect("device-api answers SQS events");
        failures(serde_json::from_value(out).expect("an SQS batch response"))
    }

    pub async fn deadline(&self, event: &Value) -> Result<Value, String> {
        deadline::handler::handle(
            &self.deadline,
            lambda_runtime::LambdaEvent::new(event.clone(), ctx()),
        )
        .await
        .map_err(|e| e.to_string())
    }

    pub async fn refund(&self, event: &Value) -> Vec<String> {
        let batch: SqsEvent = serde_json::from_value(event.clone()).expect("an SQS event");
        failures(refund_executor::handler::handle(&self.refunds, &batch).await)
    }

    pub async fn admin_session(&self, id: &str) -> Value {
        let mut ev = fixture("admin-get-session.json");
        ev["rawPath"] = json!(format!("/admin/sessions/{id}"));
        ev["requestContext"]["http"]["path"] = json!(format!("/admin/sessions/{id}"));
        self.admin(&ev).await.json()
    }

    /// The fixture machine's inventory, as an operator reads it.
    pub async fn inventory(&self) -> Value {
        let a = self.admin(&fixture("admin-get-inventory.json")).await;
        assert_eq!(a.status, 200, "{}", a.text);
        a.json()
    }

    /// The recording proxy of one function.
    pub fn proxy(&self, function: &str) -> &Proxy {
        self.proxies
            .get(function)
            .unwrap_or_else(|| panic!("no function {function}"))
    }

    pub async fn machine_status(&self, secret: &str) -> Value {
        let mut ev = fixture("device-get-session.json");
        sign_http(&mut ev, secret, now_secs());
        self.device(&ev).await.json()
    }
}

/// analytics-export built as its `main.rs` builds it, sending to the delivery stream `stream`, behind
/// its own recording proxy.
pub async fn analytics_export(
    stream: &str,
) -> (
    analytics_export::Exporter<analytics_export::FirehoseSink>,
    Proxy,
) {
    let proxy = Proxy::start(&moto::endpoint()).await;
    let sdk = moto::sdk_for(&proxy.url).await;
    let env = Env::from_pairs([(analytics_export::FIREHOSE_STREAM_NAME, stream)]);
    let exporter = analytics_export::build(&sdk, &env).expect("analytics-export builds");
    (exporter, proxy)
}

pub fn failures(r: SqsBatchResponse) -> Vec<String> {
    r.batch_item_failures
        .into_iter()
        .map(|f| f.item_identifier)
        .collect()
}

/// `functions/<name>/aws-calls.json`: its `calls`.
pub fn manifest(function: &str) -> BTreeSet<String> {
    manifest_list(function, "calls")
}

/// `functions/<name>/aws-calls.json`: its `indexes` (the table's secondary indexes it queries).
pub fn manifest_indexes(function: &str) -> BTreeSet<String> {
    manifest_list(function, "indexes")
}

fn manifest_list(function: &str, key: &str) -> BTreeSet<String> {
    let path = root()
        .join("functions")
        .join(function)
        .join("aws-calls.json");
    let v: Value = serde_json::from_str(
        &std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
    )
    .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    v[key]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c.as_str().map(str::to_owned))
        .collect()
}

/// Each function's manifest holds every operation it called (the IAM policies are checked against
/// the manifests by scripts/check-infra). Prints what each called, then fails naming every gap.
pub fn assert_calls_listed(f: &Functions) {
    assert_proxies_listed(f.proxies.iter().map(|(name, proxy)| (*name, proxy)));
}

/// [`assert_calls_listed`] for the functions behind `proxies` (name, its recording proxy).
pub fn assert_proxies_listed<'a>(proxies: impl IntoIterator<Item = (&'a str, &'a Proxy)>) {
    let mut gaps = Vec::new();
    for (name, proxy) in proxies {
        let called = proxy.calls();
        let allowed = manifest(name);
        eprintln!(
            "{name}: called {called:?}, queried the indexes {:?}; listed but not exercised here: {:?}",
            proxy.indexes(),
            allowed.difference(&called).collect::<Vec<_>>()
        );
        let extra: Vec<_> = called.difference(&allowed).cloned().collect();
        if !extra.is_empty() {
            gaps.push(format!(
                "{name} called {extra:?}, which functions/{name}/aws-calls.json does not list"
            ));
        }
        let indexes: Vec<_> = proxy
            .indexes()
            .difference(&manifest_indexes(name))
            .cloned()
            .collect();
        if !indexes.is_empty() {
            gaps.push(format!(
                "{name} queried the indexes {indexes:?}, which the \"indexes\" of functions/{name}/aws-calls.json do not list"
            ));
        }
    }
    assert!(gaps.is_empty(), "{}", gaps.join("; "));
}

pub fn cny(minor: u64) -> Value {
    json!({"minor": minor, "currency": "CNY"})
}

/// `(stock, reserved)` of `slot` in an inventory answer.
pub fn stock(inventory: &Value, slot: &str) -> (u64, u64) {
    let line = inventory["slots"]
        .as_array()
        .and_then(|ls| ls.iter().find(|l| l["slot"] == slot))
        .unwrap_or_else(|| panic!("no slot {slot} in {inventory}"));
    (
        line["stock"].as_u64().unwrap_or(u64::MAX),
        line["reserved"].as_u64().unwrap_or(u64::MAX),
    )
}

pub fn body_bytes(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

/// The fields of the fixture trade's notification.
pub fn notification_fields() -> Vec<(String, String)> {
    let passback = format!(r#"{{"device_id":"{DEVICE}"}}"#);
    let fields = [
        ("notify_id", "fixture-notify-1"),
        ("notify_time", "2026-11-26 10:00:02"),
        ("notify_type", "trade_status_sync"),
        ("notify_action_type", "payByAccountAction"),
        ("partner", PARTNER),
        ("out_trade_no", OUT_TRADE),
        ("trade_no", TRADE),
        ("trade_status", "TRADE_SUCCESS"),
        ("total_fee", "10.00"),
        ("trans_currency", "CNY"),
        ("currency", "CNY"),
        ("gmt_payment", "2026-11-26 10:00:01"),
        ("buyer_id", "2088000000000001"),
        ("passback_parameters", passback.as_str()),
    ];
    fields
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// A form signed as Alipay signs it, with the committed test key (or `key`).
pub fn sign_form(fields: &[(String, String)], key: &str) -> String {
    let signer = Signer::from_setting(SignType::Rsa2, "test key", key).expect("test key");
    vendpay_alipay::signed_form(
        fields.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        &signer,
    )
    .expect("sign")
}

/// The notification Alipay would send for the fixture trade, signed with the committed test key.
pub fn signed_notification() -> String {
    sign_form(
        &notification_fields(),
        vendpay_alipay_sandbox::TEST_ALIPAY_PRIVATE_KEY,
    )
}

pub fn notification_event() -> Value {
    notification_with_body(&signed_notification())
}

/// The notification event around `body` (a form), as API Gateway delivers it.
pub fn notification_with_body(body: &str) -> Value {
    let mut ev = fixture("device-get-session.json");
    let path = format!("/alipay/notify/{DEVICE}");
    ev["routeKey"] = json!("POST /alipay/notify/{device_id}");
    ev["rawPath"] = json!(path);
    ev["requestContext"]["routeKey"] = json!("POST /alipay/notify/{device_id}");
    ev["requestContext"]["requestId"] = json!("fixture-alipay-notify");
    ev["requestContext"]["http"]["method"] = json!("POST");
    ev["requestContext"]["http"]["path"] = json!(path);
    ev["requestContext"]["http"]["userAgent"] = json!("Mozilla/4.0");
    ev["headers"] = json!({
        "host": "abc123.execute-api.us-east-1.amazonaws.com",
        "content-type": "application/x-www-form-urlencoded; charset=utf-8",
        "user-agent": "Mozilla/4.0",
        "x-forwarded-proto": "https"
    });
    // HTTP APIs hand form bodies to Lambda base64-encoded.
    ev["body"] = json!(base64::engine::general_purpose::STANDARD.encode(body));
    ev["isBase64Encoded"] = json!(true);
    ev
}
