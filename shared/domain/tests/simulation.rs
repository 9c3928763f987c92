//! A deterministic, seeded simulation of a fleet, in the manner of TigerBeetle's VOPR.
//!
//! Each seed builds a few machines (random modes and currencies) and lets customers loose on them:
//! payments whose notifications are duplicated, reordered and delivered hours late; purchases that race
//! and overrun the balance; vend reports that fail, go missing or arrive twice; orders paid exactly, over,
//! under, late or never; early ends; deadlines delivered late, early and twice, plus a periodic sweep;
//! refunds sent to a model of Alipay (below). And the adversaries
//! an independent review taught it: buyers who top up a hundred times a cent, purchases approved in the
//! last second before a deadline and vended slowly, end-session (and purchase) repeats replayed after
//! the next customer paid, and order ids that collide with earlier purchase request ids.
//!
//! The world (`World`) plays storage: it keeps sessions, the trade dedupe, the request idempotency
//! records and the refund index, exactly the lookups the storage layer makes, and applies each
//! `Transition` atomically. The auditor never reads the domain's arithmetic: it keeps its own ledger per
//! session from the effects and replies it saw, and after every step checks that ledger against the
//! stored state and the money rules. At the end of each run, once every deadline has fired and
//! every refund is final, every session must be closed, and every purchase the machine reported
//! delivered within its vend window must have ended delivered (never refunded). Every transition must
//! fit one storage write (DynamoDB's 100 actions, 400 KB per item).
//!
//! Alipay is modelled per refund: the world knows whether Alipay has paid it, refused it for good, or not
//! received it yet. On each attempt the request reaches Alipay or not; if it does, Alipay pays a new
//! refund (rarely it refuses it for good) and its answer is either verified (the truth) or lost or
//! unverifiable (`Unknown`, whether or not Alipay paid). Once paid, a retry's verified answer is a
//! success (`REPEATED_REFUNDMENT_REQUEST`), except, rarely, a verified refusal (`TRADE_HAS_CLOSE`: the
//! trade was closed by that very refund) followed minutes later by the late verified success of the
//! earlier send. Some seeds meet an Alipay outage of over an hour in which no answer is verified, so
//! refunds stay unresolved long enough to be raised stuck. After each unverified attempt the ledger's
//! `refund_unresolved` runs as its own step; from the sixth attempt outside an outage the answer is
//! verified, so every refund ends final.
//!
//! The auditor's rule for refunds: a refund is final only on a verified answer. It records every verified
//! verdict delivered per refund and after every step checks every stored refund: succeeded only after
//! a verified success and only if Alipay really paid; failed only after a verified refusal and no
//! verified success; pending only while no verified answer has come. A refund is raised stuck once, by
//! an unverified attempt, only while pending an hour or more after its issue, and must be raised by the
//! first such attempt. At the end, every refund Alipay paid is succeeded and no other is.
//!
//! `SIM_SEEDS=n` runs n seeds (default 10,000); `SIM_SEED=s` replays exactly seed s. A failure names the
//! seed, the finding and the last steps.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code asserts by panicking

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, HashSet};
use std::time::{Duration, Instant};

use vendpay_domain::*;

// ------------------------------------------------------------------------------------------------
// Deterministic randomness (SplitMix64: no dependency whose stream could change under us).
// ------------------------------------------------------------------------------------------------

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `lo..=hi`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }
    /// True with probability `pct` percent.
    fn pct(&mut self, pct: u64) -> bool {
        self.next() % 100 < pct
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[(self.next() % items.len() as u64) as usize]
    }
}

// ------------------------------------------------------------------------------------------------
// The simulated store.
// ------------------------------------------------------------------------------------------------

struct Machine {
    device: Device,
    current: Option<SessionId>,
}

#[derive(Clone, Debug, PartialEq)]
enum Command {
    Notify {
        device: usize,
        payment: IncomingPayment,
    },
    Purchase {
        device: usize,
        request: RequestId,
        slot: Slot,
        price: Money,
        session: Option<SessionId>,
    },
    Vend {
        device: usize,
        request: RequestId,
        delivered: bool,
    },
    Order {
        device: usize,
        order: OrderId,
        slot: Slot,
        price: Money,
    },
    End {
        device: usize,
        session: Option<SessionId>,
    },
    Deadline {
        session: SessionId,
    },
    RefundResult {
        refund: RefundId,
        outcome: RefundOutcome,
    },
    /// A refund attempt ended without a verified verdict (the ledger's `refund_unresolved`).
    RefundUnresolved {
        refund: RefundId,
    },
}

/// Alipay's side of one refund: the truth the ledger can only learn from a verified answer. A refund
/// Alipay has not received yet has no entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum AlipayRefund {
    /// Alipay paid the buyer back. Final: every later verified answer to the same request is a success
    /// (`REPEATED_REFUNDMENT_REQUEST` with the amount), bar the rare `TRADE_HAS_CLOSE` of a retry.
    Paid,
    /// Alipay refused it for good.
    Refused,
}

struct World {
    machines: Vec<Machine>,
    sessions: BTreeMap<SessionId, Session>,
    trades: HashMap<TradeNo, PaymentOutcome>,
    requests: HashMap<(DeviceId, RequestId), PurchaseAnswer>,
    refunds: HashMap<RefundId, SessionId>,
    windows: Windows,
    /// Alipay's truth per refund it has received (not storage: the world outside).
    alipay: HashMap<RefundId, AlipayRefund>,
}

impl World {
    /// The stored refund with this id.
    fn refund(&self, id: &RefundId) -> Option<&Refund> {
        self.refunds
            .get(id)
            .and_then(|s| self.sessions.get(s))
            .and_then(|s| s.refund(id))
    }

    fn current(&self, device: usize) -> Option<&Session> {
        self.machines[device]
            .current
            .as_ref()
            .and_then(|id| self.sessions.get(id))
    }

