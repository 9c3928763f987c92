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
use vendpay_lambda::{wiring, Env, StartError};

/// Every setting this function reads.
pub const SETTINGS: &[&str] = &[
    "TABLE_NAME",
    "PAY_FIRST_WINDOW_SECS",
    "PURCHASE_FIRST_WINDOW_SECS",
    "ORDER_PAYMENT_WINDOW_SECS",
    "DEADLINE_QUEUE_URL",
    "DEADLINE_QUEUE_ARN",
    "SCHEDULER_ROLE_ARN",
    "SCHEDULE_GROUP_NAME",
    "REFUND_QUEUE_URL",
];

pub fn build(sdk: &SdkConfig, env: &Env) -> Result<Ledger, StartError> {
    let clock = wiring::clock();
    wiring::ledger(
        wiring::store(sdk, env)?,
        wiring::deadline_scheduler(sdk, env, clock.clone())?,
        wiring::refund_queue(sdk, env)?,
        clock,
        env,
    )
}
