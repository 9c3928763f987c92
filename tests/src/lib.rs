//! Test helper for the end-to-end tests in `tests/`: a real `vendpay` server (the library's
//! [`vendpay::Server`], the same code `vendpay serve` runs) on an ephemeral port with its own temporary
//! SQLite database and the in-process Alipay sandbox, and helpers over the test kit client
//! (`vendpay-client`) that fail the test on a wrong answer.

// The end-to-end tests' harness: it asserts like a test, so it may unwrap, expect and panic.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::time::Duration;

use serde_json::Value;
use vendpay_client::{Client, ClientError, NewDevice};

pub use vendpay_client::{cny, Answer, MachineKeys, SlotPlan};

pub const TOKEN: &str = "e2e-test-admin-token-0123456789";

/// A running server with its own database; dropped at the end of a test.
pub struct Harness {
    pub url: String,
    pub http: reqwest::Client,
    /// The test kit client every helper here goes through.
    pub client: Client,
    server: Option<vendpay::Server>,
    _dir: tempfile::TempDir,
}

pub fn now_secs() -> u64 {
    u64::try_from(vendpay_client::now_secs()).expect("time")
}

/// A client error fails the test, naming what went wrong.
fn must<T>(r: Result<T, ClientError>) -> T {
    r.unwrap_or_else(|e| panic!("{e}"))
}

impl Harness {
    /// Starts a server in sandbox mode; `env` adds or overrides settings (e.g. the windows).
    pub async fn start(env: &[(&str, &str)]) -> Harness {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut settings: HashMap<String, String> = HashMap::new();
        settings.insert("VENDPAY_LISTEN".into(), "127.0.0.1:0".into());
        settings.insert(
            "VENDPAY_DB".into(),
            dir.path().join("e2e.sqlite").display().to_string(),
        );
        settings.insert("ADMIN_TOKEN".into(), TOKEN.into());
        for (k, v) in env {
            settings.insert((*k).into(), (*v).into());
        }
        let config = vendpay::Config::from_lookup(|name| settings.get(name).cloned())
            .expect("configuration");
        assert!(config.is_sandbox(), "the e2e tests run in sandbox mode");
        let server = vendpay::Server::start(config).await.expect("server starts");
        let client = must(Client::new(&server.local_url(), TOKEN));
        Harness {
            url: server.local_url(),
            http: client.http().clone(),
            client,
            server: Some(server),
            _dir: dir,
        }
    }

    /// Starts a server in sandbox mode on the embedded store, or with `aws` on `--store aws` against
    /// moto (its own table and queues, created by the server); `extra` adds or overrides settings.
    pub async fn start_on(aws: bool, extra: &[(&str, &str)]) -> Harness {
        let mut env: Vec<(&str, String)> = if aws { moto_settings() } else { Vec::new() };
        env.extend(extra.iter().map(|(k, v)| (*k, (*v).to_owned())));
        let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        Harness::start(&pairs).await
    }

    /// Stops the server cleanly.
    pub async fn stop(mut self) {
        if let Some(s) = self.server.take() {
            s.shutdown().await;
        }
    }

