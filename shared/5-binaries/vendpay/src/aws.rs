//! `vendpay serve --store aws`: the same routes on DynamoDB + SQS (+ EventBridge Scheduler beyond 15
//! minutes), with the deadlines and refunds carried out in this process by the Lambda functions' own
//! handlers.
//!
//! - [`start`] builds everything with `vendpay_lambda::wiring` (the functions' wiring: the DynamoDB store,
//!   the SQS deadline scheduler with its Scheduler fallback, the SQS refund queue, the ledger), after
//!   [`ensure_resources`] has created the table and the queues if asked to.
//! - Two pollers long-poll the deadline queue and the refund queue (`ReceiveMessage` with
//!   `WaitTimeSeconds` 20, up to 10 messages, every system attribute), turn each batch into the
//!   `SqsEvent` Lambda would deliver and hand it to the consumers the functions run
//!   (`vendpay_lambda::consumers::{deadlines, refunds}`); the messages not reported as batch item failures are deleted,
//!   the others come back after their visibility timeout (the refund executor stretches it for backoff).
//! - Once a minute (and once at start) `consumers::deadlines::sweep` settles whatever is overdue and
//!   re-sends refunds whose message was lost — the safety net the Lambda deployment runs on a schedule.
//!
//! Nothing here holds money state: every decision is in DynamoDB, every pending action is a message, so
//! a killed process loses nothing (a message being handled comes back after its visibility timeout).

use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use aws_config::SdkConfig;
use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use aws_sdk_sqs::error::DisplayErrorContext;
use aws_sdk_sqs::types::{DeleteMessageBatchRequestEntry, MessageSystemAttributeName};
use tokio::task::JoinHandle;
use vendpay_api::alipay::Alipay;
use vendpay_app::inventory::Inventory;
use vendpay_app::{DeviceStore, Ledger};
use vendpay_domain::Clock;
use vendpay_lambda::consumers::{deadlines, refunds};
use vendpay_lambda::wiring::{self, NotWired};
use vendpay_lambda::Env;

use crate::config::{AwsConfig, DEFAULT_TABLE_NAME};
use crate::error::ServeError;

/// `WaitTimeSeconds` of every receive: SQS's maximum, so an idle queue costs 3 requests a minute.
pub const WAIT_TIME_SECS: i32 = 20;
/// `MaxNumberOfMessages` of every receive: SQS's maximum (and Lambda's default batch size).
pub const MAX_MESSAGES: i32 = 10;
/// How often the sweep runs (the Lambda deployment's schedule).
pub const SWEEP_EVERY: Duration = Duration::from_secs(60);
/// After a failed receive, the pause before the next one doubles from 1 s up to this.
pub const MAX_RECEIVE_BACKOFF: Duration = Duration::from_secs(30);

/// The resources in use, for the start-up banner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsResources {
    pub table: String,
    pub deadline_queue_url: String,
    pub refund_queue_url: String,
    /// What this start created (`table <name>`, `queue <name>`).
    pub created: Vec<String>,
}

/// What [`start`] hands the server.
pub(crate) struct Running {
    pub(crate) ledger: Ledger,
    /// Catalogue and inventory over the same table as the ledger.
    pub(crate) inventory: Inventory,
    pub(crate) devices: Arc<dyn DeviceStore>,
    pub(crate) resources: AwsResources,
    pub(crate) tasks: Vec<JoinHandle<()>>,
}

fn resource_error(setting: &'static str, reason: impl Into<String>) -> ServeError {
    ServeError::AwsResource {
        setting,
        reason: reason.into(),
    }
}

