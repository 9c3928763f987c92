//! What vendpay's five Lambda functions (`functions/*`) share, so each `main.rs` stays a few lines:
//!
//! - [`setting_groups`]: which settings each function reads, in named groups.
//! - [`env`]: the settings (see `docs/contract.md`, “Configuration”) read once from the
//!   environment, with Secrets Manager / SSM references (`secretsmanager:<id>#<field>`, `ssm:<name>`)
//!   resolved at start-up.
//! - [`wiring`]: one AWS `SdkConfig` and the adapters built from it (DynamoDB store, SQS deadline and
//!   refund queues, EventBridge Scheduler for long deadlines), the ledger, the inventory service, the
//!   Alipay client.
//! - [`http`]: API Gateway HTTP API (v2) requests to and from the `http` types the routes of
//!   `vendpay-api` answer — the very code the local server runs.
//! - [`sqs`]: SQS batches with partial batch failures: retryable errors fail their record (SQS
//!   redelivers it, then dead-letters it), permanent ones are logged with an `alert` field and dropped.
//! - [`consumers`]: the deadline queue's and refund queue's consumers and the sweep, which the
//!   `deadline` and `refund-executor` functions and `vendpay serve --store aws` all run.
//! - [`error`]: [`StartError`], why a function refuses to start (it always names the setting), and
//!   [`InvocationError`], why an invocation failed as a whole, with a named `errorType`.
//!
//! Module order, no cycles: `setting_groups` ← `env` ← `wiring`; `error`; `sqs` ← `consumers`.

pub mod consumers;
pub mod env;
pub mod error;
pub mod http;
pub mod setting_groups;
pub mod sqs;
pub mod wiring;

pub use env::Env;
pub use error::{InvocationError, StartError};

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