    pub async fn call(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, String)],
        body: String,
    ) -> Answer {
        must(self.client.call(method, path, headers, body).await)
    }

    pub async fn admin(&self, method: &str, path: &str, body: Option<Value>) -> Answer {
        must(self.client.admin(method, path, body.as_ref()).await)
    }

    /// The headers of a device request signed with `secret` at `ts`.
    pub fn signed_headers(
        m: &MachineKeys,
        secret: &str,
        method: &str,
        path: &str,
        ts: u64,
        body: &str,
    ) -> Vec<(&'static str, String)> {
        let ts = i64::try_from(ts).expect("time");
        vendpay_api::auth::signed_headers(&m.id, secret, method, path, body.as_bytes(), ts).to_vec()
    }

    /// A device request signed now with the machine's secret.
    pub async fn device(
        &self,
        m: &MachineKeys,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> Answer {
        must(self.client.device(m, method, path, body.as_ref()).await)
    }

    /// Registers a machine and creates its QR code.
    pub async fn register(&self, id: &str, mode: &str) -> MachineKeys {
        must(
            self.client
                .register(&NewDevice {
                    id,
                    name: "E2E",
                    district: "Test",
                    location: None,
                    currency: "CNY",
                    mode,
                })
                .await,
        )
    }

    /// A customer pays `minor` fen through the sandbox; returns the receipt.
    pub async fn pay(&self, m: &MachineKeys, minor: u64) -> Value {
        must(self.client.pay(&m.id, &cny(minor)).await)
    }

    pub async fn faults(&self, faults: Value) {
        must(self.client.faults(&faults).await)
    }

    pub async fn session(&self, m: &MachineKeys) -> Value {
        must(self.client.session(m).await)
    }

    pub async fn admin_session(&self, session_id: &str) -> Value {
        must(self.client.admin_session(session_id).await)
    }

    pub async fn sandbox_list(&self, what: &str) -> Vec<Value> {
        must(self.client.sandbox_list(what).await)
    }

    // --- catalogue and inventory (`docs/contract.md`, “Catalogue and inventory”) ---

    /// `PUT /admin/products/{sku}` at `minor` fen: the product.
    pub async fn put_product(&self, sku: &str, name: &str, minor: u64) -> Value {
        must(self.client.put_product(sku, name, &cny(minor), None).await)["product"].clone()
    }

    /// `PUT /admin/devices/{id}/slots`: the inventory.
    pub async fn set_slots(&self, device_id: &str, slots: &[SlotPlan<'_>]) -> Value {
        must(self.client.set_slots(device_id, slots).await)
    }

    /// `GET /admin/devices/{id}/inventory`.
    pub async fn inventory(&self, device_id: &str) -> Value {
        must(self.client.inventory(device_id).await)
    }

    /// `POST /admin/devices/{id}/restock`: the inventory.
    pub async fn restock(&self, device_id: &str, counts: &[(&str, u32)]) -> Value {
        must(self.client.restock(device_id, counts).await)
    }

    /// `GET /admin/inventory[?below=]`: the restocking round.
    pub async fn restocking_round(&self, below: Option<f64>) -> Value {
        must(self.client.restocking_round(below).await)
    }
}

/// A slot of the planogram with the product's price.
pub fn plan<'a>(slot: &'a str, sku: &'a str, capacity: u32) -> SlotPlan<'a> {
    SlotPlan {
        slot,
        sku,
        capacity,
        price: None,
    }
}

/// `(stock, reserved)` of `slot` in a machine's inventory; fails the test when there is no such slot.
pub fn stock(inventory: &Value, slot: &str) -> (u64, u64) {
    let line = inventory["slots"]
        .as_array()
        .and_then(|s| s.iter().find(|l| l["slot"] == slot))
        .unwrap_or_else(|| panic!("no slot {slot} in {inventory}"));
    (
        line["stock"].as_u64().expect("stock"),
        line["reserved"].as_u64().expect("reserved"),
    )
}

/// Every `(district, device, slot)` of a restocking round, in its order.
pub fn round_slots(round: &Value) -> Vec<(String, String, String)> {
    let text = |v: &Value, f: &str| v[f].as_str().unwrap_or("?").to_owned();
    let mut out = Vec::new();
    for d in round["districts"].as_array().expect("districts") {
        for m in d["machines"].as_array().expect("machines") {
            for s in m["slots"].as_array().expect("slots") {
                out.push((text(d, "district"), text(m, "device_id"), text(s, "slot")));
            }
        }
    }
    out
}

/// The settings of `vendpay serve --store aws --sandbox --create-missing` on moto, with a table of its
/// own (and so its own two queues). Fails the test when moto is not running: run it through
/// `scripts/with-moto`, which exports `VENDPAY_MOTO_ENDPOINT` and `AWS_ENDPOINT_URL`.
pub fn moto_settings() -> Vec<(&'static str, String)> {
    let endpoint = match std::env::var("VENDPAY_MOTO_ENDPOINT") {
        Ok(v) if !v.trim().is_empty() => v,
        _ => panic!(
            "VENDPAY_MOTO_ENDPOINT is not set: the --store aws tests need moto's server. Run them through \
             the launcher, which installs moto on first use and stops it afterwards:\n\n    \
             scripts/with-moto cargo test -p vendpay-e2e --test e2e_flows\n"
        ),
    };
    // The server's SDK reads AWS_ENDPOINT_URL: it must be moto, never a real account.
    assert_eq!(
        std::env::var("AWS_ENDPOINT_URL").ok().as_deref(),
        Some(endpoint.as_str()),
        "AWS_ENDPOINT_URL must point at moto (scripts/with-moto sets both)"
    );
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let table = format!("vp-e2e-{:x}-{n}", t ^ (u64::from(std::process::id()) << 40));
    vec![
        ("VENDPAY_STORE", "aws".to_owned()),
        ("VENDPAY_SANDBOX", "true".to_owned()),
        ("VENDPAY_AWS_CREATE", "true".to_owned()),
        ("TABLE_NAME", table),
    ]
}

/// Polls `probe` every 50 ms until it answers `Some`, failing after `limit`.
pub async fn wait_for<T>(
    what: &str,
    limit: Duration,
    mut probe: impl AsyncFnMut() -> Option<T>,
) -> T {
    must(vendpay_client::wait_for(what, limit, async || Ok(probe().await)).await)
}

/// The amount of `Value` money in minor units.
pub fn minor(v: &Value) -> u64 {
    assert_eq!(v["currency"], "CNY", "{v}");
    v["minor"].as_u64().unwrap_or_else(|| panic!("money: {v}"))
}
