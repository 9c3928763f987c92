//! `deadline`: settles sessions and orders whose window has passed.
//!
//! Triggers: the deadline queue (SQS messages delayed up to 15 minutes, and EventBridge Scheduler's
//! one-time schedules for longer windows, which send the same message to the same queue) and a
//! once-a-minute sweep (an EventBridge Scheduler schedule invoking the function with
//! `{"action": "sweep"}`) that settles whatever is overdue in the deadline index and re-sends refunds
//! whose message was lost. A delayed message cannot be cancelled, so a stale one is a no-op: the
//! ledger settles only what is still due, in one conditional write.

pub mod handler;

use aws_config::SdkConfig;
use vendpay_app::Ledger;
use vendpay_lambda::{setting_groups, wiring, Env, StartError};

/// The settings this function reads, by group (see `vendpay_lambda::setting_groups`).
pub const SETTING_GROUPS: &[&[&str]] = &[
    setting_groups::LEDGER_SETTINGS,
    setting_groups::DEADLINE_SETTINGS,
    &["REFUND_QUEUE_URL"],
];

/// Every setting this function reads; the SAM template sets exactly these (infra/function-env.json).
pub fn settings() -> Vec<&'static str> {
    setting_groups::names(SETTING_GROUPS)
}

pub fn build(sdk: &SdkConfig, env: &Env) -> Result<Ledger, StartError> {
    Ok(wiring::dispatching_ledger(sdk, env, wiring::clock())?.1)
}
