//! `qr-provision`: the operator routes `/admin/...` on Lambda — register a machine (its secret shown
//! once), create its Alipay QR code (`notify_url = PUBLIC_BASE_URL + /alipay/notify/{device_id}`,
//! idempotent), the printable SVG label, session inspection, and catalogue and inventory (products,
//! slot maps, restocks, a machine's inventory, the fleet's restocking round).
//!
//! The routes are `vendpay_api::AdminRoutes`, the code the local server runs. On AWS the routes carry
//! API Gateway's IAM authorization and the handler refuses a request that did not come through it; with
//! `ADMIN_TOKEN` set, a bearer token is required instead (a deployment without IAM auth).

pub mod handler;

use aws_config::SdkConfig;
use vendpay_api::{settings, AdminAuth, AdminRoutes, DeviceKey};
use vendpay_lambda::wiring::{self, NotWired};
use vendpay_lambda::{setting_groups, Env, StartError};

/// The settings this function reads, by group (see `vendpay_lambda::setting_groups`).
pub const SETTING_GROUPS: &[&[&str]] = &[
    setting_groups::LEDGER_SETTINGS,
    setting_groups::ADMIN_SETTINGS,
    setting_groups::ALIPAY_SETTINGS,
    setting_groups::MERCHANT_SETTINGS,
];

/// Every setting this function reads; the SAM template sets exactly these (infra/function-env.json).
pub fn settings() -> Vec<&'static str> {
    setting_groups::names(SETTING_GROUPS)
}

pub fn build(sdk: &SdkConfig, env: &Env) -> Result<AdminRoutes, StartError> {
    let clock = wiring::clock();
    let store = wiring::store(sdk, env)?;
    // Operator routes read sessions but never move money: no queues are granted to this function.
    let ledger = wiring::ledger(
        store.clone(),
        std::sync::Arc::new(NotWired("qr-provision")),
        std::sync::Arc::new(NotWired("qr-provision")),
        clock.clone(),
        env,
    )?;
    let alipay = wiring::alipay(env, clock, true)?;
    let admin = match settings::admin_token(&env.lookup())? {
        Some(token) => AdminAuth::Token(token),
        None => AdminAuth::Iam,
    };
    Ok(AdminRoutes {
        ledger,
        inventory: wiring::inventory(store.clone()),
        devices: store,
        device_key: DeviceKey::from_hex("DEVICE_KEY", &env.required("DEVICE_KEY")?)?,
        admin,
        qr: alipay.alipay,
        public_base_url: settings::base_url(&env.required("PUBLIC_BASE_URL")?)?,
        // The facts are in S3; the sales report is the Athena workgroup's named queries.
        reports: None,
    })
}