    /// Decides `cmd` the way the service layer will: storage lookups first, then the domain.
    fn decide(&self, cmd: &Command, now: Timestamp) -> Decision {
        let noop = |reply| {
            Ok(Transition {
                sessions: vec![],
                current: None,
                effects: vec![],
                reply,
            })
        };
        match cmd {
            Command::Notify { device, payment } => {
                if let Some(seen) = self.trades.get(&payment.trade_no) {
                    return noop(Reply::Payment(seen.clone()));
                }
                let m = &self.machines[*device];
                receive_payment(
                    &m.device,
                    self.current(*device),
                    payment,
                    &self.windows,
                    now,
                )
            }
            Command::Purchase {
                device,
                request,
                slot,
                price,
                session,
            } => {
                let m = &self.machines[*device];
                if let Some(seen) = self.requests.get(&(m.device.id.clone(), request.clone())) {
                    return noop(Reply::Purchase(seen.clone()));
                }
                // Order ids and purchase request ids share one namespace per machine.
                if let Ok(order) = OrderId::parse(request.as_str()) {
                    if self
                        .sessions
                        .contains_key(&SessionId::for_order(&m.device.id, &order))
                    {
                        return Err(Rejection::RequestConflict(request.to_string()));
                    }
                }
                let req = PurchaseRequest {
                    request_id: request.clone(),
                    slot: slot.clone(),
                    price: *price,
                    session: session.clone(),
                };
                request_purchase(&m.device, self.current(*device), &req, &self.windows, now)
            }
            Command::Vend {
                device,
                request,
                delivered,
            } => {
                let m = &self.machines[*device];
                let session = match self.requests.get(&(m.device.id.clone(), request.clone())) {
                    Some(answer) => answer.session.clone(),
                    None => OrderId::parse(request.as_str())
                        .ok()
                        .map(|o| SessionId::for_order(&m.device.id, &o)),
                };
                match session.and_then(|id| self.sessions.get(&id)) {
                    Some(s) => report_vend(s, request, *delivered, now),
                    None => Err(Rejection::UnknownPurchase(request.clone())),
                }
            }
            Command::Order {
                device,
                order,
                slot,
                price,
            } => {
                let m = &self.machines[*device];
                let as_request = RequestId::for_order(order);
                if self
                    .requests
                    .contains_key(&(m.device.id.clone(), as_request))
                {
                    return Err(Rejection::RequestConflict(order.to_string()));
                }
                let id = SessionId::for_order(&m.device.id, order);
                match self.sessions.get(&id) {
                    Some(s) if m.current.as_ref() != Some(&id) => match s.order() {
                        Some(o) if o.price == *price && &o.slot == slot => {
                            noop(Reply::Session { session: id })
                        }
                        _ => Err(Rejection::RequestConflict(order.to_string())),
                    },
                    _ => place_order(
                        &m.device,
                        self.current(*device),
                        order,
                        slot,
                        *price,
                        &self.windows,
                        now,
                    ),
                }
            }
            Command::End { device, session } => end_session(
                &self.machines[*device].device,
                self.current(*device),
                session.as_ref(),
                now,
            ),
            Command::Deadline { session } => match self.sessions.get(session) {
                Some(s) => deadline_due(s, now),
                None => Err(Rejection::NoSession),
            },
            Command::RefundResult { refund, outcome } => {
                match self
                    .refunds
                    .get(refund)
                    .and_then(|id| self.sessions.get(id))
                {
                    Some(s) => settle_refund(s, refund, *outcome, now),
                    None => Err(Rejection::UnknownRefund(refund.clone())),
                }
            }
            Command::RefundUnresolved { refund } => {
                match self
                    .refunds
                    .get(refund)
                    .and_then(|id| self.sessions.get(id))
                {
                    Some(s) => refund_unresolved(s, refund, now),
                    None => Err(Rejection::UnknownRefund(refund.clone())),
                }
            }
        }
    }

    /// Persists a transition the way storage will: every session write conditional on its version.
    fn apply(&mut self, cmd: &Command, t: &Transition) -> Result<(), String> {
        for s in &t.sessions {
            let expected = self.sessions.get(&s.id).map_or(0, |old| old.version);
            if s.version != expected + 1 {
                return Err(format!(
                    "session {} written at version {} over version {expected}",
                    s.id, s.version
                ));
            }
        }
        for s in &t.sessions {
            self.sessions.insert(s.id.clone(), s.clone());
        }
        if let Some(id) = &t.current {
            let device = self
                .sessions
                .get(id)
                .map(|s| s.device_id.clone())
                .ok_or_else(|| format!("current set to unwritten session {id}"))?;
            let m = self
                .machines
                .iter_mut()
                .find(|m| m.device.id == device)
                .ok_or("current of unknown device")?;
            m.current = Some(id.clone());
        }
        for e in &t.effects {
            if let Effect::IssueRefund {
                session, refund_id, ..
            } = e
            {
                self.refunds.insert(refund_id.clone(), session.clone());
            }
        }
        match (cmd, &t.reply) {
            (Command::Notify { payment, .. }, Reply::Payment(outcome)) => {
                self.trades
                    .entry(payment.trade_no.clone())
                    .or_insert_with(|| outcome.clone());
            }
            (
                Command::Purchase {
                    device, request, ..
                },
                Reply::Purchase(answer),
            ) => {
                let key = (self.machines[*device].device.id.clone(), request.clone());
                self.requests.entry(key).or_insert_with(|| answer.clone());
            }
            _ => {}
        }
        Ok(())
    }
}

// ------------------------------------------------------------------------------------------------
// The auditor: its own ledger, from effects and replies only.
// ------------------------------------------------------------------------------------------------

#[derive(Default)]
struct Book {
    credited: u64,
    refunded: u64,
    spent: u64,
    holds: HashMap<RequestId, u64>,
}

#[derive(Default)]
struct Auditor {
    books: HashMap<SessionId, Book>,
    /// trade → (amount, session it was credited to)
    trades: HashMap<TradeNo, (Money, SessionId)>,
    refunds: HashMap<RefundId, (TradeNo, Money)>,
    refunded_per_trade: HashMap<TradeNo, u64>,
    approved: HashSet<(SessionId, RequestId)>,
    /// First answer to each idempotent request.
    payment_replies: HashMap<TradeNo, PaymentOutcome>,
    purchase_replies: HashMap<(usize, RequestId), PurchaseAnswer>,
    vend_final: HashMap<(SessionId, RequestId), PurchaseStatus>,
    sessions_seen: u64,
    /// The latest approval of each (machine, request id): the session holding it and when.
    approvals: HashMap<(DeviceId, RequestId), (SessionId, i64)>,
    /// Purchases (and paid orders) the machine reported delivered within their vend window: each must
    /// end `Delivered`, never refunded.
    delivered_in_time: HashSet<(SessionId, RequestId)>,
    /// Verified verdicts delivered per refund, from the commands seen. A refund is final only on one.
    verdicts: HashMap<RefundId, Verdicts>,
    /// When each refund was issued: the time of the step whose effects issued it.
    issued_at: HashMap<RefundId, i64>,
    /// Refunds raised as stuck.
    stuck: HashSet<RefundId>,
    /// How often each kind of outcome happened, so a run shows it exercised what it claims to.
    stats: BTreeMap<String, u64>,
}

/// The verified answers about one refund delivered so far.
#[derive(Clone, Copy, Debug, Default)]
struct Verdicts {
    success: bool,
    refusal: bool,
}

const STUCK_AFTER_MS: i64 = REFUND_STUCK_AFTER.as_millis() as i64;

/// Whether `cmd` delivers this verdict about this refund.
fn verdict_for(cmd: &Command, refund_id: &RefundId, verdict: RefundOutcome) -> bool {
    matches!(cmd, Command::RefundResult { refund, outcome } if refund == refund_id && *outcome == verdict)
}

impl Auditor {
    fn count(&mut self, t: &Transition) {
        let mut keys = Vec::new();
        for e in &t.effects {
            keys.push(match e {
                Effect::Decline { reason, .. } => format!("decline {}", reason.as_str()),
                Effect::Anomaly { anomaly, .. } => {
                    let kind = format!("{:?}", anomaly.kind);
                    format!("anomaly {}", kind.split([' ', '{']).next().unwrap_or(""))
                }
                Effect::HoldSettled { delivered, .. } => {
                    format!("hold settled delivered={delivered}")
                }
                other => format!("{:?}", other)
                    .split([' ', '{'])
                    .next()
                    .unwrap_or("")
                    .to_owned(),
            });
        }
        match &t.reply {
            Reply::Payment(p) if !t.is_noop() => keys.push(format!("payment {:?}", p.disposition)),
            Reply::Payment(_) => keys.push("payment duplicate".into()),
            Reply::Refund { status, .. } => keys.push(format!("refund reply {status:?}")),
            _ => {}
        }
        for s in &t.sessions {
            if s.phase == Phase::Closed {
                if let Some(o) = s.order() {
                    keys.push(format!("order closed {:?}", o.status));
                }
            }
        }
        for k in keys {
            *self.stats.entry(k).or_default() += 1;
        }
    }

