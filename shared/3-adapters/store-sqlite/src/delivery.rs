//! In-process delivery of deadlines and refunds: the embedded twins of the SQS queues and EventBridge
//! schedules.
//!
//! [`TimerScheduler`] starts one tokio timer per [`DeadlineMessage`]; when it is due the message goes
//! into a channel that the [`crate::Worker`] drains. [`ChannelRefundQueue`] puts refunds straight into
//! another channel. Timers live only in memory: after a restart, [`rearm`] schedules every deadline the
//! store still holds and re-sends every pending refund, so a kill loses nothing.
//!
//! The channels are unbounded on purpose: the worker that drains them also feeds them (settling a
//! deadline issues refunds), so a bounded channel could deadlock it; their size is bounded anyway by
//! the number of live sessions and refunds.

use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};
use vendpay_app::{
    DeadlineMessage, DeadlineScheduler, DispatchError, RefundMessage, RefundQueue, SessionStore,
    StoreError,
};
use vendpay_domain::{Clock, Timestamp};

use crate::store::SqliteStore;

/// Schedules deadline messages on tokio timers. Messages cannot be cancelled, like their SQS twins: a
/// stale one is harmless because the deadline handler only acts on what is really due.
#[derive(Clone)]
pub struct TimerScheduler {
    tx: UnboundedSender<DeadlineMessage>,
    clock: Arc<dyn Clock>,
}

impl TimerScheduler {
    /// A scheduler on `clock` (the ledger's, so "due" means the same thing to both) and the receiver
    /// the worker drains.
    pub fn new(clock: Arc<dyn Clock>) -> (TimerScheduler, UnboundedReceiver<DeadlineMessage>) {
        let (tx, rx) = unbounded_channel();
        (TimerScheduler { tx, clock }, rx)
    }
}

#[async_trait]
impl DeadlineScheduler for TimerScheduler {
    async fn schedule(&self, message: &DeadlineMessage) -> Result<(), DispatchError> {
        if self.tx.is_closed() {
            return Err(DispatchError("the deadline worker has stopped".into()));
        }
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|e| DispatchError(format!("no tokio runtime for the deadline timer: {e}")))?;
        let (tx, clock, message) = (self.tx.clone(), self.clock.clone(), message.clone());
        runtime.spawn(async move {
            // Re-check the clock after each sleep: the monotonic timer and the wall clock the
            // deadline is written in can drift apart, and firing early would find nothing due.
            loop {
                let wait = clock.now().until(message.at);
                if wait.is_zero() {
                    break;
                }
                tokio::time::sleep(wait).await;
            }
            if tx.send(message.clone()).is_err() {
                tracing::warn!(session = %message.session, "deadline fired after the worker stopped; the sweep will settle it");
            }
        });
        Ok(())
    }
}

/// Hands refunds to the worker through a channel.
#[derive(Clone)]
pub struct ChannelRefundQueue {
    tx: UnboundedSender<RefundMessage>,
}

impl ChannelRefundQueue {
    pub fn new() -> (ChannelRefundQueue, UnboundedReceiver<RefundMessage>) {
        let (tx, rx) = unbounded_channel();
        (ChannelRefundQueue { tx }, rx)
    }
}

#[async_trait]
impl RefundQueue for ChannelRefundQueue {
    async fn enqueue(&self, message: &RefundMessage) -> Result<(), DispatchError> {
        self.tx
            .send(message.clone())
            .map_err(|_| DispatchError("the refund worker has stopped".into()))
    }
}

/// The receiving ends the [`crate::Worker`] drains.
pub struct Receivers {
    pub deadlines: UnboundedReceiver<DeadlineMessage>,
    pub refunds: UnboundedReceiver<RefundMessage>,
}

/// A scheduler and a refund queue for a `Ledger`, and the receivers for its worker.
pub fn channels(clock: Arc<dyn Clock>) -> (TimerScheduler, ChannelRefundQueue, Receivers) {
    let (scheduler, deadlines) = TimerScheduler::new(clock);
    let (queue, refunds) = ChannelRefundQueue::new();
    (scheduler, queue, Receivers { deadlines, refunds })
}

/// What [`rearm`] put back in motion.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RearmReport {
    pub deadlines: usize,
    pub refunds: usize,
}

/// After a start: schedules every stored deadline and re-sends every pending refund. Duplicates of
/// messages still in flight are harmless (deadlines act only when due, refunds are idempotent).
pub async fn rearm(
    store: &SqliteStore,
    scheduler: &dyn DeadlineScheduler,
    refunds: &dyn RefundQueue,
) -> Result<RearmReport, StoreError> {
    let mut report = RearmReport::default();
    for message in store.pending_deadlines().await? {
        match scheduler.schedule(&message).await {
            Ok(()) => report.deadlines += 1,
            Err(e) => {
                tracing::warn!(session = %message.session, error = %e, "deadline not re-armed; the sweep will settle it")
            }
        }
    }
    for r in store
        .pending_refunds(Timestamp::FAR_FUTURE, usize::MAX)
        .await?
    {
        let message = RefundMessage {
            refund_id: r.refund_id.clone(),
            session: r.session.clone(),
            generation: r.generation,
        };
        match refunds.enqueue(&message).await {
            Ok(()) => report.refunds += 1,
            Err(e) => {
                tracing::warn!(refund_id = %r.refund_id, error = %e, "pending refund not re-sent; the sweep will")
            }
        }
    }
    Ok(report)
}
