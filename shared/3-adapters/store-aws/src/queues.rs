//! The deadline scheduler and the refund queue on SQS, with EventBridge Scheduler for long deadlines.
//!
//! A deadline at most 15 minutes away is one SQS `SendMessage` with `DelaySeconds` (SQS's maximum is
//! 900 s), rounded up to whole seconds so it is never delivered early. A later one is a one-time
//! EventBridge Scheduler schedule, `at(yyyy-mm-ddThh:mm:ss)` in UTC (also rounded up), flexible window
//! OFF, deleted after it fires, whose target is the same deadline queue with the same JSON message: the
//! deadline handler sees one kind of message whichever way it came. The schedule's name is derived from
//! the session and the deadline, so scheduling the same deadline twice is one schedule
//! (`ConflictException` = already scheduled = fine).

use std::sync::Arc;

use async_trait::async_trait;
use aws_sdk_scheduler::error::ProvideErrorMetadata;
use aws_sdk_scheduler::types::{
    ActionAfterCompletion, FlexibleTimeWindow, FlexibleTimeWindowMode, Target,
};
use sha2::{Digest, Sha256};
use vendpay_app::{DeadlineMessage, DeadlineScheduler, DispatchError, RefundMessage, RefundQueue};
use vendpay_domain::{Clock, SessionId, Timestamp};

use crate::error::dispatch_error;

/// SQS's limit on `DelaySeconds`.
pub const MAX_SQS_DELAY_SECS: u64 = 900;

/// Where long deadlines go: EventBridge Scheduler's target is the deadline queue itself.
#[derive(Clone, Debug)]
pub struct LongDeadlines {
    /// The deadline queue's ARN (the schedule's target).
    pub queue_arn: String,
    /// The role EventBridge Scheduler assumes to send to the queue.
    pub role_arn: String,
    /// The schedule group (`None`: the account's `default` group).
    pub group: Option<String>,
}

/// How a deadline is delivered, decided from how far away it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    /// An SQS message delayed by this many seconds (0..=900).
    Sqs { delay_secs: i32 },
    /// A one-time schedule at this `at(...)` expression.
    Schedule { expression: String, name: String },
}

/// Picks the route for a deadline seen at `now`. Rounds up: a deadline is never delivered early.
pub fn route(message: &DeadlineMessage, now: Timestamp) -> Route {
    let ms = u64::try_from(message.at.millis().saturating_sub(now.millis())).unwrap_or(0);
    let secs = ms.div_ceil(1000);
    if secs <= MAX_SQS_DELAY_SECS {
        // `secs` ≤ 900 here, so it fits.
        Route::Sqs {
            delay_secs: i32::try_from(secs).unwrap_or(900),
        }
    } else {
        Route::Schedule {
            expression: format!("at({})", utc_seconds_ceil(message.at)),
            name: schedule_name(&message.session, message.at),
        }
    }
}

/// The schedule of one (session, deadline): ≤ 64 characters of `[0-9A-Za-z_.-]` as Scheduler requires.
/// Session ids can be 128 characters with `:`, so the name carries a hash of the pair.
pub fn schedule_name(session: &SessionId, at: Timestamp) -> String {
    let digest = Sha256::digest(format!("{session}@{}", at.millis()).as_bytes());
    let hex: String = digest.iter().take(12).map(|b| format!("{b:02x}")).collect();
    format!("vendpay-dl-{}-{hex}", at.millis())
}

/// `yyyy-mm-ddThh:mm:ss` in UTC, rounded up to the next whole second (a schedule must never fire early).
pub fn utc_seconds_ceil(t: Timestamp) -> String {
    let up = Timestamp::from_millis(t.millis().saturating_add(999));
    let (y, m, d, h, mi, s) = up.civil_at_offset(0);
    format!("{y:04}-{m:02}-{d:02}T{h:02}:{mi:02}:{s:02}")
}

/// `DeadlineScheduler` on SQS delays, with EventBridge Scheduler beyond 15 minutes.
#[derive(Clone)]
pub struct SqsDeadlineScheduler {
    sqs: aws_sdk_sqs::Client,
    scheduler: aws_sdk_scheduler::Client,
    queue_url: String,
    long: Option<LongDeadlines>,
    clock: Arc<dyn Clock>,
}

impl SqsDeadlineScheduler {
    /// `long: None` refuses deadlines beyond 15 minutes (the sweep still settles them).
    pub fn new(
        config: &aws_config::SdkConfig,
        queue_url: impl Into<String>,
        long: Option<LongDeadlines>,
        clock: Arc<dyn Clock>,
    ) -> SqsDeadlineScheduler {
        SqsDeadlineScheduler {
            sqs: aws_sdk_sqs::Client::new(config),
            scheduler: aws_sdk_scheduler::Client::new(config),
            queue_url: queue_url.into(),
            long,
            clock,
        }
    }
}

fn encode<T: serde::Serialize>(m: &T) -> Result<String, DispatchError> {
    serde_json::to_string(m).map_err(|e| DispatchError(format!("encoding a message: {e}")))
}

