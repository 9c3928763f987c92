//! Building what a function needs, once, from its settings: one AWS `SdkConfig` and every client from
//! it, one HTTP client for Alipay, keys parsed once.

use std::sync::Arc;

use async_trait::async_trait;
use aws_config::{BehaviorVersion, SdkConfig};
use vendpay_alipay::{AlipayConfig, HttpGateway, MerchantProfile, PartnerId, Verifier};
use vendpay_api::alipay::{Alipay, NotifyCheck};
use vendpay_api::auth::{analytics_key_from_hex, DeviceKey};
use vendpay_api::notify::NotifySettings;
use vendpay_api::settings;
use vendpay_app::inventory::Inventory;
use vendpay_app::{
    DeadlineMessage, DeadlineScheduler, DispatchError, Ledger, RefundMessage, RefundQueue,
};
use vendpay_domain::facts::AnalyticsKey;
use vendpay_domain::{Clock, SystemClock};
use vendpay_store_aws::{DynamoStore, LongDeadlines, SqsDeadlineScheduler, SqsRefundQueue};

use crate::env::Env;
use crate::error::StartError;

/// The one SDK configuration of the process: region, credentials and endpoint (`AWS_ENDPOINT_URL` for
/// an emulator) from the standard sources.
pub async fn sdk_config() -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest()).load().await
}

pub fn store(sdk: &SdkConfig, env: &Env) -> Result<Arc<DynamoStore>, StartError> {
    Ok(Arc::new(DynamoStore::new(sdk, env.required("TABLE_NAME")?)))
}

/// SQS delays, and EventBridge Scheduler beyond 15 minutes when its three settings are given (all or
/// none: a half-configured Scheduler would fail only on the first long deadline).
pub fn deadline_scheduler(
    sdk: &SdkConfig,
    env: &Env,
    clock: Arc<dyn Clock>,
) -> Result<Arc<dyn DeadlineScheduler>, StartError> {
    let url = queue_url(env, "DEADLINE_QUEUE_URL")?;
    let arn = env.get("DEADLINE_QUEUE_ARN");
    let role = env.get("SCHEDULER_ROLE_ARN");
    let long = match (arn, role) {
        (Some(queue_arn), Some(role_arn)) => Some(LongDeadlines {
            queue_arn,
            role_arn,
            group: env.get("SCHEDULE_GROUP_NAME"),
        }),
        (None, None) => None,
        (Some(_), None) => {
            return Err(settings::invalid(
                "SCHEDULER_ROLE_ARN",
                "is required with DEADLINE_QUEUE_ARN",
            )
            .into())
        }
        (None, Some(_)) => {
            return Err(settings::invalid(
                "DEADLINE_QUEUE_ARN",
                "is required with SCHEDULER_ROLE_ARN",
            )
            .into())
        }
    };
    Ok(Arc::new(SqsDeadlineScheduler::new(sdk, url, long, clock)))
}

pub fn refund_queue(sdk: &SdkConfig, env: &Env) -> Result<Arc<dyn RefundQueue>, StartError> {
    Ok(Arc::new(SqsRefundQueue::new(
        sdk,
        queue_url(env, "REFUND_QUEUE_URL")?,
    )))
}

fn queue_url(env: &Env, name: &'static str) -> Result<String, StartError> {
    let url = env.required(name)?;
    if !(url.starts_with("https://") || url.starts_with("http://")) {
        return Err(settings::invalid(name, format!("{url:?} is not a queue URL")).into());
    }
    Ok(url)
}