/// Builds the ledger, the inventory service and the device store on AWS and starts the two pollers
/// and the sweep.
pub(crate) async fn start(
    aws: &AwsConfig,
    clock: Arc<dyn Clock>,
    alipay: Arc<Alipay>,
    device_key: &vendpay_api::DeviceKey,
) -> Result<Running, ServeError> {
    let sdk = wiring::sdk_config().await;
    let (env, resources) = ensure_resources(&sdk, &aws.env, aws.create_missing).await?;
    // The facts' buyer keys: `ANALYTICS_KEY` when given, else derived from the server's device key
    // (its setting or its key file), as on SQLite.
    let env = env.or_with("DEVICE_KEY", device_key.to_hex());

    // The store and ledger the HTTP routes and the deadline function use (as `deadline::build`).
    let (store, ledger) = wiring::dispatching_ledger(&sdk, &env, clock.clone())?;
    // As `refund_executor::build` wires it: recording a refund's outcome never schedules a deadline or
    // issues another refund. The Alipay client is the server's (sandbox or gateway).
    let executor = Arc::new(refunds::Executor {
        ledger: wiring::ledger(
            store.clone(),
            Arc::new(NotWired("refund-executor")),
            Arc::new(NotWired("refund-executor")),
            clock,
            &env,
        )?,
        alipay,
        sqs: aws_sdk_sqs::Client::new(&sdk),
        queue_url: resources.refund_queue_url.clone(),
    });

    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let region = sdk.region().map(|r| r.to_string());
    let mut tasks = Vec::new();
    let deadlines = ledger.clone();
    tasks.push(spawn_poller(
        sqs.clone(),
        resources.deadline_queue_url.clone(),
        region.clone(),
        "deadline",
        move |batch| {
            let ledger = deadlines.clone();
            async move { deadlines::queue(&ledger, &batch).await }
        },
    ));
    tasks.push(spawn_poller(
        sqs,
        resources.refund_queue_url.clone(),
        region,
        "refund",
        move |batch| {
            let executor = executor.clone();
            async move { refunds::handle(&executor, &batch).await }
        },
    ));
    let sweeper = ledger.clone();
    tasks.push(tokio::spawn(async move {
        let mut every = tokio::time::interval(SWEEP_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            // Errors are logged by the handler; the next minute tries again.
            let _ = deadlines::sweep(&sweeper).await;
        }
    }));

    let inventory = Inventory::new(store.clone(), store.clone(), store.clone());
    let devices: Arc<dyn DeviceStore> = store;
    Ok(Running {
        ledger,
        inventory,
        devices,
        resources,
        tasks,
    })
}

/// `vendpay aws-setup`: creates whatever of the table and the two queues is missing, exactly as
/// `serve --store aws --create-missing` would, and returns shell lines exporting their settings — what
/// the Lambda functions need under `cargo lambda watch` against moto (README, "Lambda functions").
/// Running it again creates nothing and prints the same lines.
pub async fn setup(env: &Env) -> Result<String, ServeError> {
    let sdk = wiring::sdk_config().await;
    // ensure_resources logs what it creates.
    let (_, resources) = ensure_resources(&sdk, env, true).await?;
    Ok([
        ("TABLE_NAME", &resources.table),
        ("DEADLINE_QUEUE_URL", &resources.deadline_queue_url),
        ("REFUND_QUEUE_URL", &resources.refund_queue_url),
    ]
    .iter()
    .map(|(name, value)| format!("export {name}='{}'\n", value.replace('\'', "'\\''")))
    .collect())
}

/// The settings with the table and queue URLs filled in; with `create`, whatever is missing is created
/// first (the table from `infra/table.json` with `vendpay_store_aws::create_table`, the queues with
/// `CreateQueue` and SQS's defaults).
pub async fn ensure_resources(
    sdk: &SdkConfig,
    env: &Env,
    create: bool,
) -> Result<(Env, AwsResources), ServeError> {
    let mut created = Vec::new();
    let table = match env.get("TABLE_NAME") {
        Some(t) => t,
        None if create => DEFAULT_TABLE_NAME.to_owned(),
        None => env.required("TABLE_NAME")?,
    };
    if create && ensure_table(sdk, &table).await? {
        created.push(format!("table {table}"));
    }
    let mut queue = async |setting: &'static str, suffix: &str| -> Result<String, ServeError> {
        let given = env.get(setting);
        if !create {
            return Ok(given.unwrap_or_default());
        }
        let name = match &given {
            Some(url) => queue_name(url)
                .ok_or_else(|| resource_error(setting, format!("{url:?} is not a queue URL")))?,
            None => format!("{table}-{suffix}"),
        };
        let (url, made) = ensure_queue(sdk, setting, &name).await?;
        if made {
            created.push(format!("queue {name}"));
        }
        Ok(url)
    };
    let deadline_queue_url = queue("DEADLINE_QUEUE_URL", "deadlines").await?;
    let refund_queue_url = queue("REFUND_QUEUE_URL", "refunds").await?;

    let mut pairs: Vec<(String, String)> = crate::config::AWS_SETTINGS
        .iter()
        .filter_map(|&n| env.get(n).map(|v| (n.to_owned(), v)))
        .collect();
    pairs.retain(|(n, _)| {
        !matches!(
            n.as_str(),
            "TABLE_NAME" | "DEADLINE_QUEUE_URL" | "REFUND_QUEUE_URL"
        )
    });
    pairs.push(("TABLE_NAME".to_owned(), table.clone()));
    pairs.push(("DEADLINE_QUEUE_URL".to_owned(), deadline_queue_url.clone()));
    pairs.push(("REFUND_QUEUE_URL".to_owned(), refund_queue_url.clone()));
    Ok((
        Env::from_pairs(pairs),
        AwsResources {
            table,
            deadline_queue_url,
            refund_queue_url,
            created,
        },
    ))
}

