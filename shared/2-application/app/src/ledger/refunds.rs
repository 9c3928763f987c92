//! The refund side of the [`Ledger`]: one send of a refund at a time (a lease on the refund row,
//! claimed and released in conditional writes), a verdict recorded only from a verified answer, a
//! refund without one raised `stuck` after an hour, and the once-a-minute sweep that settles overdue
//! sessions and re-sends refunds whose message was lost.

use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use vendpay_domain::{
    refund_unresolved, settle_refund, MerchantTradeNo, Money, RefundId, RefundOutcome,
    RefundStatus, Reply, SessionId, Timestamp, TradeNo,
};

use crate::ports::{Commit, RefundMessage, RefundSend, SendCondition, StoreError};

use super::{unexpected, AppError, Ledger, MAX_ATTEMPTS};

/// How long one send of a refund may hold it (longer than any send can take: the refund executor's
/// Lambda timeout is 30 s, the local gateway client's a few seconds).
pub const REFUND_SEND_LEASE: Duration = Duration::from_secs(60);

/// What one run of [`Ledger::execute_refund`] came to (an unknown verdict is an error: retry).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefundAttempt {
    /// The refund is final: this run recorded a verified verdict, or one was recorded before.
    Settled(RefundStatus),
    /// Another send holds the refund; this message is a copy and is dropped.
    InFlight,
    /// A newer message (a sweep's re-send) carries the refund; this older one is dropped.
    Superseded,
}

/// What a refund attempt is sent with. Every retry sends the same id and amount.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefundOrder {
    pub refund_id: RefundId,
    pub trade_no: TradeNo,
    pub merchant_trade_no: MerchantTradeNo,
    pub amount: Money,
}

/// Alipay's verdict on one refund attempt, as the gateway adapter classifies it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RefundVerdict {
    Succeeded,
    /// A verified permanent refusal of this very request (`PURCHASE_TRADE_NOT_EXIST`,
    /// `CURRENCY_NOT_SAME`, ...).
    Failed(String),
    /// A verified refusal that this refund's own success would also cause (`TRADE_HAS_CLOSE`: the trade
    /// closed by this refund; `RETURN_AMOUNT_EXCEED`: its refundable amount used up by it): final only
    /// for a refund's first send. After a send whose answer was lost it decides nothing.
    FailedUnlessPaid(String),
    /// Timeout, `UNKNOW`, a system error, an HTML page: try again with the same id and amount.
    Retry(String),
}

/// The part of Alipay the refund executor needs (`spot.refund` with `is_sync=Y`).
#[async_trait]
pub trait RefundGateway: Send + Sync {
    async fn refund(&self, order: &RefundOrder) -> RefundVerdict;
}

/// What a sweep found and did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SweepReport {
    pub deadlines_settled: usize,
    pub refunds_resent: usize,
    /// Overdue sessions whose deadline failed this time (alerted; the next sweep retries them).
    #[serde(default)]
    pub deadlines_failed: usize,
    /// Overdue sessions left for the next sweep because this one spent its time budget on deadlines
    /// (the refund re-sends still ran).
    #[serde(default)]
    pub deadlines_deferred: usize,
}

/// How long one sweep may spend settling deadlines before it turns to refund re-sends (the deadline
/// function has 60 s; a backlog of deadlines must not starve the re-sends of the refunds already due).
pub const SWEEP_DEADLINE_BUDGET: Duration = Duration::from_secs(30);

impl Ledger {
    /// The safety net, run once a minute: settles every overdue session and re-sends refunds that have
    /// been pending longer than `refund_grace` (their message may have been lost).
    pub async fn sweep(
        &self,
        limit: usize,
        refund_grace: Duration,
    ) -> Result<SweepReport, AppError> {
        self.sweep_within(limit, refund_grace, SWEEP_DEADLINE_BUDGET)
            .await
    }