/// For a function that never dispatches deadlines or refunds (its policy grants no queue): a dispatch
/// there is a bug, reported as a failed dispatch that the sweep then repairs.
#[derive(Clone, Debug)]
pub struct NotWired(pub &'static str);

#[async_trait]
impl DeadlineScheduler for NotWired {
    async fn schedule(&self, message: &DeadlineMessage) -> Result<(), DispatchError> {
        Err(DispatchError(format!(
            "{} does not schedule deadlines (session {})",
            self.0, message.session
        )))
    }
}

#[async_trait]
impl RefundQueue for NotWired {
    async fn enqueue(&self, message: &RefundMessage) -> Result<(), DispatchError> {
        Err(DispatchError(format!(
            "{} does not send refunds (refund {})",
            self.0, message.refund_id
        )))
    }
}

pub fn clock() -> Arc<dyn Clock> {
    Arc::new(SystemClock)
}

/// The ledger over the DynamoDB store with the windows of the settings.
pub fn ledger(
    store: Arc<DynamoStore>,
    deadlines: Arc<dyn DeadlineScheduler>,
    refunds: Arc<dyn RefundQueue>,
    clock: Arc<dyn Clock>,
    env: &Env,
) -> Result<Ledger, StartError> {
    let windows = settings::windows(&env.lookup())?;
    Ok(Ledger::new(store, deadlines, refunds, clock, windows)
        .with_analytics_key(analytics_key(env)?))
}

/// The key of the facts' buyer keys: `ANALYTICS_KEY`, else derived from `DEVICE_KEY`. Every function
/// that writes facts must hash buyers alike, so a function with neither does not start.
pub fn analytics_key(env: &Env) -> Result<AnalyticsKey, StartError> {
    let given = |name: &'static str| env.get(name).filter(|v| !v.trim().is_empty());
    if let Some(hex) = given("ANALYTICS_KEY") {
        return analytics_key_from_hex("ANALYTICS_KEY", &hex)
            .map_err(|e| settings::invalid("ANALYTICS_KEY", e.to_string()).into());
    }
    if let Some(hex) = given("DEVICE_KEY") {
        return DeviceKey::from_hex("DEVICE_KEY", &hex)
            .map(|k| k.analytics_key())
            .map_err(|e| settings::invalid("DEVICE_KEY", e.to_string()).into());
    }
    Err(settings::invalid(
        "ANALYTICS_KEY",
        "is not set (nor DEVICE_KEY to derive it from): facts would name no buyer",
    )
    .into())
}

/// Catalogue and inventory over the DynamoDB store (products, slot maps and stock live in the same
/// table as the sessions, so a sale's stock change rides in the ledger's write).
pub fn inventory(store: Arc<DynamoStore>) -> Inventory {
    Inventory::new(store.clone(), store.clone(), store)
}

/// The store and the ledger of a function that dispatches deadlines and refunds (SQS, and Scheduler
/// for long deadlines).
pub fn dispatching_ledger(
    sdk: &SdkConfig,
    env: &Env,
    clock: Arc<dyn Clock>,
) -> Result<(Arc<DynamoStore>, Ledger), StartError> {
    let store = store(sdk, env)?;
    let ledger = ledger(
        store.clone(),
        deadline_scheduler(sdk, env, clock.clone())?,
        refund_queue(sdk, env)?,
        clock,
        env,
    )?;
    Ok((store, ledger))
}

/// The Alipay client (one HTTP client with timeouts, keys parsed once), with the merchant fields when
/// the function creates QR codes.
pub struct AlipayParts {
    pub alipay: Arc<Alipay>,
    /// The keys again, for verifying notifications (a `Verifier` is not cloneable).
    pub verifier: Arc<Verifier>,
    pub partner: PartnerId,
}

pub fn alipay(
    env: &Env,
    clock: Arc<dyn Clock>,
    with_merchant: bool,
) -> Result<AlipayParts, StartError> {
    let config = AlipayConfig::from_lookup(env.lookup())?;
    let verifier = Arc::new(AlipayConfig::from_lookup(env.lookup())?.verifier);
    let partner = config.partner.clone();
    let merchant = if with_merchant {
        Some(Arc::new(MerchantProfile::from_lookup(env.lookup())?))
    } else {
        None
    };
    let http = vendpay_alipay::http_client().map_err(|e| StartError::HttpClient(e.to_string()))?;
    Ok(AlipayParts {
        alipay: Arc::new(Alipay {
            gateway: HttpGateway::new(http, Arc::new(config), clock),
            merchant,
        }),
        verifier,
        partner,
    })
}

/// The notification route's settings: the keys, the partner, and `notify_verify` unless
/// `ALIPAY_NOTIFY_VERIFY=false`.
pub fn notify_settings(parts: &AlipayParts, env: &Env) -> Result<NotifySettings, StartError> {
    let verify = settings::notify_verify(&env.lookup())?;
    Ok(NotifySettings {
        verifier: parts.verifier.clone(),
        partner: parts.partner.clone(),
        notify_verify: verify.then(|| parts.alipay.clone() as Arc<dyn NotifyCheck>),
    })
}
