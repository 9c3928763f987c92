//! What vendpay's five Lambda functions (`functions/*`) share, so each `main.rs` stays a few lines:
//!
//! - [`env`]: the settings of design §5 read once from the environment, with Secrets Manager / SSM
//!   references (`secretsmanager:<id>#<field>`, `ssm:<name>`) resolved at start-up.
//! - [`wiring`]: one AWS `SdkConfig` and the adapters built from it (DynamoDB store, SQS deadline and
//!   refund queues, EventBridge Scheduler for long deadlines), the ledger, the Alipay client.
//! - [`http`]: API Gateway HTTP API (v2) requests to and from the `http` types the routes of
//!   `vendpay-api` answer — the very code the local server runs.
//! - [`sqs`]: SQS batches with partial batch failures: retryable errors fail their record (SQS
//!   redelivers it, then dead-letters it), permanent ones are logged with an `alert` field and dropped.
//! - [`StartError`]: why a function refuses to start; it always names the setting.

pub mod env;
pub mod http;
pub mod sqs;
pub mod wiring;

pub use env::Env;

/// Why a function did not start. Printed once by `main`; the message names the setting at fault.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Setting(#[from] vendpay_api::settings::SettingError),
    #[error(transparent)]
    Alipay(#[from] vendpay_alipay::ConfigError),
    #[error(transparent)]
    DeviceKey(#[from] vendpay_api::auth::KeyError),
    #[error("HTTP client: {0}")]
    HttpClient(String),
}

/// Logs through `tracing`: JSON when Lambda's log format is JSON (`AWS_LAMBDA_LOG_FORMAT`), level from
/// `AWS_LAMBDA_LOG_LEVEL` or `RUST_LOG`.
pub fn init_logging() {
    lambda_runtime::tracing::init_default_subscriber();
}
