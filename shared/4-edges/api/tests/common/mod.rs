//! The test harness shared by the HTTP tests: an `Api` on an in-memory SQLite store, a hand-moved
//! clock, and helpers that sign requests as a machine or an operator would.
#![allow(dead_code)]

pub mod fake_alipay;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use http::{Request, Response};
use serde_json::{json, Value};
use vendpay_alipay::{PartnerId, SignType, Signer, Verifier};
use vendpay_api::alipay::NotifyCheck;
use vendpay_api::auth::sign;
use vendpay_api::notify::NotifySettings;
use vendpay_api::{AdminAuth, Api, ApiParts, DeviceKey, ProvisionError, QrProvisioner};
use vendpay_app::contract::{ManualClock, Recorder};
use vendpay_app::inventory::Inventory;
use vendpay_app::{
    Commit, DeviceRecord, Ledger, Machine, QrCode, RefundRecord, RequestRecord, SessionStore,
    StoreError,
};
use vendpay_domain::*;
use vendpay_store_sqlite::{Location, SqliteStore};

pub const T0: i64 = 1_700_000_000_000;
pub const TOKEN: &str = "admin-token-for-tests";
pub const PARTNER: &str = "2088101122136241";
/// The committed test key pair standing in for Alipay's keys (never a real key).
pub const ALIPAY_PUBLIC_KEY: &str =
    include_str!("../../../../3-adapters/alipay/tests/fixtures/test-alipay-public-key.pem");
pub const ALIPAY_PRIVATE_KEY: &str =
    include_str!("../../../../3-adapters/alipay/tests/fixtures/test-alipay-private-key.pem");

/// Signs a notification as Alipay would, with the test Alipay key.
pub fn alipay_form(fields: &[(&str, &str)]) -> String {
    let signer =
        Signer::from_setting(SignType::Rsa2, "test", ALIPAY_PRIVATE_KEY).expect("test key");
    vendpay_alipay::signed_form(fields.iter().copied(), &signer).expect("sign")
}

/// Alipay's QR service as the admin route sees it; the real client is exercised against the sandbox in
/// the end-to-end tests.
pub struct FixedQr;

#[async_trait]
impl QrProvisioner for FixedQr {
    async fn create(
        &self,
        device: &DeviceRecord,
        notify_url: &str,
    ) -> Result<QrCode, ProvisionError> {
        assert!(notify_url.ends_with(&format!("/alipay/notify/{}", device.device.id)));
        Ok(QrCode {
            qrcode: format!("https://qr.alipay.com/test-{}", device.device.id),
            qrcode_img_url: "https://example.com/qr.png".into(),
        })
    }
}

pub struct Harness {
    pub api: Api,
    pub clock: Arc<ManualClock>,
    pub ledger: Ledger,
    pub refunds: Arc<Recorder>,
    /// The next N commits fail as a busy database would (a transient storage failure).
    pub fail_commits: Arc<AtomicUsize>,
}

pub async fn harness() -> Harness {
    harness_with(|_| None).await
}

/// A harness whose notification route asks `notify_verify(clock)` for its second check.
pub async fn harness_with(
    notify_verify: impl FnOnce(Arc<ManualClock>) -> Option<Arc<dyn NotifyCheck>>,
) -> Harness {
    let clock = Arc::new(ManualClock::at(T0));
    let store = Arc::new(
        SqliteStore::open_with_clock(Location::Memory, clock.clone())
            .await
            .expect("sqlite"),
    );
    let fail_commits = Arc::new(AtomicUsize::new(0));
    let sessions = Arc::new(FlakyStore {
        inner: store.clone(),
        fail_commits: fail_commits.clone(),
    });
    let rec = Arc::new(Recorder::default());
    let ledger = Ledger::new(
        sessions.clone(),
        rec.clone(),
        rec.clone(),
        clock.clone(),
        Windows::default(),
    );
    let inventory = Inventory::new(store.clone(), sessions.clone(), store.clone());
    let facts: Arc<dyn vendpay_app::FactStore> = store.clone();
    let api = Api::new(ApiParts {
        ledger: ledger.clone(),
        inventory,
        devices: store,
        device_key: DeviceKey::from_hex("DEVICE_KEY", &"5a".repeat(32)).expect("key"),
        admin: AdminAuth::Token(TOKEN.into()),
        qr: Arc::new(FixedQr),
        public_base_url: "https://pay.example.com/".into(),
        notify: NotifySettings {
            verifier: Arc::new(
                Verifier::new()
                    .with_public_key("ALIPAY_PUBLIC_KEY", ALIPAY_PUBLIC_KEY)
                    .expect("test key"),
            ),
            partner: PartnerId::parse(PARTNER).expect("partner"),
            notify_verify: notify_verify(clock.clone()),
        },
        reports: Some(vendpay_api::reports::Reports::new(facts, "+08:00")),
    });
    Harness {
        api,
        clock,
        ledger,
        refunds: rec,
        fail_commits,
    }
}

