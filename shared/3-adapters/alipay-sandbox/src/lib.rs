//! A local Alipay mapi gateway for development and tests (see `docs/alipay.md`, “Sandbox”).
//!
//! - [`books`]: QR codes, trades and refunds under Alipay's rules (no I/O).
//! - `gateway`: the shared state and `gateway.do` — real signatures both ways (it verifies the
//!   merchant's signature with the merchant's public key and signs its answers with its own key) and
//!   the fault switches.
//! - `notifications`: the "pay" operation that sends signed notifications on Alipay's resend schedule,
//!   and `notify_verify`.
//! - `routes`: the axum routes (`gateway.do`, `/sandbox/...`) and serving them.
//! - This module: the public types ([`Sandbox`], its config, faults, errors and receipts) and the
//!   built-in test keys.

pub mod books;

mod gateway;
mod notifications;
mod routes;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use vendpay_alipay::{KeyError, PartnerId, SignType};

pub use crate::routes::{FaultRequest, PayRequest};

/// The built-in test keys (`shared/3-adapters/alipay-sandbox/keys/`, see its README): for local runs and tests
/// only, never for a real merchant.
pub const TEST_ALIPAY_PRIVATE_KEY: &str = include_str!("../keys/test-alipay-private-key.pem");
pub const TEST_ALIPAY_PUBLIC_KEY: &str = include_str!("../keys/test-alipay-public-key.pem");
pub const TEST_MERCHANT_PRIVATE_KEY: &str = include_str!("../keys/test-merchant-private-key.pem");
pub const TEST_MERCHANT_PUBLIC_KEY: &str = include_str!("../keys/test-merchant-public-key.pem");

/// Alipay's resend schedule after a first attempt: 2m, 10m, 10m, 1h, 2h, 6h, 15h (see
/// `docs/alipay.md`, “Sandbox”).
pub const RESEND_SCHEDULE_SECS: [u64; 7] = [120, 600, 600, 3600, 7200, 21_600, 54_000];

/// A request a gateway fault switch turns into a failure (one switch per gateway call, in order).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GatewayFault {
    /// Refunds are made but answered `result_code=UNKNOW`; other services answer `<error>UNKNOW`.
    Unknow,
    /// Answers only after [`SandboxConfig::timeout_delay`].
    Timeout,
    /// Answers an HTML error page with status 200.
    Html,
}

/// How the answer to one refund is spoiled. Set per `partner_refund_id` and kept until cleared, so a
/// retry meets it too; the refund itself is still made, because the hard case for a client is a refund
/// that went through while its answer cannot be trusted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefundFault {
    /// The answer shows `SUCCESS` but its signature covers other field values.
    BadSignature,
    /// A correctly signed `<qrcodeinfo>` node (another service's) carrying the refund's fields.
    UnexpectedNode,
    /// HTTP 408 with an empty body.
    RequestTimeout,
    /// `FAIL` / `REPEATED_REFUNDMENT_REQUEST` without `refund_amount` and `currency`.
    RepeatedWithoutAmount,
}

/// What happens to the next notification (one switch per payment, in order).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NotificationFault {
    Drop,
    Duplicate,
}

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error("{0}")]
    Config(String),
    #[error("pay refused: {0}")]
    Pay(&'static str),
    #[error("HTTP client: {0}")]
    Http(String),
}

/// How the sandbox is set up.
#[derive(Clone, Debug)]
pub struct SandboxConfig {
    pub partner: PartnerId,
    /// The key the sandbox signs answers and notifications with ("Alipay's" private key).
    pub alipay_private_key: String,
    /// The merchant's public key, to verify RSA / RSA2 requests.
    pub merchant_public_key: String,
    /// The shared MD5 key, if MD5 requests are to be accepted.
    pub md5_key: Option<String>,
    /// The sign type of notifications.
    pub notify_sign_type: SignType,
    /// Multiplies every resend delay (1.0 = Alipay's real schedule; tests use ~0.0001).
    pub time_scale: f64,
    /// How long a `timeout` fault holds the answer.
    pub timeout_delay: Duration,
    /// How long a `notify_id` stays valid for `notify_verify`.
    pub notify_id_ttl: Duration,
    /// Answer a repeated refund with `REPEATED_REFUNDMENT_REQUEST` (as some Alipay versions do)
    /// instead of the first `SUCCESS`.
    pub repeated_refund_as_error: bool,
}

impl SandboxConfig {
    /// The built-in test keys, real time.
    pub fn with_test_keys(partner: PartnerId) -> SandboxConfig {
        SandboxConfig {
            partner,
            alipay_private_key: TEST_ALIPAY_PRIVATE_KEY.to_owned(),
            merchant_public_key: TEST_MERCHANT_PUBLIC_KEY.to_owned(),
            md5_key: None,
            notify_sign_type: SignType::Rsa2,
            time_scale: 1.0,
            timeout_delay: Duration::from_secs(20),
            notify_id_ttl: Duration::from_secs(60),
            repeated_refund_as_error: false,
        }
    }
}

/// One attempt to deliver a notification.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Delivery {
    pub trade_no: String,
    pub notify_id: String,
    pub attempt: u32,
    /// `None` when the POST failed; else the answer body.
    pub answer: Option<String>,
    pub dropped: bool,
}

/// The trade a "pay" created.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PaymentReceipt {
    pub trade_no: String,
    pub out_trade_no: String,
    pub notify_id: String,
}

/// The sandbox; cheap to clone, all clones share one state.
#[derive(Clone)]
pub struct Sandbox {
    pub(crate) inner: Arc<gateway::Inner>,
}

/// Poisoning only follows a panic in another handler; the books are still consistent (every change is
/// a single insert), so keep serving.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A sandbox serving in the background; dropping it stops the server.
pub struct RunningSandbox {
    pub addr: SocketAddr,
    pub(crate) task: tokio::task::JoinHandle<()>,
}

impl RunningSandbox {
    pub fn gateway_url(&self) -> String {
        format!("http://{}/gateway.do", self.addr)
    }
}

impl Drop for RunningSandbox {
    fn drop(&mut self) {
        self.task.abort();
    }
}
