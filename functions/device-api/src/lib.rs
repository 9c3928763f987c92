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
    "DEVICE_KEY",
];

pub fn build(sdk: &SdkConfig, env: &Env) -> Result<DeviceRoutes, StartError> {
    let clock = wiring::clock();
    let store = wiring::store(sdk, env)?;
    let ledger = wiring::ledger(
        store.clone(),
        wiring::deadline_scheduler(sdk, env, clock.clone())?,
        wiring::refund_queue(sdk, env)?,
        clock,
        env,
    )?;
    Ok(DeviceRoutes {
        ledger,
        devices: store,
        device_key: DeviceKey::from_hex("DEVICE_KEY", &env.required("DEVICE_KEY")?)?,
    })
}
