//! The service: reads what a command needs through the ports, lets the domain decide, writes the
//! decision in one atomic commit, then carries out its effects.
//!
//! A commit that loses a race (`StoreError::Conflict`) is re-read and re-decided, a bounded number of
//! times, then reported as retryable contention. Effects are dispatched after the commit: if a queue is
//! down, the money is already recorded and the periodic sweep (due deadlines, pending refunds) finishes
//! the job, so nothing is lost and nothing is done twice.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use vendpay_domain::{
    deadline_due, end_session, place_order, receive_payment, refund_unresolved, report_vend,
    request_purchase, settle_refund, AnomalyKind, Clock, DeviceId, Effect, IncomingPayment,
    MerchantTradeNo, Money, OrderId, PaymentOutcome, PurchaseAnswer, PurchaseRequest,
    PurchaseStatus, RefundId, RefundOutcome, RefundStatus, Rejection, Reply, RequestId, Session,
    SessionId, Slot, Timestamp, TradeNo, Transition, Windows,
};

use crate::ports::{
    Commit, DeadlineMessage, DeadlineScheduler, DeviceGuard, Machine, RefundMessage, RefundQueue,
    RefundRecord, RefundSend, RequestRecord, SendCondition, SessionStore, StoreError,
};

/// How long a machine request's answer is kept for retries: at least 48 h (see
/// `docs/architecture.md`, “Storage”).
pub const REQUEST_TTL: Duration = Duration::from_secs(72 * 3600);

