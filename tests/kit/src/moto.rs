//! The moto emulator, as `scripts/with-moto` starts it: it exports `VENDPAY_MOTO_ENDPOINT` (and
//! `AWS_ENDPOINT_URL`, dummy credentials and a region for code that reads the standard settings).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_sqs::config::Credentials;
use aws_sdk_sqs::types::QueueAttributeName;

/// Where `scripts/with-moto` says moto listens.
pub const ENDPOINT_VAR: &str = "VENDPAY_MOTO_ENDPOINT";

/// The moto endpoint. A missing one fails the test with the command that runs it properly.
pub fn endpoint() -> String {
    match std::env::var(ENDPOINT_VAR) {
        Ok(v) if !v.trim().is_empty() => v,
        _ => panic!(
            "{ENDPOINT_VAR} is not set: this test needs moto's server. Run it through the launcher, \
             which installs moto on first use and stops it afterwards:\n\n    \
             scripts/with-moto cargo test -p <crate>\n"
        ),
    }
}

/// One SDK configuration for moto: its endpoint, dummy credentials, a region; nothing read from the
/// machine's AWS profile or instance metadata.
pub async fn sdk() -> SdkConfig {
    sdk_for(&endpoint()).await
}

pub async fn sdk_for(endpoint: &str) -> SdkConfig {
    let region = std::env::var("AWS_REGION").unwrap_or_else(|_| "us-east-1".to_owned());
    aws_config::defaults(BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(Region::new(region))
        .credentials_provider(Credentials::new("testing", "testing", None, None, "moto"))
        .load()
        .await
}

/// `prefix-<random>-<n>`: unique across tests, test binaries and runs against one moto, so tests
/// never share a table or a queue.
pub fn unique(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mix = (nanos as u64)
        ^ (u64::from(std::process::id()) << 32)
        ^ n.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    format!("{prefix}-{mix:016x}-{n}")
}

/// A new SQS queue named `prefix-<unique>` on moto: its URL and its ARN.
pub async fn queue(sdk: &SdkConfig, prefix: &str) -> Queue {
    let sqs = aws_sdk_sqs::Client::new(sdk);
    let url = sqs
        .create_queue()
        .queue_name(unique(prefix))
        .send()
        .await
        .expect("create queue")
        .queue_url
        .expect("queue url");
    let arn = sqs
        .get_queue_attributes()
        .queue_url(&url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .expect("queue attributes")
        .attributes
        .and_then(|a| a.get(&QueueAttributeName::QueueArn).cloned())
        .expect("queue arn");
    Queue { url, arn }
}

/// A queue made by [`queue`].
#[derive(Clone, Debug)]
pub struct Queue {
    pub url: String,
    pub arn: String,
}
