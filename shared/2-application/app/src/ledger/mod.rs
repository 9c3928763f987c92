//! The service: reads what a command needs through the ports, lets the domain decide, writes the
//! decision in one atomic commit, then carries out its effects.
//!
//! A commit that loses a race (`StoreError::Conflict`) is re-read and re-decided, a bounded number of
//! times, then reported as retryable contention. Effects are dispatched after the commit: if a queue is
//! down, the money is already recorded and the periodic sweep (due deadlines, pending refunds) finishes
//! the job, so nothing is lost and nothing is done twice.
//!
//! This file holds the service and the machine's commands (payment, purchase, vend, order, end, the
//! deadline); [`refunds`] holds the refund side (sending one, recording its verdict, the sweep).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use vendpay_domain::facts::{facts_of, AnalyticsKey, Fact, FactContext, Place};

use vendpay_domain::{
    deadline_due, end_session, place_order, receive_payment, report_vend, request_purchase,
    AnomalyKind, Clock, DeviceId, Effect, IncomingPayment, Money, OrderId, PaymentOutcome,
    PurchaseAnswer, PurchaseRequest, PurchaseStatus, RefundId, Rejection, Reply, RequestId,
    Session, SessionId, Shelves, Slot, Timestamp, Transition, Windows,
};

use crate::ports::{
    Commit, DeadlineMessage, DeadlineScheduler, DeviceGuard, Machine, RefundMessage, RefundQueue,
    RefundRecord, RequestRecord, SessionStore, StoreError,
};

mod refunds;

