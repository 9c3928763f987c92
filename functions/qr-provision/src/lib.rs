//! `qr-provision`: the operator routes `/admin/...` on Lambda — register a machine (its secret shown
//! once), create its Alipay QR code (`notify_url = PUBLIC_BASE_URL + /alipay/notify/{device_id}`,
//! idempotent), the printable SVG label, session inspection.
//!
//! The routes are `vendpay_api::AdminRoutes`, the code the local server runs. On AWS the routes carry
//! API Gateway's IAM authorization and the handler refuses a request that did not come through it; with
//! `ADMIN_TOKEN` set, a bearer token is required instead (a deployment without IAM auth).

pub mod handler;

use aws_config::SdkConfig;
use vendpay_api::{settings, AdminAuth, AdminRoutes, DeviceKey};
use vendpay_lambda::wiring::{self, NotWired};
use vendpay_lambda::{Env, StartError};

/// Every setting this function reads.
pub const SETTINGS: &[&str] = &[
    "TABLE_NAME",
    "PAY_FIRST_WINDOW_SECS",
    "PURCHASE_FIRST_WINDOW_SECS",
    "ORDER_PAYMENT_WINDOW_SECS",
    "DEVICE_KEY",
    "ADMIN_TOKEN",
    "PUBLIC_BASE_URL",
    "ALIPAY_GATEWAY_URL",
    "ALIPAY_PARTNER_ID",
    "ALIPAY_SIGN_TYPE",
    "ALIPAY_PRIVATE_KEY",
    "ALIPAY_PUBLIC_KEY",
    "ALIPAY_MD5_KEY",
    "ALIPAY_SECONDARY_MERCHANT_ID",
    "ALIPAY_SECONDARY_MERCHANT_NAME",
    "ALIPAY_MERCHANT_INDUSTRY",
    "ALIPAY_SETTLEMENT_CURRENCY",
    "ALIPAY_COUNTRY_CODE",
];

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
        devices: store,
        device_key: DeviceKey::from_hex("DEVICE_KEY", &env.required("DEVICE_KEY")?)?,
        admin,
        qr: alipay.alipay,
        public_base_url: settings::base_url(&env.required("PUBLIC_BASE_URL")?)?,
    })
}
