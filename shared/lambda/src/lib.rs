//! What vendpay's five Lambda functions (`functions/*`) share, so each `main.rs` stays a few lines:
//!
//! - [`env`]: the settings (see `docs/contract.md`, “Configuration”) read once from the
//!   environment, with Secrets Manager / SSM references (`secretsmanager:<id>#<field>`, `ssm:<name>`)
//!   resolved at start-up.
//! - [`wiring`]: one AWS `SdkConfig` and the adapters built from it (DynamoDB store, SQS deadline and
//!   refund queues, EventBridge Scheduler for long deadlines), the ledger, the Alipay client.
//! - [`http`]: API Gateway HTTP API (v2) requests to and from the `http` types the routes of
//!   `vendpay-api` answer — the very code the local server runs.
//! - [`sqs`]: SQS batches with partial batch failures: retryable errors fail their record (SQS
//!   redelivers it, then dead-letters it), permanent ones are logged with an `alert` field and dropped.
//! - [`StartError`]: why a function refuses to start; it always names the setting.
//! - [`InvocationError`]: why an invocation failed as a whole, with a named `errorType`.

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
    Alipay(#[from] vendpay_alipay::AlipayConfigError),
    #[error(transparent)]
    DeviceKey(#[from] vendpay_api::auth::KeyError),
    #[error("HTTP client: {0}")]
    HttpClient(String),
}

/// Why an invocation failed as a whole (Lambda, or the event source, retries it). The Runtime API
/// reports it with a named `errorType` — what CloudWatch shows and an alarm can match — instead of
/// the Rust type name of a boxed error.
#[derive(Debug, thiserror::Error)]
pub enum InvocationError {
    /// Not an event this function is wired to: a misconfigured trigger, never fixed by a retry.
    #[error("{0}")]
    UnrecognisedEvent(String),
    /// The sweep could not finish (storage unavailable, contention); the next minute's sweep retries.
    #[error("sweep failed: {0}")]
    Sweep(#[from] vendpay_app::AppError),
    #[error("answer not serialisable: {0}")]
    Answer(#[from] serde_json::Error),
}

impl From<InvocationError> for lambda_runtime::Diagnostic {
    fn from(e: InvocationError) -> Self {
        let error_type = match e {
            InvocationError::UnrecognisedEvent(_) => "UnrecognisedEvent",
            InvocationError::Sweep(_) => "SweepFailed",
            InvocationError::Answer(_) => "AnswerNotSerialisable",
        };
        lambda_runtime::Diagnostic {
            error_type: error_type.to_owned(),
            error_message: e.to_string(),
        }
    }
}

/// Logs through `tracing`: JSON when Lambda's log format is JSON (`AWS_LAMBDA_LOG_FORMAT`), level from
/// `AWS_LAMBDA_LOG_LEVEL`, else `RUST_LOG`, else info — as the runtime's own default subscriber, but
/// never with ANSI colours, which would land as escape codes in CloudWatch with the Text log format.
pub fn init_logging() {
    use tracing_subscriber::filter::{EnvFilter, LevelFilter};

    let level = std::env::var("AWS_LAMBDA_LOG_LEVEL")
        .or_else(|_| std::env::var("RUST_LOG"))
        .ok()
        .and_then(|level| level.parse::<LevelFilter>().ok())
        .unwrap_or(LevelFilter::INFO);
    let logs = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_target(false)
        .without_time()
        .with_env_filter(
            EnvFilter::builder()
                .with_default_directive(level.into())
                .from_env_lossy(),
        );
    let json = std::env::var("AWS_LAMBDA_LOG_FORMAT")
        .is_ok_and(|format| format.eq_ignore_ascii_case("json"));
    // `try_init`: a second call (tests building several functions in one process) keeps the first.
    let _ = if json {
        logs.json().try_init()
    } else {
        logs.try_init()
    };
}