pub use refunds::{
    RefundAttempt, RefundGateway, RefundOrder, RefundVerdict, SweepReport, REFUND_SEND_LEASE,
    SWEEP_DEADLINE_BUDGET,
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
    /// A catalogue or inventory request broke a rule; nothing was changed.
    #[error(transparent)]
    Inventory(#[from] vendpay_domain::InventoryError),
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

/// The service every entry point (Lambda handlers, the local server, the demo) drives.
#[derive(Clone)]
pub struct Ledger {
    store: Arc<dyn SessionStore>,
    deadlines: Arc<dyn DeadlineScheduler>,
    refunds: Arc<dyn RefundQueue>,
    clock: Arc<dyn Clock>,
    windows: Windows,
    /// Hashes buyer ids into the facts' `buyer_key`; without it facts name no buyer.
    analytics: Option<AnalyticsKey>,
    /// Product names by sku for sale facts, each kept [`NAME_TTL`] (a rename shows within that).
    names: Arc<Mutex<ProductNames>>,
}

/// Product names by sku as last read (`None`: not in the catalogue), each with when to read it again.
type ProductNames = HashMap<vendpay_domain::Sku, (Option<String>, Timestamp)>;

/// How long a product name read for sale facts is reused.
const NAME_TTL: Duration = Duration::from_secs(300);

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
            analytics: None,
            names: Arc::default(),
        }
    }

    /// Facts name buyers by their key under `key` (`ANALYTICS_KEY`).
    pub fn with_analytics_key(mut self, key: AnalyticsKey) -> Ledger {
        self.analytics = Some(key);
        self
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

    /// What a device-level command naming no slot reads of the machine's slots: the rows that came
    /// with the machine.
    fn shelves(m: &Machine) -> Shelves {
        Shelves::new(m.slots.iter().cloned())
    }

    /// The machine for a command that sells from `slot`, with its shelves: the slot rows and, when the
    /// slot sells at its product's price, that price (read by the store beside the session).
    async fn machine_selling(
        &self,
        device: &DeviceId,
        slot: &Slot,
    ) -> Result<(Machine, Shelves), AppError> {
        let (m, product) = self
            .store
            .machine_selling(device, slot)
            .await?
            .ok_or_else(|| AppError::UnknownDevice(device.clone()))?;
        let shelves = Self::shelves(&m);
        let shelves = match (shelves.needs_price(slot).cloned(), product) {
            (None, _) => shelves,
            (Some(sku), Some(p)) if p.sku == sku => shelves.with_price(sku, p.price),
            (Some(sku), _) => {
                return Err(Rejection::Inconsistent(format!(
                    "slot {slot} of {device} sells {sku}, which is not in the catalogue"
                ))
                .into())
            }
        };
        Ok((m, shelves))
    }

    /// The slot rows a session-level command may change: read only when the session reserved items.
    async fn session_shelves(&self, s: &Session) -> Result<Shelves, AppError> {
        if !s.reserves_stock() {
            return Ok(Shelves::NONE);
        }
        Ok(Shelves::new(self.store.slots(&s.device_id).await?))
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
            let shelves = Self::shelves(&m);
            let t = receive_payment(
                &m.record.device,
                m.current.as_ref(),
                payment,
                &shelves,
                &self.windows,
                now,
            )?;
            let Reply::Payment(outcome) = &t.reply else {
                return Err(unexpected(&t.reply));
            };
            let outcome = outcome.clone();
            let mut commit = self.commit_for(&t, Some(&m), &before(&m.current)).await?;
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
            price: Some(price),
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
                    Reply::Purchase(a) if price.is_none_or(|p| p == a.price) && &a.slot == slot => {
                        Ok(a)
                    }
                    _ => Err(Rejection::RequestConflict(request_id.to_string()).into()),
                };
            }
            let (m, shelves) = self.machine_selling(device, slot).await?;
            let now = self.clock.now();
            let t = request_purchase(
                &m.record.device,
                m.current.as_ref(),
                req,
                &shelves,
                &self.windows,
                now,
            )?;
            let Reply::Purchase(answer) = &t.reply else {
                return Err(unexpected(&t.reply));
            };
            let answer = answer.clone();
            let mut commit = self.commit_for(&t, Some(&m), &before(&m.current)).await?;
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
            let shelves = self.session_shelves(&s).await?;
            let t = report_vend(&s, request_id, delivered, &shelves, self.clock.now())?;
            if let Some(done) = self.settle_session_command(&t, &s, attempt).await? {
                return Ok(done);
            }
        }
        Err(AppError::Contention(format!("vend {request_id}")))
    }

    /// Purchase first: the machine registers an order. Idempotent on `order_id`. The price may be
    /// omitted for a slot of the planogram.
    pub async fn order(
        &self,
        device: &DeviceId,
        order_id: &OrderId,
        slot: &Slot,
        price: Option<Money>,
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
            let (m, shelves) = self.machine_selling(device, slot).await?;
            if m.current.as_ref().map(|s| &s.id) != Some(&id) {
                if let Some(existing) = self.store.session(&id).await? {
                    // The same order again, after it stopped being current.
                    return match existing.order() {
                        Some(o) if price.is_none_or(|p| p == o.price) && &o.slot == slot => {
                            Ok(existing)
                        }
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
                &shelves,
                &self.windows,
                self.clock.now(),
            )?;
            if t.is_noop() {
                return self.session(&id).await;
            }
            let mut commit = self.commit_for(&t, Some(&m), &before(&m.current)).await?;
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
            let shelves = Self::shelves(&m);
            let t = end_session(
                &m.record.device,
                m.current.as_ref(),
                expected,
                &shelves,
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
            let commit = self.commit_for(&t, Some(&m), &before(&m.current)).await?;
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
            let shelves = self.session_shelves(&s).await?;
            let t = deadline_due(&s, &shelves, self.clock.now())?;
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
        let commit = self.commit_for(t, None, &prior).await?;
        if !self.try_commit(&commit, attempt).await? {
            return Ok(None);
        }
        self.dispatch(t).await;
        Ok(Some(written(t, &read.id)?))
    }

    /// The commit of a transition: its sessions (a new one stamped with the machine's place), the
    /// device guard of a device-level command, the refund rows that are new or changed relative to
    /// what was read, and the decision's facts.
    async fn commit_for(
        &self,
        t: &Transition,
        machine: Option<&Machine>,
        prior: &HashMap<SessionId, &Session>,
    ) -> Result<Commit, AppError> {
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
        let mut sessions = t.sessions.clone();
        if let Some(m) = machine {
            let place = place_of(m);
            for s in sessions.iter_mut().filter(|s| s.place.is_none()) {
                s.place = Some(place.clone());
            }
        }
        let facts = self.facts(t, machine, prior).await;
        Ok(Commit {
            device: machine.map(|m| DeviceGuard {
                device: m.record.device.id.clone(),
                expected_version: m.record.version,
                new_current: t.current.clone(),
            }),
            sessions,
            trade: None,
            request: None,
            refunds,
            send: None,
            stock: t.stock.clone(),
            facts,
        })
    }

    /// The facts of a decision (see `docs/sales.md`), from its sessions as they will be written.
    async fn facts(
        &self,
        t: &Transition,
        machine: Option<&Machine>,
        prior: &HashMap<SessionId, &Session>,
    ) -> Vec<Fact> {
        // A session without a place takes the machine's: a new one (the machine was read), or one
        // stored before places were kept (read now, best effort: a failed read leaves the district
        // empty rather than holding up the decision).
        let mut place = machine.map(place_of);
        if place.is_none() {
            if let Some(s) = t.sessions.iter().find(|s| s.place.is_none()) {
                match self.store.machine(&s.device_id).await {
                    Ok(m) => place = m.as_ref().map(place_of),
                    Err(e) => {
                        tracing::warn!(session = %s.id, error = %e, "machine not read for the facts' place")
                    }
                }
            }
        }
        let mut names = BTreeMap::new();
        let delivering = t.effects.iter().any(|e| {
            matches!(
                e,
                Effect::Stock {
                    change: vendpay_domain::StockChange::Deliver
                        | vendpay_domain::StockChange::Remove,
                    ..
                }
            )
        });
        if delivering {
            for row in &t.stock {
                if let Some(name) = self.product_name(&row.sku).await {
                    names.insert(row.sku.clone(), name);
                }
            }
        }
        // Without a key, facts name no buyer (the empty key's output is dropped below).
        let unkeyed = AnalyticsKey::new(Vec::new());
        let ctx = FactContext {
            key: self.analytics.as_ref().unwrap_or(&unkeyed),
            place: place.as_ref(),
            products: &names,
        };
        let mut facts = facts_of(t, prior, &ctx, self.clock.now());
        if self.analytics.is_none() {
            for f in &mut facts {
                f.buyer_key = None;
            }
        }
        facts
    }

    /// A product's name for sale facts, read at most once per [`NAME_TTL`]. A name is decoration: a
    /// read that fails leaves the fact without it (logged) rather than holding up the sale's write.
    async fn product_name(&self, sku: &vendpay_domain::Sku) -> Option<String> {
        let now = self.clock.now();
        if let Ok(names) = self.names.lock() {
            if let Some((name, until)) = names.get(sku) {
                if now < *until {
                    return name.clone();
                }
            }
        }
        match self.store.product(sku).await {
            Ok(product) => {
                let name = product.map(|p| p.name);
                if let Ok(mut names) = self.names.lock() {
                    names.insert(sku.clone(), (name.clone(), now.plus(NAME_TTL)));
                }
                name
            }
            Err(e) => {
                tracing::warn!(sku = %sku, error = %e, "product name not read; the sale's fact goes without it");
                None
            }
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
                    AnomalyKind::StockMismatch { slot, request_id } => tracing::warn!(
                        alert = "stock_mismatch",
                        session = %session,
                        slot = %slot,
                        request_id = %request_id,
                        "a vend was reported for a slot whose stock was already 0; count the slot and restock"
                    ),
                    other => tracing::warn!(session = %session, anomaly = ?other, "anomaly"),
                },
                Effect::Close { session } => tracing::info!(session = %session, "session closed"),
                Effect::Credit { .. }
                | Effect::Approve { .. }
                | Effect::Decline { .. }
                | Effect::HoldSettled { .. }
                | Effect::Stock { .. } => {}
            }
        }
    }
}

fn place_of(m: &Machine) -> Place {
    Place {
        district: m.record.district.clone(),
        location: m.record.location.clone(),
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
