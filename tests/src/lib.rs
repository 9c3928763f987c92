//! Test helper for the end-to-end tests in `tests/`: a real `vendpay` server (the library's
//! [`vendpay::Server`], the same code `vendpay serve` runs) on an ephemeral port with its own temporary
//! SQLite database and the in-process Alipay sandbox, plus an HTTP client that signs device requests.

// The end-to-end tests' harness: it asserts like a test, so it may unwrap, expect and panic.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

pub const TOKEN: &str = "e2e-test-admin-token-0123456789";

/// A running server with its own database; dropped at the end of a test.
pub struct Harness {
    pub url: String,
    pub http: reqwest::Client,
    server: Option<vendpay::Server>,
    _dir: tempfile::TempDir,
}

/// A registered machine and its secret.
#[derive(Clone)]
pub struct Machine {
    pub id: String,
    pub secret: String,
    pub qrcode: String,
}

/// An HTTP answer: status and body (JSON if it parses, else the text as a JSON string).
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub body: Value,
}

pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("time")
        .as_secs()
}

pub fn cny(minor: u64) -> Value {
    json!({"minor": minor, "currency": "CNY"})
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
        Harness {
            url: server.local_url(),
            http: reqwest::Client::new(),
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
        let mut req = self.http.request(
            reqwest::Method::from_bytes(method.as_bytes()).expect("method"),
            format!("{}{path}", self.url),
        );
        for (k, v) in headers {
            req = req.header(*k, v);
        }
        let res = req.body(body).send().await.expect("HTTP");
        let status = res.status().as_u16();
        let bytes = res.bytes().await.expect("body");
        let body = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        Answer { status, body }
    }

    pub async fn admin(&self, method: &str, path: &str, body: Option<Value>) -> Answer {
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        self.call(
            method,
            path,
            &[("authorization", format!("Bearer {TOKEN}"))],
            body,
        )
        .await
    }

    /// The headers of a device request signed with `secret` at `ts`.
    pub fn signed_headers(
        m: &Machine,
        secret: &str,
        method: &str,
        path: &str,
        ts: u64,
        body: &str,
    ) -> Vec<(&'static str, String)> {
        let ts = ts.to_string();
        let sig = vendpay_api::auth::sign(secret, method, path, &ts, body.as_bytes());
        vec![
            ("x-device-id", m.id.clone()),
            ("x-timestamp", ts),
            ("x-signature", sig),
        ]
    }

    /// A device request signed now with the machine's secret.
    pub async fn device(
        &self,
        m: &Machine,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> Answer {
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let headers = Self::signed_headers(m, &m.secret, method, path, now_secs(), &body);
        self.call(method, path, &headers, body).await
    }

    /// Registers a machine and creates its QR code.
    pub async fn register(&self, id: &str, mode: &str) -> Machine {
        let a = self
            .admin(
                "POST",
                "/admin/devices",
                Some(json!({"device_id": id, "name": "E2E", "district": "Test", "currency": "CNY", "mode": mode})),
            )
            .await;
        assert_eq!(a.status, 201, "{:?}", a.body);
        let secret = a.body["secret"].as_str().expect("secret").to_owned();
        let q = self
            .admin("POST", &format!("/admin/devices/{id}/qrcode"), None)
            .await;
        assert_eq!(q.status, 200, "{:?}", q.body);
        Machine {
            id: id.to_owned(),
            secret,
            qrcode: q.body["qrcode"].as_str().expect("qrcode").to_owned(),
        }
    }

    /// A customer pays `minor` fen through the sandbox; returns the receipt.
    pub async fn pay(&self, m: &Machine, minor: u64) -> Value {
        let a = self
            .call(
                "POST",
                "/sandbox/pay",
                &[],
                json!({"device_id": m.id, "amount": cny(minor)}).to_string(),
            )
            .await;
        assert_eq!(a.status, 200, "{:?}", a.body);
        a.body
    }

    pub async fn faults(&self, faults: Value) {
        let a = self
            .call("POST", "/sandbox/faults", &[], faults.to_string())
            .await;
        assert_eq!(a.status, 204, "{:?}", a.body);
    }

    pub async fn session(&self, m: &Machine) -> Value {
        let a = self
            .device(m, "GET", &format!("/devices/{}/session", m.id), None)
            .await;
        assert_eq!(a.status, 200, "{:?}", a.body);
        a.body
    }

    pub async fn admin_session(&self, session_id: &str) -> Value {
        let a = self
            .admin("GET", &format!("/admin/sessions/{session_id}"), None)
            .await;
        assert_eq!(a.status, 200, "{:?}", a.body);
        a.body
    }

    pub async fn sandbox_list(&self, what: &str) -> Vec<Value> {
        let a = self
            .call("GET", &format!("/sandbox/{what}"), &[], String::new())
            .await;
        assert_eq!(a.status, 200, "{:?}", a.body);
        a.body.as_array().expect("a list").clone()
    }
}

/// Polls `probe` every 50 ms until it answers `Some`, failing after `limit`.
pub async fn wait_for<T>(
    what: &str,
    limit: Duration,
    mut probe: impl AsyncFnMut() -> Option<T>,
) -> T {
    let until = Instant::now() + limit;
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(
            Instant::now() < until,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The amount of `Value` money in minor units.
pub fn minor(v: &Value) -> u64 {
    assert_eq!(v["currency"], "CNY", "{v}");
    v["minor"].as_u64().unwrap_or_else(|| panic!("money: {v}"))
}
