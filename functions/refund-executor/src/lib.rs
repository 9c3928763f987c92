//! `refund-executor`: sends refunds to Alipay from the refund queue.
//!
//! Each message names a refund whose id and amount were fixed when it was decided; every attempt sends
//! exactly those (`spot.refund`, `is_sync=Y`), so Alipay refunds it at most once however often it is
//! sent. Success is recorded and closes the session once all its refunds are final; a permanent refusal
//! is recorded as failed for an operator (`alert = "refund_failed_permanently"`); anything uncertain
//! (timeout, `UNKNOW`, a system error, an HTML page) is retried with exponential backoff by stretching
//! the message's visibility timeout, then dead-lettered, and the sweep re-sends it while it is pending.

pub mod handler;

use std::sync::Arc;

use aws_config::SdkConfig;
use vendpay_lambda::wiring::{self, NotWired};
use vendpay_lambda::{setting_groups, Env, StartError};

/// The settings this function reads, by group (see `vendpay_lambda::setting_groups`).
pub const SETTING_GROUPS: &[&[&str]] = &[
    setting_groups::LEDGER_SETTINGS,
    &["REFUND_QUEUE_URL"],
    setting_groups::ALIPAY_SETTINGS,
];

/// Every setting this function reads; the SAM template sets exactly these (infra/function-env.json).
pub fn settings() -> Vec<&'static str> {
    setting_groups::names(SETTING_GROUPS)
}

pub use vendpay_lambda::consumers::refunds::Executor;

pub fn build(sdk: &SdkConfig, env: &Env) -> Result<Executor, StartError> {
    let clock = wiring::clock();
    // Recording a refund's outcome never schedules a deadline or issues another refund.
    let ledger = wiring::ledger(
        wiring::store(sdk, env)?,
        Arc::new(NotWired("refund-executor")),
        Arc::new(NotWired("refund-executor")),
        clock.clone(),
        env,
    )?;
    let queue_url = env.required("REFUND_QUEUE_URL")?;
    Ok(Executor {
        ledger,
        alipay: wiring::alipay(env, clock, false)?.alipay,
        sqs: aws_sdk_sqs::Client::new(sdk),
        queue_url,
    })
}