    fn check(
        &mut self,
        world: &World,
        cmd: &Command,
        t: &Transition,
        now: i64,
    ) -> Result<(), String> {
        self.count(t);
        self.check_fits_one_write(cmd, t)?;
        self.check_aimed(cmd, t)?;
        if let Command::RefundResult { refund, outcome } = cmd {
            match outcome {
                RefundOutcome::Succeeded => {
                    self.verdicts.entry(refund.clone()).or_default().success = true
                }
                RefundOutcome::FailedPermanently => {
                    self.verdicts.entry(refund.clone()).or_default().refusal = true
                }
                RefundOutcome::Unknown if !t.is_noop() || !t.effects.is_empty() => {
                    return Err(format!(
                        "an unverified answer about {refund} changed something"
                    ))
                }
                RefundOutcome::Unknown => {}
            }
        }
        if let Command::Vend {
            device,
            request,
            delivered: true,
        } = cmd
        {
            let key = (world.machines[*device].device.id.clone(), request.clone());
            let window = world.windows.purchase_first.as_millis() as i64;
            if let Some((session, approved_at)) = self.approvals.get(&key) {
                if now < approved_at + window {
                    self.delivered_in_time
                        .insert((session.clone(), request.clone()));
                }
            }
        }
        let mut step_refunds: HashMap<TradeNo, u64> = HashMap::new();
        for e in &t.effects {
            match e {
                Effect::Credit {
                    session,
                    trade_no,
                    amount,
                } => {
                    let Command::Notify { payment, .. } = cmd else {
                        return Err(format!("credit of {trade_no} outside a payment"));
                    };
                    if &payment.trade_no != trade_no || payment.amount != *amount {
                        return Err(format!(
                            "credited {trade_no} {amount} for payment {payment:?}"
                        ));
                    }
                    if self.trades.contains_key(trade_no) {
                        return Err(format!("trade {trade_no} credited twice"));
                    }
                    self.trades
                        .insert(trade_no.clone(), (*amount, session.clone()));
                    let book = self.books.entry(session.clone()).or_default();
                    book.credited += amount.minor();
                }
                Effect::Approve {
                    session,
                    request_id,
                    price,
                } => {
                    if !self.approved.insert((session.clone(), request_id.clone())) {
                        return Err(format!("{request_id} approved twice in {session}"));
                    }
                    let device = world
                        .sessions
                        .get(session)
                        .map(|s| s.device_id.clone())
                        .ok_or_else(|| format!("approval in unwritten session {session}"))?;
                    self.approvals
                        .insert((device, request_id.clone()), (session.clone(), now));
                    self.books
                        .entry(session.clone())
                        .or_default()
                        .holds
                        .insert(request_id.clone(), price.minor());
                }
                Effect::HoldSettled {
                    session,
                    request_id,
                    delivered,
                } => {
                    let book = self.books.entry(session.clone()).or_default();
                    let Some(price) = book.holds.remove(request_id) else {
                        return Err(format!(
                            "hold {request_id} settled but not held in {session}"
                        ));
                    };
                    if *delivered {
                        book.spent += price;
                    }
                }
                Effect::IssueRefund {
                    session,
                    refund_id,
                    trade_no,
                    amount,
                    ..
                } => {
                    let Some((paid, credited_to)) = self.trades.get(trade_no) else {
                        return Err(format!("refund {refund_id} of uncredited trade {trade_no}"));
                    };
                    if credited_to != session {
                        return Err(format!(
                            "refund {refund_id} in {session} names {trade_no} of {credited_to}"
                        ));
                    }
                    if amount.currency() != paid.currency() || amount.is_zero() {
                        return Err(format!("refund {refund_id} of {amount} for a {paid} trade"));
                    }
                    if let Some(prev) = self
                        .refunds
                        .insert(refund_id.clone(), (trade_no.clone(), *amount))
                    {
                        return Err(format!(
                            "refund id {refund_id} issued twice ({prev:?}, now {amount})"
                        ));
                    }
                    let per_trade = self.refunded_per_trade.entry(trade_no.clone()).or_default();
                    *per_trade += amount.minor();
                    if *per_trade > paid.minor() {
                        return Err(format!("trade {trade_no} refunded {per_trade} of {paid}"));
                    }
                    *step_refunds.entry(trade_no.clone()).or_default() += amount.minor();
                    self.books.entry(session.clone()).or_default().refunded += amount.minor();
                    self.issued_at.insert(refund_id.clone(), now);
                }
                Effect::Anomaly { anomaly, .. } => {
                    self.check_refund_anomaly(world, cmd, anomaly, now)?
                }
                Effect::Decline { .. } | Effect::ScheduleDeadline { .. } | Effect::Close { .. } => {
                }
            }
        }

        // Replies: the same request always gets the same answer; outcomes follow the rules.
        match (cmd, &t.reply) {
            (Command::Notify { payment, device }, Reply::Payment(outcome)) => {
                let first = self
                    .payment_replies
                    .entry(payment.trade_no.clone())
                    .or_insert_with(|| outcome.clone());
                if first != outcome {
                    return Err(format!(
                        "payment {} answered {first:?} then {outcome:?}",
                        payment.trade_no
                    ));
                }
                let refunded_now = step_refunds.get(&payment.trade_no).copied().unwrap_or(0);
                let fresh = t.effects.iter().any(|e| matches!(e, Effect::Credit { .. }));
                if fresh {
                    let expected_refund = match outcome.disposition {
                        Disposition::Credited => 0,
                        Disposition::Refused(_) => payment.amount.minor(),
                        Disposition::OrderPaid => {
                            let price = world
                                .sessions
                                .get(&outcome.session)
                                .and_then(|s| s.order().map(|o| o.price.minor()))
                                .ok_or("order paid but no order")?;
                            payment.amount.minor() - price
                        }
                    };
                    if refunded_now != expected_refund {
                        return Err(format!(
                            "payment {} ({:?}) refunded {refunded_now} at once, expected {expected_refund}",
                            payment.trade_no, outcome.disposition
                        ));
                    }
                    let machine = &world.machines[*device].device;
                    if payment.amount.currency() != machine.currency
                        && outcome.disposition
                            != Disposition::Refused(RefusalReason::CurrencyMismatch)
                    {
                        return Err(format!(
                            "foreign-currency payment {} not refused",
                            payment.trade_no
                        ));
                    }
                }
            }
            (
                Command::Purchase {
                    device,
                    request,
                    price,
                    ..
                },
                Reply::Purchase(answer),
            ) => {
                let first = self
                    .purchase_replies
                    .entry((*device, request.clone()))
                    .or_insert_with(|| answer.clone());
                if first != answer {
                    return Err(format!(
                        "purchase {request} answered {first:?} then {answer:?}"
                    ));
                }
                let approvals = t
                    .effects
                    .iter()
                    .filter(|e| matches!(e, Effect::Approve { .. }))
                    .count();
                if approvals > 0 && !answer.approved() {
                    return Err(format!(
                        "purchase {request} approved in effects, declined in reply"
                    ));
                }
                if answer.approved() && approvals == 0 && !t.is_noop() {
                    return Err(format!("purchase {request} approved without a hold"));
                }
                if answer.approved() && answer.balance.currency() != price.currency() {
                    return Err("balance in another currency".into());
                }
            }
            (
                Command::Vend { request, .. },
                Reply::Vend {
                    session, status, ..
                },
            ) => {
                if matches!(
                    status,
                    PurchaseStatus::Delivered
                        | PurchaseStatus::Failed
                        | PurchaseStatus::Unconfirmed
                ) {
                    let first = self
                        .vend_final
                        .entry((session.clone(), request.clone()))
                        .or_insert(*status);
                    if first != status {
                        return Err(format!("vend {request} was {first:?}, now {status:?}"));
                    }
                }
            }
            (Command::RefundUnresolved { refund }, _) => {
                // Changes nothing but the stuck flag, and raises it once the refund is an hour old.
                if t.effects.iter().any(|e| {
                    !matches!(
                        e,
                        Effect::Anomaly {
                            anomaly: Anomaly {
                                kind: AnomalyKind::RefundStuck { .. },
                                ..
                            },
                            ..
                        }
                    )
                }) {
                    return Err(format!("unresolved {refund} had effects {:?}", t.effects));
                }
                let issued = self.issued_at.get(refund).copied();
                let status = world.refund(refund).map(|r| r.status);
                if status == Some(RefundStatus::Pending)
                    && issued.is_some_and(|i| now - i >= STUCK_AFTER_MS)
                    && !self.stuck.contains(refund)
                {
                    return Err(format!(
                        "refund {refund} pending since {issued:?} (now {now}) without a verified verdict, not raised stuck"
                    ));
                }
            }
            _ => {}
        }

        // The written sessions against the auditor's own books.
        for s in &t.sessions {
            if s.version == 1 {
                self.sessions_seen += 1;
            }
            s.check_invariant()?;
            let book = self.books.entry(s.id.clone()).or_default();
            let held: u64 = book.holds.values().sum();
            let free =
                book.credited as i128 - book.refunded as i128 - book.spent as i128 - held as i128;
            if free < 0 {
                return Err(format!(
                    "{}: more approved, spent and refunded than paid ({free})",
                    s.id
                ));
            }
            let mine = (book.credited, book.refunded, book.spent, held, free as u64);
            let theirs = (
                s.total_paid().map_err(|e| e.to_string())?.minor(),
                s.total_refunded().map_err(|e| e.to_string())?.minor(),
                s.spent.minor(),
                s.held.minor(),
                s.balance.minor(),
            );
            if mine != theirs {
                return Err(format!(
                    "{}: auditor (paid, refunded, spent, held, balance) = {mine:?}, stored = {theirs:?}",
                    s.id
                ));
            }
            let pay_first = s.is_pay_first();
            if (!pay_first || s.phase != Phase::Open) && free != 0 {
                return Err(format!(
                    "{} ({:?}, {:?}) keeps a free balance of {free} instead of refunding it at once",
                    s.id, s.kind, s.phase
                ));
            }
            if s.phase == Phase::Closed
                && (held != 0 || s.refunds.iter().any(|r| !r.status.is_final()))
            {
                return Err(format!("{} closed with holds or pending refunds", s.id));
            }
            if pay_first {
                let buyers: HashSet<_> = s
                    .payments
                    .iter()
                    .filter_map(|p| p.buyer_id.as_ref())
                    .collect();
                if buyers.len() > 1 {
                    return Err(format!(
                        "{} credited two different buyers: {buyers:?}",
                        s.id
                    ));
                }
            }
            for r in &s.refunds {
                match self.refunds.get(&r.id) {
                    Some((trade, amount)) if trade == &r.trade_no && *amount == r.amount => {}
                    other => {
                        return Err(format!(
                            "stored refund {} ({} {}) differs from the issued one {other:?}",
                            r.id, r.trade_no, r.amount
                        ))
                    }
                }
            }
        }
        self.check_refunds_final_only_on_verified(world)
    }