/// The queue's name: the last segment of its URL.
fn queue_name(url: &str) -> Option<String> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))?;
    let name = rest.trim_end_matches('/').rsplit_once('/')?.1;
    (!name.is_empty()).then(|| name.to_owned())
}

/// `true` if the table was created now.
async fn ensure_table(sdk: &SdkConfig, table: &str) -> Result<bool, ServeError> {
    let client = aws_sdk_dynamodb::Client::new(sdk);
    match client.describe_table().table_name(table).send().await {
        Ok(_) => Ok(false),
        Err(e)
            if e.as_service_error()
                .is_some_and(|s| s.is_resource_not_found_exception()) =>
        {
            vendpay_store_aws::create_table(&client, table)
                .await
                .map_err(|e| {
                    resource_error("TABLE_NAME", format!("cannot create table {table:?}: {e}"))
                })?;
            tracing::info!(table, "created the DynamoDB table");
            Ok(true)
        }
        Err(e) => Err(resource_error(
            "TABLE_NAME",
            format!(
                "cannot describe table {table:?}: {}",
                aws_sdk_dynamodb::error::DisplayErrorContext(&e)
            ),
        )),
    }
}

/// The queue's URL, creating the queue if it does not exist; `true` if it was created now.
async fn ensure_queue(
    sdk: &SdkConfig,
    setting: &'static str,
    name: &str,
) -> Result<(String, bool), ServeError> {
    let sqs = aws_sdk_sqs::Client::new(sdk);
    match sqs.get_queue_url().queue_name(name).send().await {
        Ok(out) => out
            .queue_url
            .map(|u| (u, false))
            .ok_or_else(|| resource_error(setting, format!("SQS gave no URL for queue {name:?}"))),
        Err(e)
            if e.as_service_error()
                .is_some_and(|s| s.is_queue_does_not_exist()) =>
        {
            let out = sqs
                .create_queue()
                .queue_name(name)
                .send()
                .await
                .map_err(|e| {
                    resource_error(
                        setting,
                        format!("cannot create queue {name:?}: {}", DisplayErrorContext(&e)),
                    )
                })?;
            tracing::info!(queue = name, "created the SQS queue");
            out.queue_url.map(|u| (u, true)).ok_or_else(|| {
                resource_error(setting, format!("SQS gave no URL for queue {name:?}"))
            })
        }
        Err(e) => Err(resource_error(
            setting,
            format!("cannot look up queue {name:?}: {}", DisplayErrorContext(&e)),
        )),
    }
}