/// The SQLite store, whose commits can be made to fail a given number of times.
pub struct FlakyStore {
    inner: Arc<SqliteStore>,
    fail_commits: Arc<AtomicUsize>,
}

#[async_trait]
impl SessionStore for FlakyStore {
    async fn machine(&self, id: &DeviceId) -> Result<Option<Machine>, StoreError> {
        self.inner.machine(id).await
    }
    async fn session(&self, id: &SessionId) -> Result<Option<Session>, StoreError> {
        self.inner.session(id).await
    }
    async fn trade(&self, trade_no: &TradeNo) -> Result<Option<PaymentOutcome>, StoreError> {
        self.inner.trade(trade_no).await
    }
    async fn request(
        &self,
        device: &DeviceId,
        request_id: &RequestId,
    ) -> Result<Option<RequestRecord>, StoreError> {
        self.inner.request(device, request_id).await
    }
    async fn refund(&self, refund_id: &RefundId) -> Result<Option<RefundRecord>, StoreError> {
        self.inner.refund(refund_id).await
    }
    async fn machine_selling(
        &self,
        id: &DeviceId,
        slot: &Slot,
    ) -> Result<Option<(Machine, Option<Product>)>, StoreError> {
        self.inner.machine_selling(id, slot).await
    }
    async fn slots(&self, device: &DeviceId) -> Result<Vec<SlotStock>, StoreError> {
        self.inner.slots(device).await
    }
    async fn product(&self, sku: &Sku) -> Result<Option<Product>, StoreError> {
        self.inner.product(sku).await
    }
    async fn commit(&self, commit: &Commit) -> Result<(), StoreError> {
        let fail = self
            .fail_commits
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if fail {
            return Err(StoreError::Unavailable("injected: database busy".into()));
        }
        self.inner.commit(commit).await
    }
    async fn due(&self, now: Timestamp, limit: usize) -> Result<Vec<SessionId>, StoreError> {
        self.inner.due(now, limit).await
    }
    async fn pending_refunds(
        &self,
        due_by: Timestamp,
        limit: usize,
    ) -> Result<Vec<RefundRecord>, StoreError> {
        self.inner.pending_refunds(due_by, limit).await
    }
}

pub async fn send(api: &Api, req: Request<Bytes>) -> (u16, Value) {
    let res: Response<Bytes> = api.handle(req).await;
    let status = res.status().as_u16();
    let body = serde_json::from_slice(res.body()).unwrap_or(Value::Null);
    (status, body)
}

pub fn admin(method: &str, path: &str, body: Value) -> Request<Bytes> {
    Request::builder()
        .method(method)
        .uri(path)
        .header("authorization", format!("Bearer {TOKEN}"))
        .body(Bytes::from(if body.is_null() {
            String::new()
        } else {
            body.to_string()
        }))
        .expect("request")
}

pub fn signed(
    method: &str,
    path: &str,
    device: &str,
    secret: &str,
    ts: i64,
    body: &str,
) -> Request<Bytes> {
    let ts = ts.to_string();
    Request::builder()
        .method(method)
        .uri(path)
        .header("x-device-id", device)
        .header("x-timestamp", &ts)
        .header(
            "x-signature",
            sign(secret, method, path, &ts, body.as_bytes()),
        )
        .body(Bytes::from(body.to_owned()))
        .expect("request")
}

impl Harness {
    pub async fn register(&self, id: &str, mode: &str) -> String {
        let (status, body) = send(
            &self.api,
            admin(
                "POST",
                "/admin/devices",
                json!({"device_id": id, "name": "Lobby", "district": "Xuhui", "currency": "CNY", "mode": mode}),
            ),
        )
        .await;
        assert_eq!(status, 201, "{body}");
        body["secret"].as_str().expect("secret").to_owned()
    }

    pub fn now_secs(&self) -> i64 {
        self.clock.now().secs()
    }

    pub async fn call(
        &self,
        method: &str,
        path: &str,
        device: &str,
        secret: &str,
        body: &str,
    ) -> (u16, Value) {
        let req = signed(method, path, device, secret, self.now_secs(), body);
        send(&self.api, req).await
    }

    pub async fn pay(&self, device: &str, trade: &str, minor: u64) {
        let p = IncomingPayment {
            trade_no: trade.parse().expect("trade"),
            merchant_trade_no: format!("M{trade}").parse().expect("out"),
            amount: Money::new(minor, Currency::Cny).expect("amount"),
            buyer_id: None,
            paid_at: self.clock.now(),
        };
        self.ledger
            .payment(&device.parse().expect("device"), &p)
            .await
            .expect("payment");
    }
}

pub fn cny(minor: u64) -> Value {
    json!({"minor": minor, "currency": "CNY"})
}