    /// A refund is final only on a verified answer: every stored refund, after every step, against the
    /// verdicts delivered and Alipay's truth.
    fn check_refunds_final_only_on_verified(&self, world: &World) -> Result<(), String> {
        for s in world.sessions.values() {
            for r in &s.refunds {
                let v = self.verdicts.get(&r.id).copied().unwrap_or_default();
                let paid = || world.alipay.get(&r.id) == Some(&AlipayRefund::Paid);
                let wrong = match r.status {
                    RefundStatus::Succeeded if !v.success => "succeeded without a verified success",
                    RefundStatus::Succeeded if !paid() => "succeeded but Alipay never paid it",
                    RefundStatus::Failed if !v.refusal => "failed without a verified refusal",
                    RefundStatus::Failed if v.success => "failed after a verified success",
                    RefundStatus::Pending if v.success || v.refusal => {
                        "pending after a verified answer"
                    }
                    _ => continue,
                };
                return Err(format!(
                    "refund {} in {} {wrong} (verdicts {v:?}, Alipay {:?})",
                    r.id,
                    s.id,
                    world.alipay.get(&r.id)
                ));
            }
        }
        Ok(())
    }

    /// Refund anomalies come from the command that justifies them: a refund is raised stuck once, by an
    /// unverified attempt, while pending at least an hour after its issue; failed on a verified refusal;
    /// succeeded-after-failure on a verified success after a verified refusal.
    fn check_refund_anomaly(
        &mut self,
        world: &World,
        cmd: &Command,
        anomaly: &Anomaly,
        now: i64,
    ) -> Result<(), String> {
        match &anomaly.kind {
            AnomalyKind::RefundStuck { refund_id } => {
                if !matches!(cmd, Command::RefundUnresolved { refund } if refund == refund_id) {
                    return Err(format!("refund {refund_id} raised stuck by {cmd:?}"));
                }
                let issued = self
                    .issued_at
                    .get(refund_id)
                    .copied()
                    .ok_or_else(|| format!("unissued refund {refund_id} raised stuck"))?;
                if now - issued < STUCK_AFTER_MS || anomaly.at.millis() != now {
                    return Err(format!(
                        "refund {refund_id} issued at {issued} raised stuck at {} (now {now}), within the hour",
                        anomaly.at.millis()
                    ));
                }
                let status = world.refund(refund_id).map(|r| r.status);
                if status != Some(RefundStatus::Pending) {
                    return Err(format!("refund {refund_id} raised stuck while {status:?}"));
                }
                if !self.stuck.insert(refund_id.clone()) {
                    return Err(format!("refund {refund_id} raised stuck twice"));
                }
            }
            AnomalyKind::RefundFailed { refund_id }
                if !verdict_for(cmd, refund_id, RefundOutcome::FailedPermanently) =>
            {
                return Err(format!("refund {refund_id} flagged failed by {cmd:?}"));
            }
            AnomalyKind::RefundSucceededAfterFailure { refund_id } => {
                let refused = self.verdicts.get(refund_id).is_some_and(|v| v.refusal);
                if !refused || !verdict_for(cmd, refund_id, RefundOutcome::Succeeded) {
                    return Err(format!(
                        "refund {refund_id} flagged succeeded after failure by {cmd:?} (refused before: {refused})"
                    ));
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Every decision must fit one storage write: DynamoDB takes at most 100 actions per transaction
    /// (device guard, sessions, trade and request rows, one row per new or changed refund) and 400 KB
    /// per item; and every stored list of a session stays within its bound.
    fn check_fits_one_write(&self, cmd: &Command, t: &Transition) -> Result<(), String> {
        let new_refunds = t
            .effects
            .iter()
            .filter(|e| matches!(e, Effect::IssueRefund { .. }))
            .count();
        let changed_refunds = usize::from(matches!(cmd, Command::RefundResult { .. }));
        let actions = 1 + t.sessions.len() + 1 + 1 + new_refunds + changed_refunds;
        if actions > 100 {
            return Err(format!("a decision needs {actions} write actions (> 100)"));
        }
        for s in &t.sessions {
            let bytes = serde_json::to_vec(s).map_err(|e| e.to_string())?.len();
            if bytes > 350_000 {
                return Err(format!("session {} is {bytes} bytes of JSON", s.id));
            }
            if s.payments.len() > MAX_PAYMENTS
                || s.purchases.len() > MAX_PURCHASES
                || s.anomalies.len() > MAX_ANOMALIES
            {
                return Err(format!(
                    "session {} keeps {} payments, {} purchases, {} anomalies",
                    s.id,
                    s.payments.len(),
                    s.purchases.len(),
                    s.anomalies.len()
                ));
            }
        }
        Ok(())
    }

    /// A command that names its session acts on that session only (a replay after the next customer
    /// paid changes nothing of theirs).
    fn check_aimed(&self, cmd: &Command, t: &Transition) -> Result<(), String> {
        let aimed = match cmd {
            Command::End {
                session: Some(s), ..
            }
            | Command::Purchase {
                session: Some(s), ..
            } => s,
            _ => return Ok(()),
        };
        for s in &t.sessions {
            if &s.id != aimed {
                return Err(format!(
                    "{cmd:?} meant for {aimed} changed session {}",
                    s.id
                ));
            }
        }
        for e in &t.effects {
            if let Effect::Approve { session, .. } | Effect::IssueRefund { session, .. } = e {
                if session != aimed {
                    return Err(format!("{cmd:?} meant for {aimed} acted on {session}"));
                }
            }
        }
        Ok(())
    }

    /// A refund attempt sends what the store holds: it must be what was issued.
    fn check_attempt(&self, refund: &Refund) -> Result<(), String> {
        match self.refunds.get(&refund.id) {
            Some((trade, amount)) if *trade == refund.trade_no && *amount == refund.amount => {
                Ok(())
            }
            other => Err(format!(
                "refund {} attempted as {} but issued as {other:?}",
                refund.id, refund.amount
            )),
        }
    }
}

// ------------------------------------------------------------------------------------------------
// The scenario: customers, machines, Alipay and the queues, on virtual time.
// ------------------------------------------------------------------------------------------------

enum Event {
    /// A customer walks up to a machine.
    Customer {
        device: usize,
    },
    Deliver(Command),
    /// The refund executor's attempt number `attempt` at a refund.
    RefundAttempt {
        refund: RefundId,
        attempt: u32,
    },
    Sweep,
}

struct Sim {
    rng: Rng,
    now: i64,
    queue: BinaryHeap<Reverse<(i64, u64)>>,
    events: HashMap<u64, Event>,
    seq: u64,
    world: World,
    auditor: Auditor,
    trace: Vec<String>,
    next_id: u64,
    steps: u64,
    used_ids: HashMap<usize, Vec<String>>,
    /// An Alipay outage (absolute ms, from..to): no answer in it is verified.
    outage: Option<(i64, i64)>,
}

const SECOND: i64 = 1000;
const MINUTE: i64 = 60 * SECOND;

impl Sim {
    fn new(seed: u64) -> Sim {
        let mut rng = Rng(seed);
        let currencies = [Currency::Cny, Currency::Jpy, Currency::Usd];
        let modes = [Mode::PayFirst, Mode::PurchaseFirst, Mode::Mixed];
        let n = rng.range(1, 4) as usize;
        let machines = (0..n)
            .map(|i| Machine {
                device: Device {
                    id: DeviceId::parse(format!("vm-{i}")).expect("valid id"),
                    mode: *rng.pick(&modes),
                    currency: *rng.pick(&currencies),
                },
                current: None,
            })
            .collect();
        // Mostly the default windows; sometimes short ones, to stress overlaps.
        let windows = if rng.pct(70) {
            Windows::default()
        } else {
            Windows {
                pay_first: Duration::from_secs(rng.range(5, 120)),
                purchase_first: Duration::from_secs(rng.range(2, 30)),
                order_payment: Duration::from_secs(rng.range(5, 60)),
            }
        };
        let start = 1_700_000_000_000;
        // Some seeds meet an Alipay outage of over an hour, so refunds go unresolved long enough to be
        // raised stuck.
        let outage = rng.pct(10).then(|| {
            let from = start + rng.range(0, 40 * MINUTE as u64) as i64;
            (
                from,
                from + rng.range(70 * MINUTE as u64, 180 * MINUTE as u64) as i64,
            )
        });
        Sim {
            rng,
            now: start,
            queue: BinaryHeap::new(),
            events: HashMap::new(),
            seq: 0,
            world: World {
                machines,
                sessions: BTreeMap::new(),
                trades: HashMap::new(),
                requests: HashMap::new(),
                refunds: HashMap::new(),
                windows,
                alipay: HashMap::new(),
            },
            auditor: Auditor::default(),
            trace: Vec::new(),
            next_id: 0,
            steps: 0,
            used_ids: HashMap::new(),
            outage,
        }
    }

    fn stat(&mut self, key: &str) {
        *self.auditor.stats.entry(key.into()).or_default() += 1;
    }

    fn at(&mut self, delay_ms: i64, event: Event) {
        self.seq += 1;
        self.queue
            .push(Reverse((self.now + delay_ms.max(0), self.seq)));
        self.events.insert(self.seq, event);
    }

    fn id(&mut self, prefix: &str) -> String {
        self.next_id += 1;
        format!("{prefix}{}", self.next_id)
    }

    fn money(&mut self, device: usize, lo: u64, hi: u64) -> Money {
        let currency = self.world.machines[device].device.currency;
        Money::new(self.rng.range(lo, hi), currency).expect("small amount")
    }

    /// A payment by a customer: Alipay notifies once, maybe again 200 ms later, maybe minutes or hours
    /// later (its resend schedule), in any order.
    /// Returns the trade and when its first notification arrives (ms from now).
    fn pay(
        &mut self,
        device: usize,
        amount: Money,
        buyer: Option<BuyerId>,
        delay: i64,
    ) -> (TradeNo, i64) {
        let trade = self.id("2026112522");
        let amount = if self.rng.pct(3) {
            // A payment in a currency the machine does not take.
            let other = if amount.currency() == Currency::Eur {
                Currency::Gbp
            } else {
                Currency::Eur
            };
            Money::new(amount.minor(), other).expect("small")
        } else {
            amount
        };
        let trade_no = TradeNo::parse(trade.clone()).expect("trade");
        let payment = IncomingPayment {
            trade_no: trade_no.clone(),
            merchant_trade_no: MerchantTradeNo::parse(format!("M{trade}")).expect("out trade"),
            amount,
            buyer_id: buyer,
            paid_at: Timestamp::from_millis(self.now + delay),
        };
        let first = delay + self.rng.range(50, 3000) as i64;
        self.at(
            first,
            Event::Deliver(Command::Notify {
                device,
                payment: payment.clone(),
            }),
        );
        if self.rng.pct(30) {
            let again = match self.rng.range(0, 3) {
                0 => 200,
                1 => 2 * MINUTE,
                2 => 10 * MINUTE,
                _ => 3 * 60 * MINUTE,
            };
            // Sometimes the duplicate overtakes the original.
            let at = if self.rng.pct(20) {
                delay
            } else {
                first + again
            };
            self.at(at, Event::Deliver(Command::Notify { device, payment }));
        }
        (trade_no, first)
    }

    /// An id this machine has used before (as a purchase request or an order), to collide with.
    fn reused_id(&mut self, device: usize) -> Option<String> {
        let used = self.used_ids.get(&device)?;
        if used.is_empty() {
            return None;
        }
        let i = (self.rng.next() % used.len() as u64) as usize;
        used.get(i).cloned()
    }

    fn remember_id(&mut self, device: usize, id: &str) {
        self.used_ids.entry(device).or_default().push(id.to_owned());
    }

    fn buyer(&mut self) -> Option<BuyerId> {
        if self.rng.pct(30) {
            None
        } else {
            let n = self.rng.range(1, 4);
            Some(BuyerId::parse(format!("2088{n:012}")).expect("buyer"))
        }
    }

    fn customer(&mut self, device: usize) {
        let mode = self.world.machines[device].device.mode;
        let purchase_first = match mode {
            Mode::PayFirst => false,
            Mode::PurchaseFirst => true,
            Mode::Mixed => self.rng.pct(50),
        };
        let window = if purchase_first {
            self.world.windows.order_payment.as_millis() as i64
        } else {
            self.world.windows.pay_first.as_millis() as i64
        };
        let buyer = self.buyer();
        if purchase_first {
            let fresh = self.id("ord");
            let id = match self.rng.pct(5) {
                true => self.reused_id(device).unwrap_or(fresh),
                false => fresh,
            };
            self.remember_id(device, &id);
            let order = OrderId::parse(id).expect("order");
            let order_session =
                SessionId::for_order(&self.world.machines[device].device.id, &order);
            let slot = Slot::parse(format!("A{}", self.rng.range(1, 9))).expect("slot");
            let price = self.money(device, 100, 900);
            self.at(
                0,
                Event::Deliver(Command::Order {
                    device,
                    order: order.clone(),
                    slot: slot.clone(),
                    price,
                }),
            );
            if self.rng.pct(10) {
                // The machine retries the order (lost answer).
                let d = self.rng.range(100, 3000) as i64;
                self.at(
                    d,
                    Event::Deliver(Command::Order {
                        device,
                        order: order.clone(),
                        slot,
                        price,
                    }),
                );
            }
            let roll = self.rng.range(0, 99);
            let amount = match roll {
                0..=59 => Some(price),
                60..=74 => Some(self.money(device, price.minor() + 1, price.minor() + 500)),
                75..=84 => Some(self.money(device, 1, price.minor() - 1)),
                _ => None,
            };
            let late = self.rng.pct(8);
            let delay = if late {
                window + self.rng.range(1, 60_000) as i64
            } else {
                self.rng.range(1_000, window.max(2_000) as u64) as i64
            };
            if let Some(amount) = amount {
                self.pay(device, amount, buyer, delay);
            }
            if self.rng.pct(5) {
                let d = self.rng.range(0, window as u64) as i64;
                let session = self.rng.pct(60).then(|| order_session.clone());
                self.at(d, Event::Deliver(Command::End { device, session }));
            }
        } else {
            let amount = self.money(device, 100, 2000);
            let (trade, first) = self.pay(device, amount, buyer.clone(), 0);
            let session = SessionId::for_payment(&trade);
            let mut last_paid = first;
            if self.rng.pct(6) {
                // A buyer feeding the machine a cent at a time, far more often than a session takes.
                let n = self.rng.range(51, 110);
                let mut d = first;
                for _ in 0..n {
                    d += self.rng.range(100, 1_500) as i64;
                    let amount = self.money(device, 1, 3);
                    let (_, f) = self.pay(device, amount, buyer.clone(), d);
                    last_paid = last_paid.max(f);
                }
            }
            if self.rng.pct(15) {
                // A purchase in the last second and a half before the deadline, then a slow vend.
                let request = RequestId::parse(self.id("req")).expect("request");
                let d = last_paid + window - self.rng.range(1, 1_500) as i64;
                let price = self.money(device, 50, 300);
                let slot = Slot::parse("C1").expect("slot");
                let cmd = Command::Purchase {
                    device,
                    request,
                    slot,
                    price,
                    session: Some(session.clone()),
                };
                self.at(d, Event::Deliver(cmd));
            }
            if self.rng.pct(20) {
                // A top-up, usually by the same buyer.
                let b = if self.rng.pct(80) {
                    buyer
                } else {
                    self.buyer()
                };
                let amount = self.money(device, 100, 1000);
                let d = self.rng.range(5_000, window as u64 + 30_000) as i64;
                self.pay(device, amount, b, d);
            }
            let purchases = self.rng.range(0, 4);
            for _ in 0..purchases {
                let fresh = self.id("req");
                let id = match self.rng.pct(3) {
                    true => self.reused_id(device).unwrap_or(fresh),
                    false => fresh,
                };
                self.remember_id(device, &id);
                let request = RequestId::parse(id).expect("request");
                let slot = Slot::parse(format!("B{}", self.rng.range(1, 9))).expect("slot");
                let price = self.money(device, 50, 900);
                let d = self.rng.range(2_000, window as u64 + 20_000) as i64;
                let cmd = Command::Purchase {
                    device,
                    request,
                    slot,
                    price,
                    session: self.rng.pct(70).then(|| session.clone()),
                };
                self.at(d, Event::Deliver(cmd.clone()));
                if self.rng.pct(15) {
                    let again = d + self.rng.range(0, 5_000) as i64;
                    self.at(again, Event::Deliver(cmd));
                }
            }
            if self.rng.pct(25) {
                let d = self.rng.range(3_000, window as u64 + 10_000) as i64;
                let aimed = self.rng.pct(70).then(|| session.clone());
                self.at(
                    d,
                    Event::Deliver(Command::End {
                        device,
                        session: aimed,
                    }),
                );
            }
            if self.rng.pct(10) {
                // The end (or a purchase) replayed long after: from the queue, a retry after a lost
                // answer, or a replay inside the signature window, once the next customer has paid.
                let d = window + self.rng.range(0, 10 * MINUTE as u64) as i64;
                let cmd = if self.rng.pct(60) {
                    Command::End {
                        device,
                        session: Some(session.clone()),
                    }
                } else {
                    Command::Purchase {
                        device,
                        request: RequestId::parse(self.id("req")).expect("request"),
                        slot: Slot::parse("B1").expect("slot"),
                        price: self.money(device, 1, 50),
                        session: Some(session.clone()),
                    }
                };
                self.at(d, Event::Deliver(cmd));
            }
        }
    }

    /// The machine vends an approved purchase or a paid order and reports it — or never does.
    fn vend(&mut self, device: usize, request: RequestId) {
        let roll = self.rng.range(0, 99);
        if roll >= 95 {
            return; // the report is lost: the deadline must settle the hold
        }
        let delivered = roll < 80;
        let window = self.world.windows.purchase_first.as_millis() as u64;
        let d = match self.rng.range(0, 99) {
            0..=69 => self.rng.range(100, 10_000.min(window.max(200))) as i64,
            // Slow, but in time: the hold must still be there.
            70..=84 => self.rng.range(
                window * 6 / 10,
                window.saturating_sub(50).max(window * 6 / 10),
            ) as i64,
            _ => self.rng.range(window, window + 20_000) as i64,
        };
        let cmd = Command::Vend {
            device,
            request,
            delivered,
        };
        self.at(d, Event::Deliver(cmd.clone()));
        if self.rng.pct(10) {
            let again = d + self.rng.range(0, 60_000) as i64;
            self.at(again, Event::Deliver(cmd));
        }
    }

    fn fail(&self, seed: u64, msg: &str) -> String {
        let tail: Vec<_> = self.trace.iter().rev().take(25).rev().cloned().collect();
        format!(
            "seed {seed}: {msg}\nreplay: SIM_SEED={seed} cargo test -p vendpay-domain --test simulation\nlast steps:\n  {}",
            tail.join("\n  ")
        )
    }

    fn step(&mut self, seed: u64, cmd: Command) -> Result<(), String> {
        let now = Timestamp::from_millis(self.now);
        self.steps += 1;
        let decision = self.world.decide(&cmd, now);
        self.trace.push(format!(
            "t={} {cmd:?} -> {:?}",
            self.now,
            decision.as_ref().map(|t| &t.reply)
        ));
        let t = match decision {
            Ok(t) => t,
            Err(Rejection::Inconsistent(e)) => {
                return Err(self.fail(seed, &format!("inconsistent: {e}")))
            }
            Err(Rejection::WrongDevice { .. }) => return Err(self.fail(seed, "wrong device")),
            Err(Rejection::RequestConflict(_)) => {
                *self
                    .auditor
                    .stats
                    .entry("id reused across orders and purchases: refused".into())
                    .or_default() += 1;
                return Ok(());
            }
            // Refusals of machine requests that make no sense right now are normal answers.
            Err(_) => return Ok(()),
        };
        if let Err(e) = self.world.apply(&cmd, &t) {
            return Err(self.fail(seed, &e));
        }
        if let Err(e) = self.auditor.check(&self.world, &cmd, &t, self.now) {
            return Err(self.fail(seed, &e));
        }
        let extra = match &cmd {
            Command::End {
                session: Some(_), ..
            } if t.is_noop() => Some("end for a session no longer current: no-op"),
            Command::Purchase {
                session: Some(_), ..
            } if t.is_noop() && !t.effects.is_empty() => {
                Some("purchase for a session no longer current: declined")
            }
            Command::Purchase { .. }
                if t.effects
                    .iter()
                    .any(|e| matches!(e, Effect::Approve { .. }))
                    && t.effects
                        .iter()
                        .any(|e| matches!(e, Effect::ScheduleDeadline { .. })) =>
            {
                Some("approval moved the deadline")
            }
            _ => None,
        };
        if let Some(k) = extra {
            *self.auditor.stats.entry(k.into()).or_default() += 1;
        }
        // Applied twice, a command changes nothing the second time and gives the same answer.
        match self.world.decide(&cmd, now) {
            Ok(again) if again.is_noop() && again.effects.is_empty() && again.reply == t.reply => {}
            other => {
                return Err(self.fail(
                    seed,
                    &format!("not idempotent: second application gave {other:?}"),
                ))
            }
        }
        self.react(&cmd, &t);
        Ok(())
    }

    /// What the rest of the system does with a transition's effects and reply.
    fn react(&mut self, cmd: &Command, t: &Transition) {
        for e in &t.effects {
            match e {
                Effect::ScheduleDeadline { session, at } => {
                    let due = at.millis() - self.now;
                    let late = match self.rng.range(0, 99) {
                        0..=79 => self.rng.range(0, 2_000) as i64,
                        80..=94 => self.rng.range(2_000, 90_000) as i64,
                        _ => -(self.rng.range(1, 3_000) as i64), // early: must be harmless
                    };
                    self.at(
                        due + late,
                        Event::Deliver(Command::Deadline {
                            session: session.clone(),
                        }),
                    );
                    if self.rng.pct(10) {
                        let d = due + late + self.rng.range(0, 30_000) as i64;
                        self.at(
                            d,
                            Event::Deliver(Command::Deadline {
                                session: session.clone(),
                            }),
                        );
                    }
                }
                Effect::IssueRefund { refund_id, .. } => {
                    let d = self.rng.range(0, 2_000) as i64;
                    self.at(
                        d,
                        Event::RefundAttempt {
                            refund: refund_id.clone(),
                            attempt: 1,
                        },
                    );
                }
                Effect::Approve { request_id, .. } => {
                    let device = match cmd {
                        Command::Purchase { device, .. } | Command::Notify { device, .. } => {
                            *device
                        }
                        _ => continue,
                    };
                    self.vend(device, request_id.clone());
                }
                _ => {}
            }
        }
    }

    /// The refund executor's attempt: Alipay acts on the request (if it reaches it) and answers, verified
    /// or not; the ledger records a verified verdict, or the attempt as unresolved and retries later.
    fn attempt_refund(&mut self, seed: u64, refund: RefundId, attempt: u32) -> Result<(), String> {
        let stored =
            self.world.refund(&refund).cloned().ok_or_else(|| {
                self.fail(seed, &format!("refund {refund} attempted but not stored"))
            })?;
        self.auditor
            .check_attempt(&stored)
            .map_err(|e| self.fail(seed, &e))?;
        if stored.status.is_final() {
            return Ok(());
        }
        let outage = self
            .outage
            .is_some_and(|(from, to)| (from..to).contains(&self.now));
        // After a few attempts, outside an outage, the request gets through and the answer is verified.
        let forced = attempt >= 6 && !outage;
        let before = self.world.alipay.get(&refund).copied();
        let reached = forced
            || if outage {
                self.rng.pct(50) // Alipay acts, its answer is lost
            } else {
                !self.rng.pct(10)
            };
        if reached && before.is_none() {
            let acted = if !forced && self.rng.pct(4) {
                AlipayRefund::Refused
            } else {
                AlipayRefund::Paid
            };
            self.world.alipay.insert(refund.clone(), acted);
        }
        let truth = self.world.alipay.get(&refund).copied();
        let verified = reached && !outage && (forced || !self.rng.pct(25));
        // Refunding the whole trade closes it: a retry after the lost answer may then be refused.
        let whole_trade = self
            .world
            .refunds
            .get(&refund)
            .and_then(|s| self.world.sessions.get(s))
            .is_some_and(|s| {
                s.payments
                    .iter()
                    .any(|p| p.trade_no == stored.trade_no && p.amount == stored.amount)
            });
        let mut closed_by_itself = false;
        let outcome = match truth {
            _ if !verified => RefundOutcome::Unknown,
            Some(AlipayRefund::Paid)
                if before == Some(AlipayRefund::Paid) && whole_trade && self.rng.pct(8) =>
            {
                closed_by_itself = true; // TRADE_HAS_CLOSE, closed by this very refund
                RefundOutcome::FailedPermanently
            }
            Some(AlipayRefund::Paid) => RefundOutcome::Succeeded,
            Some(AlipayRefund::Refused) => RefundOutcome::FailedPermanently,
            None => {
                return Err(self.fail(
                    seed,
                    &format!("a verified answer about {refund}, which Alipay never received"),
                ))
            }
        };
        if outage {
            self.stat("refund attempted in an Alipay outage");
        }
        if outcome == RefundOutcome::Unknown {
            self.stat("refund verdict unknown");
            if truth == Some(AlipayRefund::Paid) {
                self.stat("refund verdict unknown, Alipay paid");
            }
        } else if closed_by_itself {
            self.stat("refund refused after Alipay paid (trade closed)");
        } else if before == Some(AlipayRefund::Paid) {
            self.stat("refund retry answered already refunded");
        }
        let cmd = Command::RefundResult {
            refund: refund.clone(),
            outcome,
        };
        self.step(seed, cmd.clone())?;
        if outcome == RefundOutcome::Unknown {
            self.step(
                seed,
                Command::RefundUnresolved {
                    refund: refund.clone(),
                },
            )?;
            let backoff = (1_000i64 << attempt.min(11)) + self.rng.range(0, 1_000) as i64;
            self.at(
                backoff,
                Event::RefundAttempt {
                    refund,
                    attempt: attempt + 1,
                },
            );
        } else if closed_by_itself {
            // The verified success of the earlier send, whose answer was lost, arrives late.
            let d = self.rng.range(SECOND as u64, 10 * MINUTE as u64) as i64;
            self.at(
                d,
                Event::Deliver(Command::RefundResult {
                    refund,
                    outcome: RefundOutcome::Succeeded,
                }),
            );
        } else if self.rng.pct(5) {
            // Alipay's answer repeated (a retry raced the first answer).
            self.at(500, Event::Deliver(cmd));
        }
        Ok(())
    }

    fn run(&mut self, seed: u64) -> Result<(), String> {
        let horizon = 40 * MINUTE;
        for device in 0..self.world.machines.len() {
            let customers = self.rng.range(1, 6);
            for _ in 0..customers {
                let d = self.rng.range(0, horizon as u64) as i64;
                self.at(d, Event::Customer { device });
            }
        }
        let mut t = MINUTE;
        while t < horizon + 5 * 60 * MINUTE {
            self.at(t, Event::Sweep);
            t += MINUTE;
        }
        while let Some(Reverse((at, seq))) = self.queue.pop() {
            self.now = at;
            let Some(event) = self.events.remove(&seq) else {
                continue;
            };
            match event {
                Event::Customer { device } => self.customer(device),
                Event::Deliver(cmd) => self.step(seed, cmd)?,
                Event::RefundAttempt { refund, attempt } => {
                    self.attempt_refund(seed, refund, attempt)?
                }
                Event::Sweep => {
                    let now = Timestamp::from_millis(self.now);
                    let due: Vec<_> = self
                        .world
                        .sessions
                        .values()
                        .filter(|s| s.due(now))
                        .map(|s| s.id.clone())
                        .collect();
                    for session in due {
                        self.step(seed, Command::Deadline { session })?;
                    }
                }
            }
        }
        // A purchase the machine reported delivered in time was delivered, never refunded.
        for (session, request) in &self.auditor.delivered_in_time {
            let status = self
                .world
                .sessions
                .get(session)
                .and_then(|s| s.purchase(request))
                .map(|p| p.status);
            if status != Some(PurchaseStatus::Delivered) {
                return Err(self.fail(
                    seed,
                    &format!(
                        "{request} in {session} was reported delivered within its vend window but ended {status:?}"
                    ),
                ));
            }
        }
        // Every deadline has fired and every refund is final: nothing may be left open.
        for s in self.world.sessions.values() {
            if s.phase != Phase::Closed {
                return Err(self.fail(
                    seed,
                    &format!("session {} ends the run {:?}: {s:?}", s.id, s.phase),
                ));
            }
        }
        // The ledger and Alipay agree: every refund Alipay paid is succeeded, and no other is.
        for s in self.world.sessions.values() {
            for r in &s.refunds {
                let truth = self.world.alipay.get(&r.id);
                if (truth == Some(&AlipayRefund::Paid)) != (r.status == RefundStatus::Succeeded) {
                    return Err(self.fail(
                        seed,
                        &format!(
                            "refund {} in {} ends {:?}, but Alipay {truth:?}",
                            r.id, s.id, r.status
                        ),
                    ));
                }
            }
        }
        // A stuck refund stays pending and retried until a verified verdict.
        let stuck: Vec<_> = self.auditor.stuck.iter().cloned().collect();
        for id in stuck {
            let Some(status) = self.world.refund(&id).map(|r| r.status) else {
                return Err(self.fail(seed, &format!("stuck refund {id} not stored")));
            };
            self.stat(&format!("stuck refund ended {status:?}"));
        }
        Ok(())
    }
}

fn seeds() -> Vec<u64> {
    if let Ok(s) = std::env::var("SIM_SEED") {
        return vec![s.trim().parse().expect("SIM_SEED must be a number")];
    }
    let n: u64 = std::env::var("SIM_SEEDS")
        .ok()
        .map(|s| s.trim().parse().expect("SIM_SEEDS must be a number"))
        .unwrap_or(10_000);
    (0..n).collect()
}

#[test]
fn simulated_fleets_keep_every_money_rule() {
    let started = Instant::now();
    let (mut sessions, mut steps) = (0u64, 0u64);
    let mut stats: BTreeMap<String, u64> = BTreeMap::new();
    let seeds = seeds();
    for &seed in &seeds {
        let mut sim = Sim::new(seed);
        if let Err(report) = sim.run(seed) {
            panic!("{report}");
        }
        sessions += sim.auditor.sessions_seen;
        steps += sim.steps;
        for (k, v) in sim.auditor.stats {
            *stats.entry(k).or_default() += v;
        }
    }
    for (k, v) in &stats {
        println!("  {k:<45} {v}");
    }
    // The run must have exercised every rule it claims to check; a vacuous simulation is a defect.
    if seeds.len() >= 1000 {
        for must in [
            "payment Credited",
            "payment OrderPaid",
            "payment Refused(MachineBusy)",
            "payment Refused(CurrencyMismatch)",
            "payment Refused(NoOrder)",
            "payment Refused(OrderExpired)",
            "payment Refused(Underpaid)",
            "payment Refused(SessionFull)",
            "id reused across orders and purchases: refused",
            "end for a session no longer current: no-op",
            "purchase for a session no longer current: declined",
            "approval moved the deadline",
            "payment duplicate",
            "decline insufficient_balance",
            "decline session_closed",
            "decline no_session",
            "anomaly UnconfirmedVend",
            "anomaly LateVendReport",
            "anomaly RefundFailed",
            "anomaly RefundStuck",
            "anomaly RefundSucceededAfterFailure",
            "refund verdict unknown",
            "refund verdict unknown, Alipay paid",
            "refund retry answered already refunded",
            "refund refused after Alipay paid (trade closed)",
            "refund attempted in an Alipay outage",
            "stuck refund ended Succeeded",
            "hold settled delivered=true",
            "hold settled delivered=false",
            "refund reply Pending",
            "order closed Delivered",
            "order closed Failed",
            "order closed Unconfirmed",
            "order closed Expired",
            "order closed Cancelled",
            "Close",
        ] {
            assert!(
                stats.get(must).copied().unwrap_or(0) > 0,
                "the simulation never produced {must:?}"
            );
        }
    }
    println!(
        "simulation: {} seeds, {sessions} sessions, {steps} steps, all invariants held, in {:.2?}",
        seeds.len(),
        started.elapsed()
    );
}