/// How often a command is re-decided after losing a write race before giving up (retryable).
const MAX_ATTEMPTS: u32 = 16;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AppError {
    #[error("unknown device {0}")]
    UnknownDevice(DeviceId),
    #[error("unknown session {0}")]
    UnknownSession(SessionId),
    #[error("unknown refund {0}")]
    UnknownRefund(RefundId),
    /// The domain refused the command; the answer is final.
    #[error(transparent)]
    Rejected(#[from] Rejection),
    #[error("too much contention on {0}; try again")]
    Contention(String),
    /// The refund is not final yet (Alipay unknown / transient); try again later.
    #[error("refund {0} is still pending: {1}")]
    RefundPending(RefundId, String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl AppError {
    /// Whether the caller (SQS redrive, Alipay's resend, the machine) should try again.
    pub fn is_retryable(&self) -> bool {
        match self {
            AppError::Contention(_) | AppError::RefundPending(..) => true,
            AppError::Store(e) => e.is_retryable(),
            AppError::Rejected(Rejection::Inconsistent(_)) => false,
            _ => false,
        }
    }
}

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

/// The service every entry point (Lambda handlers, the local server, the demo) drives.
#[derive(Clone)]
pub struct Ledger {
    store: Arc<dyn SessionStore>,
    deadlines: Arc<dyn DeadlineScheduler>,
    refunds: Arc<dyn RefundQueue>,
    clock: Arc<dyn Clock>,
    windows: Windows,
}

impl Ledger {
    pub fn new(
        store: Arc<dyn SessionStore>,
        deadlines: Arc<dyn DeadlineScheduler>,
        refunds: Arc<dyn RefundQueue>,
        clock: Arc<dyn Clock>,
        windows: Windows,
    ) -> Ledger {
        Ledger {
            store,
            deadlines,
            refunds,
            clock,
            windows,
        }
    }

    pub fn windows(&self) -> Windows {
        self.windows
    }

    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }

    pub fn store(&self) -> &Arc<dyn SessionStore> {
        &self.store
    }

    async fn machine(&self, device: &DeviceId) -> Result<Machine, AppError> {
        self.store
            .machine(device)
            .await?
            .ok_or_else(|| AppError::UnknownDevice(device.clone()))
    }

    async fn session(&self, id: &SessionId) -> Result<Session, AppError> {
        self.store
            .session(id)
            .await?
            .ok_or_else(|| AppError::UnknownSession(id.clone()))
    }

    /// A verified payment notification for `device`. Answers the stored outcome for a seen trade.
    pub async fn payment(
        &self,
        device: &DeviceId,
        payment: &IncomingPayment,
    ) -> Result<PaymentOutcome, AppError> {
        for attempt in 0..MAX_ATTEMPTS {
            if let Some(seen) = self.store.trade(&payment.trade_no).await? {
                return Ok(seen);
            }
            let m = self.machine(device).await?;
            let now = self.clock.now();
            let t = receive_payment(
                &m.record.device,
                m.current.as_ref(),
                payment,
                &self.windows,
                now,
            )?;
            let Reply::Payment(outcome) = &t.reply else {
                return Err(unexpected(&t.reply));
            };
            let outcome = outcome.clone();
            let mut commit = self.commit_for(&t, Some(&m), &before(&m.current));
            commit.trade = Some((payment.trade_no.clone(), outcome.clone()));
            if self.try_commit(&commit, attempt).await? {
                self.dispatch(&t).await;
                return Ok(outcome);
            }
        }
        Err(AppError::Contention(format!(
            "payment {}",
            payment.trade_no
        )))
    }

    /// A machine asks to sell `price` from its session's balance, naming no session.
    pub async fn purchase(
        &self,
        device: &DeviceId,
        request_id: &RequestId,
        slot: &Slot,
        price: Money,
    ) -> Result<PurchaseAnswer, AppError> {
        let req = PurchaseRequest {
            request_id: request_id.clone(),
            slot: slot.clone(),
            price,
            session: None,
        };
        self.purchase_in(device, &req).await
    }

    /// A machine asks to sell from its session's balance. Idempotent on `request_id`, which shares one
    /// namespace with order ids: an id an order used is a conflict (so a vend report for it can only
    /// mean one thing).
    pub async fn purchase_in(
        &self,
        device: &DeviceId,
        req: &PurchaseRequest,
    ) -> Result<PurchaseAnswer, AppError> {
        let (request_id, slot, price) = (&req.request_id, &req.slot, req.price);
        for attempt in 0..MAX_ATTEMPTS {
            if let Some(seen) = self.store.request(device, request_id).await? {
                return match seen.reply {
                    Reply::Purchase(a) if a.price == price && &a.slot == slot => Ok(a),
                    _ => Err(Rejection::RequestConflict(request_id.to_string()).into()),
                };
            }
            let m = self.machine(device).await?;
            let now = self.clock.now();
            let t = request_purchase(
                &m.record.device,
                m.current.as_ref(),
                req,
                &self.windows,
                now,
            )?;
            let Reply::Purchase(answer) = &t.reply else {
                return Err(unexpected(&t.reply));
            };
            let answer = answer.clone();
            let mut commit = self.commit_for(&t, Some(&m), &before(&m.current));
            commit.request = Some(RequestRecord {
                device: device.clone(),
                request_id: request_id.clone(),
                reply: t.reply.clone(),
                expires_at: now.plus(REQUEST_TTL),
            });
            if self.try_commit(&commit, attempt).await? {
                self.dispatch(&t).await;
                return Ok(answer);
            }
        }
        Err(AppError::Contention(format!("purchase {request_id}")))
    }

    /// The machine reports a vend (a purchase's request id, or a paid order's id). Returns the session.
    pub async fn vend(
        &self,
        device: &DeviceId,
        request_id: &RequestId,
        delivered: bool,
    ) -> Result<Session, AppError> {
        let session_id = match self.store.request(device, request_id).await? {
            Some(RequestRecord {
                reply: Reply::Purchase(answer),
                ..
            }) => match answer.session {
                Some(s) if answer.approved() => s,
                _ => return Err(Rejection::PurchaseNotApproved(request_id.clone()).into()),
            },
            _ => match OrderId::parse(request_id.as_str()) {
                Ok(order) => SessionId::for_order(device, &order),
                Err(_) => return Err(Rejection::UnknownPurchase(request_id.clone()).into()),
            },
        };
        for attempt in 0..MAX_ATTEMPTS {
            let Some(s) = self.store.session(&session_id).await? else {
                return Err(Rejection::UnknownPurchase(request_id.clone()).into());
            };
            if &s.device_id != device {
                return Err(Rejection::UnknownPurchase(request_id.clone()).into());
            }
            let t = report_vend(&s, request_id, delivered, self.clock.now())?;
            if let Some(done) = self.settle_session_command(&t, &s, attempt).await? {
                return Ok(done);
            }
        }
        Err(AppError::Contention(format!("vend {request_id}")))
    }

    /// Purchase first: the machine registers an order. Idempotent on `order_id`.
    pub async fn order(
        &self,
        device: &DeviceId,
        order_id: &OrderId,
        slot: &Slot,
        price: Money,
    ) -> Result<Session, AppError> {
        let id = SessionId::for_order(device, order_id);
        let as_request = RequestId::for_order(order_id);
        for attempt in 0..MAX_ATTEMPTS {
            // One namespace with purchase request ids: the order's own row says it is this order.
            match self.store.request(device, &as_request).await? {
                Some(RequestRecord {
                    reply: Reply::Session { session },
                    ..
                }) if session == id => {}
                Some(_) => return Err(Rejection::RequestConflict(order_id.to_string()).into()),
                None => {}
            }
            let m = self.machine(device).await?;
            if m.current.as_ref().map(|s| &s.id) != Some(&id) {
                if let Some(existing) = self.store.session(&id).await? {
                    // The same order again, after it stopped being current.
                    return match existing.order() {
                        Some(o) if o.price == price && &o.slot == slot => Ok(existing),
                        _ => Err(Rejection::RequestConflict(order_id.to_string()).into()),
                    };
                }
            }
            let t = place_order(
                &m.record.device,
                m.current.as_ref(),
                order_id,
                slot,
                price,
                &self.windows,
                self.clock.now(),
            )?;
            if t.is_noop() {
                return self.session(&id).await;
            }
            let mut commit = self.commit_for(&t, Some(&m), &before(&m.current));
            commit.request = Some(RequestRecord {
                device: device.clone(),
                request_id: as_request.clone(),
                reply: Reply::Session {
                    session: id.clone(),
                },
                expires_at: self.clock.now().plus(REQUEST_TTL),
            });
            if self.try_commit(&commit, attempt).await? {
                self.dispatch(&t).await;
                return written(&t, &id);
            }
        }
        Err(AppError::Contention(format!("order {order_id}")))
    }

    /// The customer ends whatever session is current on the machine.
    pub async fn end(&self, device: &DeviceId) -> Result<Session, AppError> {
        self.end_session(device, None).await
    }

    /// The customer ends the session on the machine; with `expected`, only that session (a repeat or a
    /// replay after the next customer paid changes nothing). Returns the (settling or closed) session.
    pub async fn end_session(
        &self,
        device: &DeviceId,
        expected: Option<&SessionId>,
    ) -> Result<Session, AppError> {
        for attempt in 0..MAX_ATTEMPTS {
            let m = self.machine(device).await?;
            let t = end_session(
                &m.record.device,
                m.current.as_ref(),
                expected,
                self.clock.now(),
            )?;
            let Reply::Session { session } = &t.reply else {
                return Err(unexpected(&t.reply));
            };
            let session = session.clone();
            if t.is_noop() {
                return match self.store.session(&session).await? {
                    Some(s) if &s.device_id == device => Ok(s),
                    _ => Err(AppError::UnknownSession(session)),
                };
            }
            let commit = self.commit_for(&t, Some(&m), &before(&m.current));
            if self.try_commit(&commit, attempt).await? {
                self.dispatch(&t).await;
                return written(&t, &session);
            }
        }
        Err(AppError::Contention(format!("end on {device}")))
    }

    /// A deadline message. Returns whether anything was due.
    pub async fn deadline(&self, session: &SessionId) -> Result<bool, AppError> {
        for attempt in 0..MAX_ATTEMPTS {
            let s = self.session(session).await?;
            let t = deadline_due(&s, self.clock.now())?;
            if t.is_noop() {
                return Ok(false);
            }
            if self
                .settle_session_command(&t, &s, attempt)
                .await?
                .is_some()
            {
                return Ok(true);
            }
        }
        Err(AppError::Contention(format!("deadline of {session}")))
    }

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

    /// What the machine sees: its current session or order (closed ones read as idle).
    pub async fn current(&self, device: &DeviceId) -> Result<Option<Session>, AppError> {
        Ok(self.machine(device).await?.current)
    }

    /// Commits a session-level transition; `Some(session)` once written, `None` after a lost race.
    async fn settle_session_command(
        &self,
        t: &Transition,
        read: &Session,
        attempt: u32,
    ) -> Result<Option<Session>, AppError> {
        if t.is_noop() {
            return Ok(Some(read.clone()));
        }
        let prior = HashMap::from([(read.id.clone(), read)]);
        let commit = self.commit_for(t, None, &prior);
        if !self.try_commit(&commit, attempt).await? {
            return Ok(None);
        }
        self.dispatch(t).await;
        Ok(Some(written(t, &read.id)?))
    }

    /// The commit of a transition: its sessions, the device guard of a device-level command, and the
    /// refund rows that are new or changed relative to what was read.
    fn commit_for(
        &self,
        t: &Transition,
        machine: Option<&Machine>,
        prior: &HashMap<SessionId, &Session>,
    ) -> Commit {
        let mut refunds = Vec::new();
        for s in &t.sessions {
            let old = prior.get(&s.id);
            for r in &s.refunds {
                let unchanged = old
                    .and_then(|o| o.refund(&r.id))
                    .is_some_and(|o| o.status == r.status);
                if !unchanged {
                    refunds.push(RefundRecord {
                        refund_id: r.id.clone(),
                        session: s.id.clone(),
                        trade_no: r.trade_no.clone(),
                        amount: r.amount,
                        status: r.status,
                        issued_at: r.issued_at,
                        attempts: 0,
                        generation: 0,
                        in_flight_until: None,
                    });
                }
            }
        }
        Commit {
            device: machine.map(|m| DeviceGuard {
                device: m.record.device.id.clone(),
                expected_version: m.record.version,
                new_current: t.current.clone(),
            }),
            sessions: t.sessions.clone(),
            trade: None,
            request: None,
            refunds,
            send: None,
        }
    }

    /// `true` when written, `false` when a condition failed (re-read and re-decide). A lost race
    /// waits a random moment first, growing with the attempt, so a crowd of writers on one session
    /// spreads out instead of colliding again in lockstep.
    async fn try_commit(&self, commit: &Commit, attempt: u32) -> Result<bool, AppError> {
        match self.store.commit(commit).await {
            Ok(()) => Ok(true),
            Err(StoreError::Conflict(why)) => {
                tracing::debug!(%why, attempt, "write conflict; re-deciding");
                let cap_ms = 2u64.saturating_pow(attempt.min(6)); // 1, 2, 4 ... 64 ms
                let jitter = getrandom::u64().unwrap_or(0) % (cap_ms + 1);
                tokio::time::sleep(Duration::from_millis(jitter)).await;
                Ok(false)
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn dispatch(&self, t: &Transition) {
        for e in &t.effects {
            match e {
                Effect::ScheduleDeadline { session, at } => {
                    let message = DeadlineMessage {
                        session: session.clone(),
                        at: *at,
                    };
                    if let Err(err) = self.deadlines.schedule(&message).await {
                        tracing::warn!(session = %session, error = %err, "deadline not scheduled; the sweep will settle it");
                    }
                }
                Effect::IssueRefund {
                    session,
                    refund_id,
                    amount,
                    trade_no,
                    ..
                } => {
                    tracing::info!(session = %session, refund_id = %refund_id, trade_no = %trade_no, amount = %amount, "refund issued");
                    let message = RefundMessage {
                        refund_id: refund_id.clone(),
                        session: session.clone(),
                        generation: 0,
                    };
                    if let Err(err) = self.refunds.enqueue(&message).await {
                        tracing::warn!(refund_id = %refund_id, error = %err, "refund not queued; the sweep will re-send it");
                    }
                }
                Effect::Anomaly { session, anomaly } => match &anomaly.kind {
                    AnomalyKind::RefundStuck { refund_id } => tracing::error!(
                        alert = "refund_stuck",
                        session = %session,
                        refund_id = %refund_id,
                        "no verified answer from Alipay for an hour; the refund stays pending and is still retried - reconcile it with Alipay, do not pay by hand"
                    ),
                    AnomalyKind::RefundSucceededAfterFailure { refund_id } => tracing::error!(
                        alert = "refund_succeeded_after_failure",
                        session = %session,
                        refund_id = %refund_id,
                        "Alipay paid a refund recorded failed; if an operator paid the customer, recover it"
                    ),
                    other => tracing::warn!(session = %session, anomaly = ?other, "anomaly"),
                },
                Effect::Close { session } => tracing::info!(session = %session, "session closed"),
                Effect::Credit { .. }
                | Effect::Approve { .. }
                | Effect::Decline { .. }
                | Effect::HoldSettled { .. } => {}
            }
        }
    }
}

fn before(current: &Option<Session>) -> HashMap<SessionId, &Session> {
    current.iter().map(|s| (s.id.clone(), s)).collect()
}

fn written(t: &Transition, id: &SessionId) -> Result<Session, AppError> {
    t.session(id)
        .cloned()
        .ok_or_else(|| Rejection::Inconsistent(format!("session {id} was not written")).into())
}

fn unexpected(reply: &Reply) -> AppError {
    Rejection::Inconsistent(format!("unexpected reply {reply:?}")).into()
}

/// The status a purchase ended in, for answers that only need that.
pub fn purchase_status(session: &Session, request_id: &RequestId) -> Option<PurchaseStatus> {
    session.purchase(request_id).map(|p| p.status)
}
