//! `alipay-notify`: `POST /alipay/notify/{device_id}` on Lambda (API Gateway HTTP API).
//!
//! The route itself is `vendpay_api::NotifyRoute`, the code the local server runs: verify the
//! signature (and `notify_verify` for first-seen trades), check the partner and the machine (path and
//! passback must agree), credit the session or pay the order in one conditional write, schedule the
//! deadline, and answer `success` only once it is recorded. This crate builds it from the settings
//! ([`build`]) and adapts Lambda's events ([`handler`]).

pub mod handler;

use aws_config::SdkConfig;
use vendpay_api::NotifyRoute;
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
    "ALIPAY_GATEWAY_URL",
    "ALIPAY_PARTNER_ID",
    "ALIPAY_SIGN_TYPE",
    "ALIPAY_PRIVATE_KEY",
    "ALIPAY_PUBLIC_KEY",
    "ALIPAY_MD5_KEY",
    "ALIPAY_NOTIFY_VERIFY",
];

/// Everything the handler needs, built once per execution environment.
pub fn build(sdk: &SdkConfig, env: &Env) -> Result<NotifyRoute, StartError> {
    let clock = wiring::clock();
    let store = wiring::store(sdk, env)?;
    let ledger = wiring::ledger(
        store.clone(),
        wiring::deadline_scheduler(sdk, env, clock.clone())?,
        wiring::refund_queue(sdk, env)?,
        clock.clone(),
        env,
    )?;
    let alipay = wiring::alipay(env, clock, false)?;
    Ok(NotifyRoute {
        ledger,
        devices: store,
        settings: wiring::notify_settings(&alipay, env)?,
    })
}