    /// [`Ledger::sweep`] with `budget` (wall time, not the ledger's clock) for settling deadlines;
    /// what is left over is counted as deferred, and the refund re-sends run either way.
    pub async fn sweep_within(
        &self,
        limit: usize,
        refund_grace: Duration,
        budget: Duration,
    ) -> Result<SweepReport, AppError> {
        let started = std::time::Instant::now();
        let now = self.clock.now();
        let mut report = SweepReport::default();
        // One failing session never stops the others: it is alerted, left due, and retried next time.
        // The due list is oldest first, so sessions that keep failing would fill every page; when this
        // page had failures and was full, one more page of `limit + failures` reaches past them.
        let mut seen = std::collections::HashSet::new();
        let mut ids = self.store.due(now, limit).await?;
        loop {
            let full = ids.len() >= limit.max(1);
            for id in ids {
                if !seen.insert(id.clone()) {
                    continue;
                }
                if started.elapsed() >= budget {
                    report.deadlines_deferred += 1;
                    continue;
                }
                match self.deadline(&id).await {
                    Ok(true) => report.deadlines_settled += 1,
                    Ok(false) => {}
                    Err(e) => {
                        report.deadlines_failed += 1;
                        tracing::error!(
                            alert = "deadline_failed",
                            session = %id,
                            retryable = e.is_retryable(),
                            error = %e,
                            "deadline failed; the sweep goes on and retries it next time"
                        );
                    }
                }
            }
            if report.deadlines_failed == 0
                || !full
                || seen.len() > limit
                || started.elapsed() >= budget
            {
                break;
            }
            ids = self
                .store
                .due(now, limit.saturating_add(report.deadlines_failed))
                .await?;
        }
        // Only refunds whose next attempt is overdue by the grace: no message is expected to carry
        // them any more (lost, dead-lettered, or its sender crashed). Taking one moves its next attempt
        // to now and bumps its generation, so a concurrent or the next sweep leaves it alone while this
        // message is on its way, and an older message still in the queue (a backlog) is dropped when it
        // arrives: one chain of retries per refund, not one per sweep.
        let overdue = now.minus(refund_grace);
        for r in self.store.pending_refunds(overdue, limit).await? {
            // The listing may not carry the schedule (a DynamoDB index projects the JSON only).
            let record = match self.store.refund(&r.refund_id).await {
                Ok(Some(record)) if record.status == RefundStatus::Pending => record,
                Ok(_) => continue,
                Err(e) => {
                    tracing::warn!(refund_id = %r.refund_id, error = %e, "sweep could not read the refund to re-send it");
                    continue;
                }
            };
            let take = Commit {
                send: Some(RefundSend {
                    refund_id: r.refund_id.clone(),
                    when: SendCondition::Resend {
                        now,
                        due_by: overdue,
                        generation: record.generation,
                    },
                    in_flight_until: None,
                    next_attempt_at: now,
                }),
                ..Commit::default()
            };
            match self.store.commit(&take).await {
                Ok(()) => {}
                Err(StoreError::Conflict(_)) => continue,
                Err(e) => {
                    tracing::warn!(refund_id = %r.refund_id, error = %e, "sweep could not take the refund to re-send it");
                    continue;
                }
            }
            let message = RefundMessage {
                refund_id: r.refund_id.clone(),
                session: r.session.clone(),
                generation: record.generation.saturating_add(1),
            };
            if let Err(e) = self.refunds.enqueue(&message).await {
                tracing::warn!(refund_id = %r.refund_id, error = %e, "sweep could not re-send refund; the next sweep will");
            } else {
                report.refunds_resent += 1;
            }
        }
        Ok(report)
    }

    /// Alipay's verdict on a refund, recorded once.
    pub async fn refund_result(
        &self,
        refund_id: &RefundId,
        outcome: RefundOutcome,
    ) -> Result<RefundStatus, AppError> {
        let record = self
            .store
            .refund(refund_id)
            .await?
            .ok_or_else(|| AppError::UnknownRefund(refund_id.clone()))?;
        for attempt in 0..MAX_ATTEMPTS {
            let s = self.session(&record.session).await?;
            let t = settle_refund(&s, refund_id, outcome, self.clock.now())?;
            let Reply::Refund { status, .. } = t.reply else {
                return Err(unexpected(&t.reply));
            };
            if t.is_noop()
                || self
                    .settle_session_command(&t, &s, attempt)
                    .await?
                    .is_some()
            {
                return Ok(status);
            }
        }
        Err(AppError::Contention(format!("refund {refund_id}")))
    }

