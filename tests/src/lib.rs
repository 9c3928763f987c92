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

pub use vendpay_client::{cny, Answer, MachineKeys};

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
