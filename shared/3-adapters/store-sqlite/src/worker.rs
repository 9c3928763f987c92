//! [`Worker`]: the embedded twin of the `deadline` and `refund-executor` Lambda functions.
//!
//! It drains the channels of [`crate::delivery`]: a deadline message settles its session through
//! `Ledger::deadline`; a refund message is sent to Alipay through `Ledger::execute_refund` and, while
//! Alipay's answer is retryable, tried again after an exponential backoff capped at [`Backoff::max`].
//! Optionally it runs `Ledger::sweep` on a fixed period, the safety net for lost timers and messages.
//! Each message is handled on its own task so a slow gateway never delays a deadline.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use vendpay_app::{DeadlineMessage, Ledger, RefundAttempt, RefundGateway, RefundMessage};
use vendpay_domain::RefundId;

use crate::delivery::Receivers;

/// Exponential backoff: `initial`, `2 × initial`, ... capped at `max`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(60),
        }
    }
}

impl Backoff {
    /// The wait before retry number `attempt + 1` (attempt 0 is the first retry).
    pub fn delay(&self, attempt: u32) -> Duration {
        let factor = 1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX);
        self.initial.saturating_mul(factor).min(self.max)
    }
}

/// Drains deadline and refund messages into a [`Ledger`].
#[derive(Clone)]
pub struct Worker {
    ledger: Ledger,
    gateway: Arc<dyn RefundGateway>,
    backoff: Backoff,
    /// A deadline that keeps failing is left to the sweep after this many tries.
    deadline_attempts: u32,
    sweep_every: Option<Duration>,
    sweep_limit: usize,
    refund_grace: Duration,
    /// Alipay calls in flight at once; the rest wait their turn.
    gateway_slots: Arc<Semaphore>,
    /// Refunds with a task already working on them: a duplicate message (sweep, re-arm) is dropped
    /// rather than racing the same refund twice.
    in_flight: Arc<Mutex<HashSet<RefundId>>>,
}

impl Worker {
    pub fn new(ledger: Ledger, gateway: Arc<dyn RefundGateway>) -> Worker {
        Worker {
            ledger,
            gateway,
            backoff: Backoff::default(),
            deadline_attempts: 5,
            sweep_every: Some(Duration::from_secs(60)),
            sweep_limit: 500,
            refund_grace: Duration::from_secs(60),
            gateway_slots: Arc::new(Semaphore::new(8)),
            in_flight: Arc::new(Mutex::new(HashSet::new())),
        }
    }

    pub fn with_backoff(mut self, backoff: Backoff) -> Worker {
        self.backoff = backoff;
        self
    }

    /// How often to sweep (`None`: never). The first sweep runs at once, which catches whatever fell
    /// due while the process was down.
    pub fn with_sweep(mut self, every: Option<Duration>) -> Worker {
        self.sweep_every = every;
        self
    }

    /// Runs until both channels are closed (in practice, for the life of the process).
    pub async fn run(self, receivers: Receivers) {
        let Receivers {
            mut deadlines,
            mut refunds,
        } = receivers;
        let mut sweep = self.sweep_every.map(|every| {
            let mut t = tokio::time::interval(every);
            t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            t
        });
        let (mut deadlines_open, mut refunds_open) = (true, true);
        while deadlines_open || refunds_open {
            tokio::select! {
                m = deadlines.recv(), if deadlines_open => match m {
                    Some(m) => self.spawn_deadline(m),
                    None => deadlines_open = false,
                },
                m = refunds.recv(), if refunds_open => match m {
                    Some(m) => self.spawn_refund(m),
                    None => refunds_open = false,
                },
                () = tick(&mut sweep) => self.sweep().await,
            }
        }
    }

    /// [`Worker::run`] on a task of its own.
    pub fn spawn(self, receivers: Receivers) -> JoinHandle<()> {
        tokio::spawn(self.run(receivers))
    }

    fn spawn_deadline(&self, m: DeadlineMessage) {
        let this = self.clone();
        tokio::spawn(async move {
            let mut attempt = 0;
            loop {
                match this.ledger.deadline(&m.session).await {
                    Ok(settled) => {
                        tracing::debug!(session = %m.session, settled, "deadline handled");
                        return;
                    }
                    Err(e) if e.is_retryable() && attempt + 1 < this.deadline_attempts => {
                        tracing::debug!(session = %m.session, error = %e, "deadline will be retried");
                        tokio::time::sleep(this.backoff.delay(attempt)).await;
                        attempt += 1;
                    }
                    Err(e) => {
                        tracing::warn!(session = %m.session, error = %e, "deadline not settled; the sweep will retry");
                        return;
                    }
                }
            }
        });
    }

    fn spawn_refund(&self, m: RefundMessage) {
        let Some(claim) = Claim::take(&self.in_flight, &m.refund_id) else {
            tracing::debug!(refund_id = %m.refund_id, "refund already being executed");
            return;
        };
        let this = self.clone();
        tokio::spawn(async move {
            let _claim = claim;
            let mut attempt = 0;
            loop {
                let wait = this.backoff.delay(attempt);
                let result = {
                    // Only a closed semaphore errs, and this one is never closed; go on without.
                    let _slot = this.gateway_slots.acquire().await.ok();
                    this.ledger.execute_refund(&m, &*this.gateway, wait).await
                };
                match result {
                    Ok(RefundAttempt::Settled(status)) => {
                        tracing::info!(refund_id = %m.refund_id, ?status, "refund executed");
                        return;
                    }
                    Ok(RefundAttempt::InFlight) => {
                        tracing::info!(refund_id = %m.refund_id, "another send holds the refund; this copy is dropped");
                        return;
                    }
                    Ok(RefundAttempt::Superseded) => {
                        tracing::info!(refund_id = %m.refund_id, "a newer message carries the refund; this one is dropped");
                        return;
                    }
                    Err(e) if e.is_retryable() => {
                        tracing::info!(refund_id = %m.refund_id, error = %e, ?wait, "refund will be retried");
                        tokio::time::sleep(wait).await;
                        attempt = attempt.saturating_add(1);
                    }
                    Err(e) => {
                        tracing::error!(refund_id = %m.refund_id, error = %e, "refund cannot be executed; an operator must act");
                        return;
                    }
                }
            }
        });
    }

    async fn sweep(&self) {
        match self.ledger.sweep(self.sweep_limit, self.refund_grace).await {
            Ok(report) => tracing::debug!(?report, "sweep done"),
            Err(e) => tracing::warn!(error = %e, "sweep failed; next period retries"),
        }
    }
}

async fn tick(interval: &mut Option<tokio::time::Interval>) {
    match interval {
        Some(i) => {
            i.tick().await;
        }
        None => std::future::pending().await,
    }
}

/// Marks a refund as being executed; released when the task ends, however it ends.
struct Claim {
    set: Arc<Mutex<HashSet<RefundId>>>,
    id: RefundId,
}

impl Claim {
    fn take(set: &Arc<Mutex<HashSet<RefundId>>>, id: &RefundId) -> Option<Claim> {
        let fresh = set
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id.clone());
        fresh.then(|| Claim {
            set: set.clone(),
            id: id.clone(),
        })
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        self.set
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        let b = Backoff::default();
        let secs: Vec<u64> = (0..9).map(|a| b.delay(a).as_secs()).collect();
        assert_eq!(secs, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(b.delay(u32::MAX), Duration::from_secs(60));
    }
}