    /// The refund executor: sends a pending refund to Alipay (same id, same amount, every time) and
    /// records the verdict. Only a verified verdict is recorded; an unknown one (see [`RefundVerdict`])
    /// leaves the refund pending, raises it as stuck once it has waited
    /// [`vendpay_domain::REFUND_STUCK_AFTER`], and is returned as a retryable error so the caller tries
    /// again after `retry_in` (the next attempt the sweep then expects). At most one send of a refund is
    /// in flight: a message that finds another send holding the refund, or a newer message carrying it,
    /// answers [`RefundAttempt::InFlight`] / [`RefundAttempt::Superseded`] and may be dropped.
    pub async fn execute_refund(
        &self,
        message: &RefundMessage,
        gateway: &dyn RefundGateway,
        retry_in: Duration,
    ) -> Result<RefundAttempt, AppError> {
        let refund_id = &message.refund_id;
        let record = self
            .store
            .refund(refund_id)
            .await?
            .ok_or_else(|| AppError::UnknownRefund(refund_id.clone()))?;
        let session = self.session(&record.session).await?;
        let Some(refund) = session.refund(refund_id) else {
            return Err(AppError::UnknownRefund(refund_id.clone()));
        };
        if refund.status.is_final() {
            return Ok(RefundAttempt::Settled(refund.status));
        }
        if message.generation < record.generation {
            return Ok(RefundAttempt::Superseded);
        }
        let order = RefundOrder {
            refund_id: refund.id.clone(),
            trade_no: refund.trade_no.clone(),
            merchant_trade_no: refund.merchant_trade_no.clone(),
            amount: refund.amount,
        };
        let now = self.clock.now();
        let lease = now.plus(REFUND_SEND_LEASE);
        let claim = Commit {
            send: Some(RefundSend {
                refund_id: refund_id.clone(),
                when: SendCondition::Claim {
                    now,
                    generation: message.generation,
                    attempts: record.attempts,
                },
                in_flight_until: Some(lease),
                next_attempt_at: lease,
            }),
            ..Commit::default()
        };
        match self.store.commit(&claim).await {
            Ok(()) => {}
            Err(StoreError::Conflict(_)) => {
                // Perhaps our own claim, applied by a request whose answer was lost and retried.
                let now_row = self.store.refund(refund_id).await?;
                let ours = now_row.as_ref().is_some_and(|r| {
                    r.in_flight_until == Some(lease)
                        && r.attempts == record.attempts.saturating_add(1)
                        && r.status == RefundStatus::Pending
                });
                if !ours {
                    return Ok(match now_row {
                        Some(r) if r.generation > message.generation => RefundAttempt::Superseded,
                        Some(r) if r.status.is_final() => RefundAttempt::Settled(r.status),
                        _ => RefundAttempt::InFlight,
                    });
                }
            }
            Err(e) => return Err(e.into()),
        }
        // An earlier send may have reached Alipay and been paid, its answer lost.
        let sent_before = record.attempts > 0;
        let outcome = match gateway.refund(&order).await {
            RefundVerdict::Succeeded => RefundOutcome::Succeeded,
            RefundVerdict::Failed(code) => {
                tracing::error!(refund_id = %refund_id, code = %code, "Alipay refused the refund in a verified answer");
                RefundOutcome::FailedPermanently
            }
            RefundVerdict::FailedUnlessPaid(code) if !sent_before => {
                tracing::error!(refund_id = %refund_id, code = %code, "Alipay refused the first send of the refund in a verified answer");
                RefundOutcome::FailedPermanently
            }
            RefundVerdict::FailedUnlessPaid(code) => {
                let reason = format!(
                    "Alipay answered {code} after an earlier send that may have been paid (its answer was lost): not a verdict"
                );
                return self
                    .unresolved(refund_id, &record.session, lease, retry_in, reason)
                    .await;
            }
            RefundVerdict::Retry(reason) => {
                return self
                    .unresolved(refund_id, &record.session, lease, retry_in, reason)
                    .await;
            }
        };
        match self.refund_result(refund_id, outcome).await {
            Ok(status) => Ok(RefundAttempt::Settled(status)),
            Err(e) => {
                // The verdict is not recorded: let the retry send again (same id, same amount, so
                // Alipay answers the same) instead of waiting out the lease.
                self.release_send(refund_id, lease, retry_in).await;
                Err(e)
            }
        }
    }

    /// A send without a verified verdict: raise the refund as stuck if it is due, release the send, and
    /// answer the retryable error that brings the message back.
    async fn unresolved(
        &self,
        refund_id: &RefundId,
        session: &SessionId,
        lease: Timestamp,
        retry_in: Duration,
        reason: String,
    ) -> Result<RefundAttempt, AppError> {
        let stuck = self.refund_unresolved(refund_id, session).await;
        self.release_send(refund_id, lease, retry_in).await;
        stuck?;
        Err(AppError::RefundPending(refund_id.clone(), reason))
    }

    /// Ends a send that recorded no verdict. If this fails the lease simply runs out.
    async fn release_send(&self, refund_id: &RefundId, lease: Timestamp, retry_in: Duration) {
        let release = Commit {
            send: Some(RefundSend {
                refund_id: refund_id.clone(),
                when: SendCondition::HeldUntil(lease),
                in_flight_until: None,
                next_attempt_at: self.clock.now().plus(retry_in),
            }),
            ..Commit::default()
        };
        match self.store.commit(&release).await {
            Ok(()) | Err(StoreError::Conflict(_)) => {}
            Err(e) => {
                tracing::warn!(refund_id = %refund_id, error = %e, "refund send not released; its lease runs out instead")
            }
        }
    }

    /// Raises a refund as stuck once it has gone [`vendpay_domain::REFUND_STUCK_AFTER`] without a verified verdict.
    async fn refund_unresolved(
        &self,
        refund_id: &RefundId,
        session: &SessionId,
    ) -> Result<(), AppError> {
        for attempt in 0..MAX_ATTEMPTS {
            let s = self.session(session).await?;
            let t = refund_unresolved(&s, refund_id, self.clock.now())?;
            if t.is_noop()
                || self
                    .settle_session_command(&t, &s, attempt)
                    .await?
                    .is_some()
            {
                return Ok(());
            }
        }
        Err(AppError::Contention(format!("refund {refund_id}")))
    }
}
