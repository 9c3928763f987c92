//! Stand-ins for the service's collaborators: a [`Recorder`] of dispatched messages, a
//! [`ManualClock`], and the [`Racing`] refund gateway.

use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use vendpay_domain::*;

use crate::ledger::{AppError, Ledger, RefundAttempt, RefundGateway, RefundOrder, RefundVerdict};
use crate::ports::*;

/// Records what the service dispatched.
#[derive(Default)]
pub struct Recorder {
    pub deadlines: Mutex<Vec<DeadlineMessage>>,
    pub refunds: Mutex<Vec<RefundMessage>>,
}

#[async_trait]
impl DeadlineScheduler for Recorder {
    async fn schedule(&self, m: &DeadlineMessage) -> Result<(), DispatchError> {
        self.deadlines
            .lock()
            .map_err(|_| DispatchError("poisoned".into()))?
            .push(m.clone());
        Ok(())
    }
}

#[async_trait]
impl RefundQueue for Recorder {
    async fn enqueue(&self, m: &RefundMessage) -> Result<(), DispatchError> {
        self.refunds
            .lock()
            .map_err(|_| DispatchError("poisoned".into()))?
            .push(m.clone());
        Ok(())
    }
}

/// A clock the test moves by hand.
pub struct ManualClock(pub Mutex<Timestamp>);

impl ManualClock {
    pub fn at(ms: i64) -> ManualClock {
        ManualClock(Mutex::new(Timestamp::from_millis(ms)))
    }
    pub fn advance(&self, d: Duration) {
        if let Ok(mut t) = self.0.lock() {
            *t = t.plus(d);
        }
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        self.0
            .lock()
            .map(|t| *t)
            .unwrap_or(Timestamp::from_millis(0))
    }
}

/// A gateway that, during its first call, delivers a copy of the same refund message (the sweep's, or
/// a duplicate SQS delivery) and records what that copy came to; every call answers `verdict`.
pub(super) struct Racing {
    pub(super) ledger: Mutex<Option<(Ledger, RefundMessage)>>,
    pub(super) copy: Mutex<Option<Result<RefundAttempt, AppError>>>,
    pub(super) calls: std::sync::atomic::AtomicUsize,
    pub(super) verdict: RefundVerdict,
}

#[async_trait]
impl RefundGateway for Racing {
    async fn refund(&self, _order: &RefundOrder) -> RefundVerdict {
        let n = self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let ledger = self.ledger.lock().ok().and_then(|mut l| l.take());
        if let (0, Some((ledger, message))) = (n, ledger) {
            let copy = ledger
                .execute_refund(&message, self, Duration::from_secs(5))
                .await;
            if let Ok(mut c) = self.copy.lock() {
                *c = Some(copy);
            }
        }
        self.verdict.clone()
    }
}

pub(super) fn answering(verdict: RefundVerdict) -> Racing {
    Racing {
        ledger: Mutex::new(None),
        copy: Mutex::new(None),
        calls: Default::default(),
        verdict,
    }
}
