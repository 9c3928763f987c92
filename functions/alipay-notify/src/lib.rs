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
use vendpay_lambda::{setting_groups, wiring, Env, StartError};

/// The settings this function reads, by group (see `vendpay_lambda::setting_groups`).
pub const SETTING_GROUPS: &[&[&str]] = &[
    setting_groups::LEDGER_SETTINGS,
    setting_groups::DEADLINE_SETTINGS,
    &["REFUND_QUEUE_URL"],
    setting_groups::ALIPAY_SETTINGS,
    &["ALIPAY_NOTIFY_VERIFY"],
];

/// Every setting this function reads; the SAM template sets exactly these (infra/function-env.json).
pub fn settings() -> Vec<&'static str> {
    setting_groups::names(SETTING_GROUPS)
}

/// Everything the handler needs, built once per execution environment.
pub fn build(sdk: &SdkConfig, env: &Env) -> Result<NotifyRoute, StartError> {
    let clock = wiring::clock();
    let (store, ledger) = wiring::dispatching_ledger(sdk, env, clock.clone())?;
    let alipay = wiring::alipay(env, clock, false)?;
    Ok(NotifyRoute {
        ledger,
        devices: store,
        settings: wiring::notify_settings(&alipay, env)?,
    })
}
