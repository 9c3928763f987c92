//! `device-api`: the machine routes `/devices/...` on Lambda, from API Gateway (HTTP API) and from an
//! SQS queue carrying the same signed requests (machines that publish through a broker).
//!
//! The routes are `vendpay_api::DeviceRoutes`, the code the local server runs: HMAC request
//! signatures (±300 s, constant-time comparison; the store keeps only a salt, the secret is derived
//! from `DEVICE_KEY`), purchases idempotent on `request_id`, orders on `order_id`, vend results,
//! end-session, the session read and the machine's own count of its slots (`POST .../inventory`). A queued command that must be retried is brought back after a
//! short backoff (`handler::backoff`) instead of the queue's visibility timeout, so the retry can still
//! land within the minute a queued command may act in.

pub mod handler;

use aws_config::SdkConfig;
use vendpay_api::{settings, DeviceKey, DeviceRoutes};
use vendpay_lambda::{setting_groups, wiring, Env, StartError};

/// The settings this function reads, by group (see `vendpay_lambda::setting_groups`).
pub const SETTING_GROUPS: &[&[&str]] = &[
    setting_groups::LEDGER_SETTINGS,
    setting_groups::DEADLINE_SETTINGS,
    &["REFUND_QUEUE_URL", "DEVICE_KEY", "DEVICE_EVENTS_QUEUE_URL"],
];

/// Every setting this function reads; the SAM template sets exactly these (infra/function-env.json).
pub fn settings() -> Vec<&'static str> {
    setting_groups::names(SETTING_GROUPS)
}

/// What the handler needs.
pub struct DeviceApi {
    pub routes: DeviceRoutes,
    /// Shortens the wait of a queued command that must be retried.
    pub retries: RetryDelay,
}

/// The device events queue (`DEVICE_EVENTS_QUEUE_URL`), whose messages' visibility the handler changes.
pub struct RetryDelay {
    pub sqs: aws_sdk_sqs::Client,
    pub queue_url: String,
}

impl RetryDelay {
    pub fn new(sdk: &SdkConfig, env: &Env) -> Result<RetryDelay, StartError> {
        const NAME: &str = "DEVICE_EVENTS_QUEUE_URL";
        let queue_url = env.required(NAME)?;
        if !(queue_url.starts_with("https://") || queue_url.starts_with("http://")) {
            return Err(
                settings::invalid(NAME, format!("{queue_url:?} is not a queue URL")).into(),
            );
        }
        Ok(RetryDelay {
            sqs: aws_sdk_sqs::Client::new(sdk),
            queue_url,
        })
    }
}

pub fn build(sdk: &SdkConfig, env: &Env) -> Result<DeviceApi, StartError> {
    let (store, ledger) = wiring::dispatching_ledger(sdk, env, wiring::clock())?;
    Ok(DeviceApi {
        routes: DeviceRoutes {
            ledger,
            inventory: wiring::inventory(store.clone()),
            devices: store,
            device_key: DeviceKey::from_hex("DEVICE_KEY", &env.required("DEVICE_KEY")?)?,
        },
        retries: RetryDelay::new(sdk, env)?,
    })
}
