//! `device-api`: the machine routes `/devices/...` on Lambda, from API Gateway (HTTP API) and from an
//! SQS queue carrying the same signed requests (machines that publish through a broker).
//!
//! The routes are `vendpay_api::DeviceRoutes`, the code the local server runs: HMAC request
//! signatures (±300 s, constant-time comparison; the store keeps only a salt, the secret is derived
//! from `DEVICE_KEY`), purchases idempotent on `request_id`, orders on `order_id`, vend results,
//! end-session and the session read.

pub mod handler;

use aws_config::SdkConfig;
use vendpay_api::{DeviceKey, DeviceRoutes};
use vendpay_lambda::{wiring, Env, StartError};

/// The settings this function reads, by group (see `vendpay_lambda::wiring`).
pub const SETTING_GROUPS: &[&[&str]] = &[
    wiring::LEDGER_SETTINGS,
    wiring::DEADLINE_SETTINGS,
    &["REFUND_QUEUE_URL", "DEVICE_KEY"],
];

/// Every setting this function reads; the SAM template sets exactly these (infra/function-env.json).
pub fn settings() -> Vec<&'static str> {
    wiring::names(SETTING_GROUPS)
}

pub fn build(sdk: &SdkConfig, env: &Env) -> Result<DeviceRoutes, StartError> {
    let (store, ledger) = wiring::dispatching_ledger(sdk, env, wiring::clock())?;
    Ok(DeviceRoutes {
        ledger,
        devices: store,
        device_key: DeviceKey::from_hex("DEVICE_KEY", &env.required("DEVICE_KEY")?)?,
    })
}