#[async_trait]
impl DeadlineScheduler for SqsDeadlineScheduler {
    async fn schedule(&self, message: &DeadlineMessage) -> Result<(), DispatchError> {
        let body = encode(message)?;
        match route(message, self.clock.now()) {
            Route::Sqs { delay_secs } => {
                self.sqs
                    .send_message()
                    .queue_url(&self.queue_url)
                    .message_body(body)
                    .delay_seconds(delay_secs)
                    .send()
                    .await
                    .map_err(|e| dispatch_error("deadline SendMessage", e))?;
                Ok(())
            }
            Route::Schedule { expression, name } => {
                let Some(long) = &self.long else {
                    return Err(DispatchError(format!(
                        "deadline of {} is more than {MAX_SQS_DELAY_SECS} s away and no scheduler target is configured",
                        message.session
                    )));
                };
                let target = Target::builder()
                    .arn(&long.queue_arn)
                    .role_arn(&long.role_arn)
                    .input(body)
                    .build()
                    .map_err(|e| DispatchError(format!("schedule target: {e}")))?;
                let window = FlexibleTimeWindow::builder()
                    .mode(FlexibleTimeWindowMode::Off)
                    .build()
                    .map_err(|e| DispatchError(format!("schedule window: {e}")))?;
                let sent = self
                    .scheduler
                    .create_schedule()
                    .name(&name)
                    .set_group_name(long.group.clone())
                    .schedule_expression(expression)
                    .schedule_expression_timezone("UTC")
                    .flexible_time_window(window)
                    .action_after_completion(ActionAfterCompletion::Delete)
                    .target(target)
                    .send()
                    .await;
                match sent {
                    Ok(_) => Ok(()),
                    // The same name is the same (session, deadline): scheduled already.
                    Err(e)
                        if e.as_service_error().and_then(|s| s.code())
                            == Some("ConflictException") =>
                    {
                        Ok(())
                    }
                    Err(e) => Err(dispatch_error("CreateSchedule", e)),
                }
            }
        }
    }
}

/// `RefundQueue` on SQS: one message per refund to send.
#[derive(Clone, Debug)]
pub struct SqsRefundQueue {
    sqs: aws_sdk_sqs::Client,
    queue_url: String,
}

impl SqsRefundQueue {
    pub fn new(config: &aws_config::SdkConfig, queue_url: impl Into<String>) -> SqsRefundQueue {
        SqsRefundQueue {
            sqs: aws_sdk_sqs::Client::new(config),
            queue_url: queue_url.into(),
        }
    }
}

#[async_trait]
impl RefundQueue for SqsRefundQueue {
    async fn enqueue(&self, message: &RefundMessage) -> Result<(), DispatchError> {
        self.sqs
            .send_message()
            .queue_url(&self.queue_url)
            .message_body(encode(message)?)
            .send()
            .await
            .map_err(|e| dispatch_error("refund SendMessage", e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(at_ms: i64) -> DeadlineMessage {
        DeadlineMessage {
            session: "s:T1".parse().expect("id"),
            at: Timestamp::from_millis(at_ms),
        }
    }

    #[test]
    fn utc_formatting() {
        assert_eq!(
            utc_seconds_ceil(Timestamp::from_millis(0)),
            "1970-01-01T00:00:00"
        );
        assert_eq!(
            utc_seconds_ceil(Timestamp::from_millis(1)),
            "1970-01-01T00:00:01"
        );
        // 2023-11-14T22:13:20Z
        assert_eq!(
            utc_seconds_ceil(Timestamp::from_millis(1_700_000_000_000)),
            "2023-11-14T22:13:20"
        );
        // A leap day, and the last second of a year.
        assert_eq!(
            utc_seconds_ceil(Timestamp::from_millis(1_709_164_800_000)),
            "2024-02-29T00:00:00"
        );
        assert_eq!(
            utc_seconds_ceil(Timestamp::from_millis(1_735_689_599_500)),
            "2025-01-01T00:00:00"
        );
    }

    #[test]
    fn routes_by_delay_never_early() {
        let now = Timestamp::from_millis(1_700_000_000_000);
        let r = |ms: i64| route(&msg(now.millis() + ms), now);
        assert_eq!(r(-5_000), Route::Sqs { delay_secs: 0 });
        assert_eq!(r(0), Route::Sqs { delay_secs: 0 });
        assert_eq!(r(1), Route::Sqs { delay_secs: 1 });
        assert_eq!(r(25_000), Route::Sqs { delay_secs: 25 });
        assert_eq!(r(299_001), Route::Sqs { delay_secs: 300 });
        assert_eq!(r(900_000), Route::Sqs { delay_secs: 900 });
        let Route::Schedule { expression, name } = r(900_001) else {
            panic!("beyond 900 s goes to Scheduler")
        };
        assert_eq!(expression, "at(2023-11-14T22:28:21)");
        assert!(name.len() <= 64, "{name}");
        assert!(name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')));
        assert_eq!(
            name,
            schedule_name(
                &msg(0).session,
                Timestamp::from_millis(now.millis() + 900_001)
            )
        );
        assert_ne!(
            name,
            schedule_name(
                &"s:T2".parse().expect("id"),
                Timestamp::from_millis(now.millis() + 900_001)
            )
        );
    }
}