/// Long-polls `queue_url` for ever, handing each batch to `handle` as Lambda would and deleting what it
/// did not report as failed.
fn spawn_poller<F, Fut>(
    sqs: aws_sdk_sqs::Client,
    queue_url: String,
    region: Option<String>,
    name: &'static str,
    handle: F,
) -> JoinHandle<()>
where
    F: Fn(SqsEvent) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = SqsBatchResponse> + Send + 'static,
{
    tokio::spawn(async move {
        let mut backoff = Duration::from_secs(1);
        loop {
            let received = sqs
                .receive_message()
                .queue_url(&queue_url)
                .wait_time_seconds(WAIT_TIME_SECS)
                .max_number_of_messages(MAX_MESSAGES)
                .message_system_attribute_names(MessageSystemAttributeName::All)
                .send()
                .await;
            let messages = match received {
                Ok(out) => {
                    backoff = Duration::from_secs(1);
                    out.messages.unwrap_or_default()
                }
                Err(e) => {
                    tracing::warn!(queue = name, error = %DisplayErrorContext(&e), retry_in_secs = backoff.as_secs(), "cannot receive from the queue");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_RECEIVE_BACKOFF);
                    continue;
                }
            };
            if messages.is_empty() {
                continue;
            }
            let batch = to_event(&messages, region.as_deref());
            let response = handle(batch).await;
            let failed: HashSet<&str> = response
                .batch_item_failures
                .iter()
                .map(|f| f.item_identifier.as_str())
                .collect();
            let entries: Vec<DeleteMessageBatchRequestEntry> = messages
                .iter()
                .enumerate()
                .filter(|(_, m)| !m.message_id().is_some_and(|id| failed.contains(id)))
                .filter_map(|(i, m)| {
                    DeleteMessageBatchRequestEntry::builder()
                        .id(i.to_string())
                        .set_receipt_handle(m.receipt_handle().map(str::to_owned))
                        .build()
                        .ok()
                })
                .collect();
            tracing::debug!(
                queue = name,
                received = messages.len(),
                failed = failed.len(),
                "batch handled"
            );
            if entries.is_empty() {
                continue;
            }
            // A message not deleted is handled again after its visibility timeout: harmless, every
            // handler is idempotent.
            match sqs
                .delete_message_batch()
                .queue_url(&queue_url)
                .set_entries(Some(entries))
                .send()
                .await
            {
                Ok(out) => {
                    for f in out.failed {
                        tracing::warn!(
                            queue = name,
                            entry = f.id,
                            code = f.code,
                            "a handled message could not be deleted; it will be handled again"
                        );
                    }
                }
                Err(e) => {
                    tracing::warn!(queue = name, error = %DisplayErrorContext(&e), "handled messages could not be deleted; they will be handled again");
                }
            }
        }
    })
}

/// The batch as Lambda's SQS event source delivers it.
pub fn to_event(messages: &[aws_sdk_sqs::types::Message], region: Option<&str>) -> SqsEvent {
    let mut event = SqsEvent::default();
    event.records = messages
        .iter()
        .map(|m| {
            let mut r = SqsMessage::default();
            r.message_id = m.message_id().map(str::to_owned);
            r.receipt_handle = m.receipt_handle().map(str::to_owned);
            r.body = m.body().map(str::to_owned);
            r.md5_of_body = m.md5_of_body().map(str::to_owned);
            r.md5_of_message_attributes = m.md5_of_message_attributes().map(str::to_owned);
            r.attributes = m
                .attributes()
                .map(|a| {
                    a.iter()
                        .map(|(k, v)| (k.as_str().to_owned(), v.clone()))
                        .collect()
                })
                .unwrap_or_default();
            r.event_source = Some("aws:sqs".to_owned());
            r.aws_region = region.map(str::to_owned);
            r
        })
        .collect();
    event
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_names_come_from_urls() {
        assert_eq!(
            queue_name("https://sqs.us-east-1.amazonaws.com/123456789012/vp-deadlines").as_deref(),
            Some("vp-deadlines")
        );
        assert_eq!(
            queue_name("http://127.0.0.1:5000/123456789012/q/").as_deref(),
            Some("q")
        );
        assert_eq!(queue_name("vp-deadlines"), None);
        assert_eq!(queue_name("https://"), None);
    }

    #[test]
    fn a_received_batch_becomes_a_lambda_event() {
        let m = aws_sdk_sqs::types::Message::builder()
            .message_id("m-1")
            .receipt_handle("rh-1")
            .body(r#"{"session":"s:1","at":"2026-11-26T10:00:00Z"}"#)
            .attributes(MessageSystemAttributeName::ApproximateReceiveCount, "3")
            .attributes(MessageSystemAttributeName::SentTimestamp, "1764122400000")
            .build();
        let event = to_event(&[m], Some("us-east-1"));
        let r = vendpay_lambda::sqs::Record::of(&event.records[0]);
        assert_eq!(r.message_id, "m-1");
        assert_eq!(r.receipt_handle, Some("rh-1"));
        assert_eq!(r.receive_count, 3);
        assert!(r.sent_at.is_some());
        assert_eq!(event.records[0].event_source.as_deref(), Some("aws:sqs"));
    }
}
