//! The auditor: its own books from effects and replies only, checked against the stored state after every step.

use super::*;

// ------------------------------------------------------------------------------------------------
// The auditor: its own ledger, from effects and replies only.
// ------------------------------------------------------------------------------------------------

#[derive(Default)]
pub(crate) struct Book {
    pub(crate) credited: u64,
    pub(crate) refunded: u64,
    pub(crate) spent: u64,
    pub(crate) holds: HashMap<RequestId, u64>,
}

#[derive(Default)]
pub(crate) struct Auditor {
    pub(crate) books: HashMap<SessionId, Book>,
    /// trade → (amount, session it was credited to)
    pub(crate) trades: HashMap<TradeNo, (Money, SessionId)>,
    pub(crate) refunds: HashMap<RefundId, (TradeNo, Money)>,
    pub(crate) refunded_per_trade: HashMap<TradeNo, u64>,
    pub(crate) approved: HashSet<(SessionId, RequestId)>,
    /// First answer to each idempotent request.
    pub(crate) payment_replies: HashMap<TradeNo, PaymentOutcome>,
    pub(crate) purchase_replies: HashMap<(usize, RequestId), PurchaseAnswer>,
    pub(crate) vend_final: HashMap<(SessionId, RequestId), PurchaseStatus>,
    pub(crate) sessions_seen: u64,
    /// The latest approval of each (machine, request id): the session holding it and when.
    pub(crate) approvals: HashMap<(DeviceId, RequestId), (SessionId, i64)>,
    /// Purchases (and paid orders) the machine reported delivered within their vend window: each must
    /// end `Delivered`, never refunded.
    pub(crate) delivered_in_time: HashSet<(SessionId, RequestId)>,
    /// Verified verdicts delivered per refund, from the commands seen. A refund is final only on one.
    pub(crate) verdicts: HashMap<RefundId, Verdicts>,
    /// When each refund was issued: the time of the step whose effects issued it.
    pub(crate) issued_at: HashMap<RefundId, i64>,
    /// Refunds raised as stuck.
    pub(crate) stuck: HashSet<RefundId>,
    /// How often each kind of outcome happened, so a run shows it exercised what it claims to.
    pub(crate) stats: BTreeMap<String, u64>,
    /// Inventory: the auditor's own book of every slot of every planogram, from the operators'
    /// requests that were accepted and the stock effects seen (never from the rows' arithmetic).
    pub(crate) slots: HashMap<DeviceId, BTreeMap<Slot, SlotBook>>,
    /// Numbers each slot's life: a slot removed from a planogram and added again is a new slot.
    pub(crate) incarnations: u64,
    /// Every reservation seen, by (session, request id; an order's is `RequestId::for_order`): the
    /// machine, the slot and the life of the slot it was taken on.
    pub(crate) reservations: HashMap<(SessionId, RequestId), (DeviceId, Slot, u64)>,
    /// The reservations each stored session holds now (held purchases and awaiting orders that
    /// reserved), as its last write shows.
    pub(crate) outstanding: HashMap<SessionId, Vec<(DeviceId, Slot, u64)>>,
    /// The sales facts every decision records, replayed against the sessions (`facts`).
    pub(crate) facts: crate::facts::FactBook,
}

/// One slot as the auditor books it: `stock_start + restocked − delivered` is the stock it must have.
#[derive(Clone, Debug)]
pub(crate) struct SlotBook {
    pub(crate) life: u64,
    pub(crate) sku: Sku,
    pub(crate) capacity: u32,
    pub(crate) price: Option<Money>,
    pub(crate) start: i64,
    /// What refills, counts and planogram replacements changed (each the new count minus the old).
    pub(crate) restocked: i64,
    /// Items that went out and were taken off the count (a vend at stock 0 takes nothing).
    pub(crate) delivered: i64,
}

impl SlotBook {
    pub(crate) fn stock(&self) -> i64 {
        self.start + self.restocked - self.delivered
    }
}

/// What a command must lead to, worked out from the store before it is decided.
#[derive(Default)]
pub(crate) struct Expect {
    /// The machine whose slot rows the command may change.
    pub(crate) device: Option<usize>,
    /// The row of the slot a purchase or order names, before it (`None`: not in the planogram).
    pub(crate) named: Option<SlotStock>,
    /// A fresh purchase or order (one the store does not answer itself): its price rule.
    pub(crate) price: Option<PriceRule>,
    /// A fresh order on a slot of the planogram: the items available once the machine's current
    /// session has given back what it must (an overdue deadline is acted on, an unpaid order gives way).
    pub(crate) order_available: Option<u32>,
}

#[derive(Clone, Debug)]
pub(crate) struct PriceRule {
    pub(crate) slot: Slot,
    pub(crate) asked: Option<Money>,
    /// The slot's price when it is in the planogram.
    pub(crate) planogram: Option<Money>,
    pub(crate) order: bool,
}

impl PriceRule {
    /// The refusal the rule demands, if any: another price than the slot's, or none outside it.
    fn demands(&self) -> Option<Rejection> {
        match (self.asked, self.planogram) {
            (Some(asked), Some(price)) if asked != price => Some(Rejection::PriceMismatch {
                slot: self.slot.clone(),
                asked,
                price,
            }),
            (None, None) => Some(Rejection::MissingPrice(self.slot.clone())),
            _ => None,
        }
    }

    /// The price the purchase or order must be recorded at.
    fn price(&self) -> Option<Money> {
        self.planogram.or(self.asked)
    }

    fn what(&self) -> &'static str {
        if self.order {
            "order"
        } else {
            "purchase"
        }
    }
}

/// The verified answers about one refund delivered so far.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Verdicts {
    pub(crate) success: bool,
    pub(crate) refusal: bool,
}

pub(crate) const STUCK_AFTER_MS: i64 = REFUND_STUCK_AFTER.as_millis() as i64;

/// Whether `cmd` delivers this verdict about this refund.
pub(crate) fn verdict_for(cmd: &Command, refund_id: &RefundId, verdict: RefundOutcome) -> bool {
    matches!(cmd, Command::RefundResult { refund, outcome } if refund == refund_id && *outcome == verdict)
}

impl Auditor {
    pub(crate) fn count(&mut self, t: &Transition) {
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

    pub(crate) fn check(
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
                Effect::Decline { .. }
                | Effect::ScheduleDeadline { .. }
                | Effect::Close { .. }
                | Effect::Stock { .. } => {}
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
                    device, request, ..
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
                let currency = world.machines[*device].device.currency;
                if answer.approved()
                    && (answer.balance.currency() != currency
                        || answer.price.currency() != currency)
                {
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
    pub(crate) fn check_refunds_final_only_on_verified(&self, world: &World) -> Result<(), String> {
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
    pub(crate) fn check_refund_anomaly(
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
    pub(crate) fn check_fits_one_write(&self, cmd: &Command, t: &Transition) -> Result<(), String> {
        let new_refunds = t
            .effects
            .iter()
            .filter(|e| matches!(e, Effect::IssueRefund { .. }))
            .count();
        let changed_refunds = usize::from(matches!(cmd, Command::RefundResult { .. }));
        let actions = 1 + t.sessions.len() + 1 + 1 + new_refunds + changed_refunds + t.stock.len();
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
    pub(crate) fn check_aimed(&self, cmd: &Command, t: &Transition) -> Result<(), String> {
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
    pub(crate) fn check_attempt(&self, refund: &Refund) -> Result<(), String> {
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
// The inventory auditor: every slot of every planogram, after every step.
// ------------------------------------------------------------------------------------------------

/// Items of one slot available in `rows` (stock − reserved, never below 0).
fn available(row: Option<&SlotStock>) -> Option<u32> {
    row.map(|r| r.stock.saturating_sub(r.reserved))
}

/// The reservations a session holds as stored: held purchases and an awaiting order that reserved.
pub(crate) fn held_reservations(s: &Session) -> Vec<(RequestId, Slot)> {
    let mut out: Vec<(RequestId, Slot)> = s
        .purchases
        .iter()
        .filter(|p| p.reserved && p.status == PurchaseStatus::Held)
        .map(|p| (p.request_id.clone(), p.slot.clone()))
        .collect();
    if let Some(o) = s.order() {
        if o.reserved && o.status == OrderStatus::AwaitingPayment {
            out.push((RequestId::for_order(&o.order_id), o.slot.clone()));
        }
    }
    out
}

/// The stock changes one session's write calls for, from its records before and after: an approval
/// that reserved, or an order placed that reserved → `Reserve`; a reserving hold delivered →
/// `Deliver`; failed, unconfirmed, or an unpaid reserving order expired or cancelled → `Release`; a
/// late "delivered" report of a reserving hold already refunded → `Remove`; an order paid carries its
/// reservation to its purchase (no change). The `reserved` flag of a record never changes.
pub(crate) fn stock_changes(
    old: Option<&Session>,
    new: &Session,
) -> Result<Vec<(Slot, StockChange)>, String> {
    let mut out = Vec::new();
    let old_order = old.and_then(Session::order);
    if let Some(o) = new.order() {
        match old_order {
            None if o.reserved => out.push((o.slot.clone(), StockChange::Reserve)),
            None => {}
            Some(prev) if prev.reserved != o.reserved => {
                return Err(format!("order {} changed its reserved flag", o.order_id))
            }
            Some(prev)
                if o.reserved
                    && prev.status == OrderStatus::AwaitingPayment
                    && matches!(o.status, OrderStatus::Expired | OrderStatus::Cancelled) =>
            {
                out.push((o.slot.clone(), StockChange::Release));
            }
            Some(_) => {}
        }
    }
    // A reservation never disappears from a record (only reserving records are looked at below).
    for q in old.iter().flat_map(|s| &s.purchases).filter(|q| q.reserved) {
        if new.purchase(&q.request_id).is_none_or(|p| !p.reserved) {
            return Err(format!("purchase {} lost its reservation", q.request_id));
        }
    }
    for p in new.purchases.iter().filter(|p| p.reserved) {
        let prev = old.and_then(|s| s.purchase(&p.request_id));
        if let Some(prev) = prev {
            if !prev.reserved || prev.slot != p.slot {
                return Err(format!("purchase {} changed its reservation", p.request_id));
            }
        }
        let late_delivered = |before: Option<bool>| before.is_none() && p.late_report == Some(true);
        match prev.map(|q| (q.status, q.late_report)) {
            // An order's purchase appears when it is paid: it carries the order's reservation.
            None if new
                .order()
                .is_some_and(|o| RequestId::for_order(&o.order_id) == p.request_id) =>
            {
                if old_order.is_none_or(|o| !o.reserved) {
                    return Err(format!(
                        "paid order {} reserved without the order having reserved",
                        p.request_id
                    ));
                }
            }
            None => out.push((p.slot.clone(), StockChange::Reserve)),
            Some((PurchaseStatus::Held, _)) => match p.status {
                PurchaseStatus::Held => {}
                PurchaseStatus::Delivered => out.push((p.slot.clone(), StockChange::Deliver)),
                PurchaseStatus::Failed => out.push((p.slot.clone(), StockChange::Release)),
                PurchaseStatus::Unconfirmed => {
                    out.push((p.slot.clone(), StockChange::Release));
                    if late_delivered(None) {
                        out.push((p.slot.clone(), StockChange::Remove));
                    }
                }
                PurchaseStatus::Declined(_) => {
                    return Err(format!("held purchase {} declined", p.request_id))
                }
            },
            Some((PurchaseStatus::Unconfirmed, late)) if late_delivered(late) => {
                out.push((p.slot.clone(), StockChange::Remove));
            }
            Some(_) => {}
        }
    }
    Ok(out)
}

/// A vend report is recorded as the machine made it: a hold becomes delivered or failed (or, its
/// deadline having passed, unconfirmed with the report kept as late); an unconfirmed hold's first late
/// report is kept; nothing else changes.
fn check_vend_recorded(
    request: &RequestId,
    delivered: bool,
    written: &[Session],
    before: &[Option<Session>],
) -> Result<(), String> {
    for (new, old) in written.iter().zip(before) {
        let (Some(p), Some(prev)) = (
            new.purchase(request),
            old.as_ref().and_then(|s| s.purchase(request)),
        ) else {
            continue;
        };
        let ok = match (prev.status, prev.late_report) {
            (PurchaseStatus::Held, _) => match p.status {
                PurchaseStatus::Delivered => delivered,
                PurchaseStatus::Failed => !delivered,
                PurchaseStatus::Unconfirmed => p.late_report == Some(delivered),
                _ => false,
            },
            (PurchaseStatus::Unconfirmed, None) => {
                p.status == PurchaseStatus::Unconfirmed && p.late_report == Some(delivered)
            }
            (status, late) => p.status == status && p.late_report == late,
        };
        if !ok {
            return Err(format!(
                "vend {request} reported delivered={delivered}: {:?}/{:?} became {:?}/{:?}",
                prev.status, prev.late_report, p.status, p.late_report
            ));
        }
    }
    Ok(())
}

impl Auditor {
    fn bump(&mut self, key: &str) {
        *self.stats.entry(key.to_owned()).or_default() += 1;
    }

    /// What `cmd` must lead to, from the store as it is before the command.
    pub(crate) fn expect(&self, world: &World, cmd: &Command, now: Timestamp) -> Expect {
        let session_device = |id: Option<SessionId>| {
            id.and_then(|id| world.sessions.get(&id))
                .and_then(|s| world.machine_of(&s.device_id))
        };
        let device = match cmd {
            Command::Notify { device, .. }
            | Command::Purchase { device, .. }
            | Command::Order { device, .. }
            | Command::End { device, .. } => Some(*device),
            Command::Vend {
                device, request, ..
            } => {
                let id = &world.machines[*device].device.id;
                let session = match world.requests.get(&(id.clone(), request.clone())) {
                    Some(answer) => answer.session.clone(),
                    None => OrderId::parse(request.as_str())
                        .ok()
                        .map(|o| SessionId::for_order(id, &o)),
                };
                session_device(session)
            }
            Command::Deadline { session } => session_device(Some(session.clone())),
            Command::RefundResult { .. } | Command::RefundUnresolved { .. } => None,
        };
        let named = match cmd {
            Command::Purchase { device, slot, .. } | Command::Order { device, slot, .. } => {
                world.machines[*device].slots.get(slot).cloned()
            }
            _ => None,
        };
        let mut expect = Expect {
            device,
            named,
            price: None,
            order_available: None,
        };
        match cmd {
            Command::Purchase {
                device,
                request,
                slot,
                price,
                ..
            } => {
                let id = &world.machines[*device].device.id;
                let seen = world.requests.contains_key(&(id.clone(), request.clone()))
                    || OrderId::parse(request.as_str())
                        .is_ok_and(|o| world.sessions.contains_key(&SessionId::for_order(id, &o)));
                if !seen {
                    expect.price = Some(PriceRule {
                        slot: slot.clone(),
                        asked: *price,
                        planogram: world.slot_price(*device, slot),
                        order: false,
                    });
                }
            }
            Command::Order {
                device,
                order,
                slot,
                price,
            } => {
                let id = &world.machines[*device].device.id;
                let seen = world
                    .requests
                    .contains_key(&(id.clone(), RequestId::for_order(order)))
                    || world
                        .sessions
                        .contains_key(&SessionId::for_order(id, order));
                if !seen {
                    expect.price = Some(PriceRule {
                        slot: slot.clone(),
                        asked: *price,
                        planogram: world.slot_price(*device, slot),
                        order: true,
                    });
                    // What the current session gives back before the order is judged: everything it
                    // reserved when its deadline has passed, or the unpaid order that gives way.
                    let given_back = world
                        .current(*device)
                        .filter(|s| s.phase != Phase::Closed)
                        .map_or(0, |s| {
                            let on_slot = held_reservations(s)
                                .into_iter()
                                .filter(|(_, sl)| sl == slot)
                                .count() as u32;
                            let unpaid = s
                                .order()
                                .is_some_and(|o| o.status == OrderStatus::AwaitingPayment);
                            if s.due(now) || (s.phase == Phase::Open && unpaid) {
                                on_slot
                            } else {
                                0
                            }
                        });
                    expect.order_available = expect.named.as_ref().map(|r| {
                        r.stock
                            .saturating_sub(r.reserved.saturating_sub(given_back))
                    });
                }
            }
            _ => {}
        }
        expect
    }

    /// A refused command: an inventory refusal must be the one the rules demand, and a refusal the
    /// rules demand must be the one that came.
    pub(crate) fn check_refusal(&mut self, expect: &Expect, e: &Rejection) -> Result<(), String> {
        let demanded = expect.price.as_ref().and_then(PriceRule::demands);
        match e {
            Rejection::PriceMismatch { .. } | Rejection::MissingPrice(_) => {
                let rule = expect
                    .price
                    .as_ref()
                    .ok_or("price refusal of a request seen before")?;
                if demanded.as_ref() != Some(e) {
                    return Err(format!(
                        "{} refused {e:?}, but the rule is {rule:?}",
                        rule.what()
                    ));
                }
                let code = match e {
                    Rejection::PriceMismatch { .. } => "price_mismatch",
                    _ => "missing_price",
                };
                self.bump(&format!("{} refused {code}", rule.what()));
            }
            Rejection::SoldOut(slot) => {
                let rule = expect.price.as_ref().filter(|r| r.order);
                if rule.is_none_or(|r| &r.slot != slot) || demanded.is_some() {
                    return Err(format!("{e:?} for {rule:?}"));
                }
                if expect.order_available != Some(0) {
                    return Err(format!(
                        "order refused sold_out on {slot} with {:?} available (rows {:?})",
                        expect.order_available, expect.named
                    ));
                }
                self.bump("order refused sold_out");
            }
            other => {
                if let Some(d) = demanded {
                    return Err(format!("refused {other:?}, where the rules demand {d:?}"));
                }
            }
        }
        Ok(())
    }

    /// An accepted command: no price refusal was due, and the price recorded is the slot's (or the
    /// one the machine gave outside the planogram).
    pub(crate) fn check_accepted(
        &self,
        world: &World,
        expect: &Expect,
        cmd: &Command,
        t: &Transition,
    ) -> Result<(), String> {
        let Some(rule) = &expect.price else {
            return Ok(());
        };
        if let Some(d) = rule.demands() {
            return Err(format!(
                "{} accepted, where the rules demand {d:?}",
                rule.what()
            ));
        }
        let price = match (cmd, &t.reply) {
            (Command::Purchase { .. }, Reply::Purchase(answer)) => Some(answer.price),
            (Command::Order { device, order, .. }, _) => {
                let id = SessionId::for_order(&world.machines[*device].device.id, order);
                t.session(&id).and_then(|s| s.order()).map(|o| o.price)
            }
            _ => None,
        };
        if price.is_some() && price != rule.price() {
            return Err(format!(
                "{} recorded at {price:?}, rule {rule:?}",
                rule.what()
            ));
        }
        Ok(())
    }

    /// The stock effects of one accepted command, folded over the rows as they were before it: an
    /// item is reserved only when one is available, released or delivered only when reserved; an
    /// item taken out of a slot at stock 0 raises `stock_mismatch` (and takes nothing), any other takes
    /// one; `sold_out` only when nothing was available; an approval (or order) on a slot of the
    /// planogram reserves, any other does not.
    pub(crate) fn check_stock(
        &mut self,
        world: &World,
        cmd: &Command,
        t: &Transition,
        expect: Expect,
        before: &Before,
    ) -> Result<(), String> {
        let device_id = expect.device.map(|d| world.machines[d].device.id.clone());
        // The stock changes the written records call for, from how each purchase and order moved
        // (not from the effects): they must be exactly the effects.
        let mut called_for = Vec::new();
        for (new, old) in t.sessions.iter().zip(&before.sessions) {
            called_for.extend(stock_changes(old.as_ref(), new)?);
        }
        let mut emitted: Vec<(Slot, StockChange)> = t
            .effects
            .iter()
            .filter_map(|e| match e {
                Effect::Stock { slot, change, .. } => Some((slot.clone(), *change)),
                _ => None,
            })
            .collect();
        let order =
            |v: &mut Vec<(Slot, StockChange)>| v.sort_by_key(|(s, c)| (s.clone(), *c as u8));
        order(&mut called_for);
        order(&mut emitted);
        if called_for != emitted {
            return Err(format!(
                "{cmd:?}: the records call for stock changes {called_for:?}, the effects are {emitted:?}"
            ));
        }
        if let Command::Vend {
            request, delivered, ..
        } = cmd
        {
            check_vend_recorded(request, *delivered, &t.sessions, &before.sessions)?;
        }
        // Whether the slot a purchase or order names was in the planogram when it was decided.
        let named_in_planogram = expect.named.is_some();
        // The rows as they were before the command: those it overwrote, else as they are.
        let mut rows: BTreeMap<Slot, SlotStock> = BTreeMap::new();
        let row_before = |slot: &Slot| -> Option<SlotStock> {
            before
                .rows
                .iter()
                .find(|r| &r.slot == slot)
                .or_else(|| {
                    expect
                        .device
                        .and_then(|d| world.machines[d].slots.get(slot))
                })
                .cloned()
        };
        let mut zero_takes: BTreeMap<Slot, usize> = BTreeMap::new();
        let mut taken: BTreeMap<Slot, i64> = BTreeMap::new();
        let mut reserved: Vec<Slot> = Vec::new();
        for e in &t.effects {
            match e {
                Effect::Stock {
                    device,
                    slot,
                    change,
                } => {
                    if Some(device) != device_id.as_ref() {
                        return Err(format!(
                            "{cmd:?} changed stock of {device}, not of its machine {device_id:?}"
                        ));
                    }
                    self.bump(&format!("stock {change:?}"));
                    if !rows.contains_key(slot) {
                        if let Some(row) = row_before(slot) {
                            rows.insert(slot.clone(), row);
                        }
                    }
                    let Some(row) = rows.get_mut(slot) else {
                        if *change == StockChange::Reserve {
                            return Err(format!(
                                "reserved an item of {slot}, not in the planogram"
                            ));
                        }
                        self.bump("stock change for a slot no longer in the planogram");
                        continue;
                    };
                    if matches!(change, StockChange::Release | StockChange::Deliver) {
                        if row.reserved == 0 {
                            return Err(format!(
                                "{change:?} of an item of {slot}, which has none reserved ({row:?})"
                            ));
                        }
                        row.reserved -= 1;
                    }
                    match change {
                        StockChange::Reserve => {
                            if row.stock <= row.reserved {
                                return Err(format!(
                                    "reserved an item of {slot} with none available ({row:?})"
                                ));
                            }
                            row.reserved += 1;
                            reserved.push(slot.clone());
                        }
                        StockChange::Deliver | StockChange::Remove if row.stock == 0 => {
                            *zero_takes.entry(slot.clone()).or_default() += 1;
                        }
                        StockChange::Deliver | StockChange::Remove => {
                            row.stock -= 1;
                            *taken.entry(slot.clone()).or_default() += 1;
                        }
                        StockChange::Release => {}
                    }
                }
                Effect::Decline {
                    reason: DeclineReason::SoldOut,
                    ..
                } => {
                    let Command::Purchase { slot, .. } = cmd else {
                        return Err(format!("sold_out decline from {cmd:?}"));
                    };
                    let row = rows.get(slot).cloned().or_else(|| row_before(slot));
                    if available(row.as_ref()) != Some(0) {
                        return Err(format!(
                            "purchase declined sold_out on {slot} with {:?}",
                            row
                        ));
                    }
                }
                _ => {}
            }
        }
        // Every item taken at stock 0 is flagged, and nothing else is.
        let mut flagged: BTreeMap<Slot, usize> = BTreeMap::new();
        for e in &t.effects {
            if let Effect::Anomaly {
                anomaly:
                    Anomaly {
                        kind: AnomalyKind::StockMismatch { slot, request_id },
                        ..
                    },
                ..
            } = e
            {
                if !matches!(cmd, Command::Vend { request, .. } if request == request_id) {
                    return Err(format!("stock_mismatch of {request_id} raised by {cmd:?}"));
                }
                *flagged.entry(slot.clone()).or_default() += 1;
            }
        }
        if flagged != zero_takes {
            return Err(format!(
                "items taken at stock 0 {zero_takes:?}, stock_mismatch raised {flagged:?}"
            ));
        }
        // Who may reserve: a purchase approved, or an order placed, on a slot of the planogram.
        let approved = t.effects.iter().find_map(|e| match e {
            Effect::Approve {
                session,
                request_id,
                ..
            } => Some((session.clone(), request_id.clone())),
            _ => None,
        });
        match cmd {
            Command::Purchase { slot, .. } => {
                let in_planogram = named_in_planogram;
                let want: Vec<Slot> = match &approved {
                    Some((session, request)) => {
                        let p = world
                            .sessions
                            .get(session)
                            .and_then(|s| s.purchase(request))
                            .ok_or("approved purchase not stored")?;
                        if p.reserved != in_planogram {
                            return Err(format!(
                                "purchase {request} approved on {slot} (in the planogram: {in_planogram}) with reserved {}",
                                p.reserved
                            ));
                        }
                        self.bump(if in_planogram {
                            "purchase approved on a planogram slot"
                        } else {
                            "purchase approved outside the planogram"
                        });
                        if in_planogram {
                            vec![slot.clone()]
                        } else {
                            vec![]
                        }
                    }
                    None => vec![],
                };
                if reserved != want {
                    return Err(format!("purchase reserved {reserved:?}, expected {want:?}"));
                }
            }
            Command::Order {
                device,
                order,
                slot,
                ..
            } => {
                let id = SessionId::for_order(&world.machines[*device].device.id, order);
                let placed = t
                    .session(&id)
                    .filter(|s| s.version == 1)
                    .and_then(|s| s.order());
                let in_planogram = named_in_planogram;
                let want: Vec<Slot> = match placed {
                    Some(o) => {
                        if o.reserved != in_planogram {
                            return Err(format!(
                                "order {order} placed on {slot} (in the planogram: {in_planogram}) with reserved {}",
                                o.reserved
                            ));
                        }
                        self.bump(if in_planogram {
                            "order placed on a planogram slot"
                        } else {
                            "order placed outside the planogram"
                        });
                        if in_planogram {
                            vec![slot.clone()]
                        } else {
                            vec![]
                        }
                    }
                    None => vec![],
                };
                if reserved != want {
                    return Err(format!("order reserved {reserved:?}, expected {want:?}"));
                }
            }
            _ if !reserved.is_empty() => {
                return Err(format!("{cmd:?} reserved {reserved:?}"));
            }
            _ => {}
        }
        // Book what went out.
        if let Some(id) = &device_id {
            for (slot, n) in taken {
                let book = self
                    .slots
                    .get_mut(id)
                    .and_then(|m| m.get_mut(&slot))
                    .ok_or_else(|| format!("no book for {id} {slot}"))?;
                book.delivered += n;
                *self.stats.entry("items delivered".into()).or_default() += n as u64;
            }
        }
        let at_zero: usize = zero_takes.values().sum();
        if at_zero > 0 {
            *self
                .stats
                .entry("item taken at stock 0".into())
                .or_default() += at_zero as u64;
        }
        // The reservations each written session holds now; a new one belongs to the slot's life.
        for s in &t.sessions {
            for p in &s.purchases {
                if p.reserved && matches!(p.status, PurchaseStatus::Declined(_)) {
                    return Err(format!("declined purchase {} reserved", p.request_id));
                }
            }
            let mut now_held = Vec::new();
            for (request, slot) in held_reservations(s) {
                let key = (s.id.clone(), request.clone());
                let entry = match self.reservations.get(&key) {
                    Some(r) => r.clone(),
                    None => {
                        let book = self
                            .book(&s.device_id, &slot)
                            .filter(|_| reserved.contains(&slot))
                            .ok_or_else(|| {
                                format!(
                                    "{request} in {} holds a reservation of {slot} that no Reserve made",
                                    s.id
                                )
                            })?;
                        let r = (s.device_id.clone(), slot.clone(), book.life);
                        self.reservations.insert(key, r.clone());
                        r
                    }
                };
                if entry.1 != slot {
                    return Err(format!("{request} in {} moved its reservation", s.id));
                }
                now_held.push(entry);
            }
            if now_held.is_empty() {
                self.outstanding.remove(&s.id);
            } else {
                self.outstanding.insert(s.id.clone(), now_held);
            }
        }
        Ok(())
    }

    /// The defects an operator's request has, by the rules of `docs/contract.md`, “Catalogue and inventory” (none: it must be accepted;
    /// any: it must be refused with one of them and change nothing).
    pub(crate) fn defects(&self, world: &World, op: &Operator) -> Vec<&'static str> {
        let m = &world.machines[op.device()];
        let currency = m.device.currency;
        let mut out = Vec::new();
        let mut seen = HashSet::new();
        match op {
            Operator::Planogram { spec, .. } => {
                if spec.len() > vendpay_domain::inventory::MAX_SLOTS {
                    out.push("too_many_slots");
                }
                for s in spec {
                    if !seen.insert(&s.slot) {
                        out.push("duplicate_slot");
                    }
                    let Some(product) = world.catalogue.get(&s.sku) else {
                        out.push("unknown_sku");
                        continue;
                    };
                    if s.capacity == 0 || s.capacity > vendpay_domain::inventory::MAX_CAPACITY {
                        out.push("invalid_capacity");
                    }
                    let price = s.price.unwrap_or(product.price);
                    if price.currency() != currency {
                        out.push("currency_mismatch");
                    } else if price.is_zero() {
                        out.push("invalid_price");
                    }
                }
                // A slot left out while items of it are promised cannot be dropped yet.
                let kept: HashSet<&Slot> = spec.iter().map(|s| &s.slot).collect();
                if m.slots
                    .values()
                    .any(|r| r.reserved > 0 && !kept.contains(&r.slot))
                {
                    out.push("slot_reserved");
                }
            }
            Operator::Restock { counts, .. } => {
                if m.slots.is_empty() {
                    out.push("no_slot_map");
                }
                for c in counts {
                    if !seen.insert(&c.slot) {
                        out.push("duplicate_slot");
                    }
                    match m.slots.get(&c.slot) {
                        None if !m.slots.is_empty() => out.push("unknown_slot"),
                        None => {}
                        Some(r) if c.stock > r.capacity => out.push("invalid_stock"),
                        Some(_) => {}
                    }
                }
            }
        }
        out
    }

    /// Books an accepted operator's request (before it is written): a refill or count sets each named
    /// slot; a new planogram keeps a slot's stock when its sku is unchanged (clamped to the capacity),
    /// starts a new or re-stocked-with-another-sku slot at 0, and drops the slots it leaves out.
    pub(crate) fn book_operator(&mut self, world: &World, op: &Operator) {
        let m = &world.machines[op.device()];
        let mut books = self.slots.remove(&m.device.id).unwrap_or_default();
        match op {
            Operator::Restock { counts, .. } => {
                self.bump("restock");
                for c in counts {
                    if let Some(book) = books.get_mut(&c.slot) {
                        let delta = i64::from(c.stock) - book.stock();
                        book.restocked += delta;
                        if delta > 0 {
                            *self.stats.entry("items restocked".into()).or_default() +=
                                delta as u64;
                        }
                    }
                    if m.slots.get(&c.slot).is_some_and(|r| c.stock < r.reserved) {
                        self.bump("restock counted fewer than reserved");
                    }
                }
            }
            Operator::Planogram { spec, .. } => {
                self.bump("planogram replaced");
                for s in spec {
                    match books.get_mut(&s.slot) {
                        Some(book) => {
                            let old = book.stock();
                            let new = if book.sku == s.sku {
                                old.min(i64::from(s.capacity))
                            } else {
                                0
                            };
                            book.restocked += new - old;
                            let key = if book.sku != s.sku {
                                "planogram changed a slot's sku"
                            } else if new < old {
                                "planogram clamped a slot's stock"
                            } else {
                                "planogram kept a slot"
                            };
                            book.sku = s.sku.clone();
                            book.capacity = s.capacity;
                            book.price = s.price;
                            self.bump(key);
                        }
                        None => {
                            self.incarnations += 1;
                            let book = SlotBook {
                                life: self.incarnations,
                                sku: s.sku.clone(),
                                capacity: s.capacity,
                                price: s.price,
                                start: 0,
                                restocked: 0,
                                delivered: 0,
                            };
                            books.insert(s.slot.clone(), book);
                            self.bump("planogram added a slot");
                        }
                    }
                    if s.price.is_some() {
                        self.bump("planogram slot with its own price");
                    }
                }
                let kept: HashSet<&Slot> = spec.iter().map(|s| &s.slot).collect();
                let gone: Vec<Slot> = m
                    .slots
                    .keys()
                    .filter(|s| !kept.contains(s))
                    .cloned()
                    .collect();
                for slot in gone {
                    let busy = m.slots.get(&slot).is_some_and(|r| r.reserved > 0);
                    books.remove(&slot);
                    self.bump(if busy {
                        "planogram removed a slot with items reserved"
                    } else {
                        "planogram removed a slot"
                    });
                }
            }
        }
        if !books.is_empty() {
            self.slots.insert(m.device.id.clone(), books);
        }
    }

    fn book(&self, device: &DeviceId, slot: &Slot) -> Option<&SlotBook> {
        self.slots.get(device).and_then(|m| m.get(slot))
    }

    /// Every slot of every machine, after every step: the rows are exactly the books' slots, with the
    /// sku, capacity and price of the last planogram; `0 ≤ stock ≤ capacity`;
    /// `stock = stock_start + restocked − delivered`; `reserved` = the reservations outstanding on that
    /// slot (held purchases and awaiting orders that reserved it, in this life of the slot).
    pub(crate) fn audit_slots(&self, world: &World) -> Result<(), String> {
        let mut held: HashMap<(&DeviceId, &Slot), u32> = HashMap::new();
        for list in self.outstanding.values() {
            for (device, slot, life) in list {
                if self.book(device, slot).is_some_and(|b| b.life == *life) {
                    *held.entry((device, slot)).or_default() += 1;
                }
            }
        }
        let none = BTreeMap::new();
        let mut machines = 0;
        for m in &world.machines {
            let id = &m.device.id;
            let books = match self.slots.get(id) {
                Some(books) => {
                    machines += 1;
                    books
                }
                None => &none,
            };
            if m.slots.len() != books.len() || !m.slots.keys().eq(books.keys()) {
                return Err(format!(
                    "{id} has rows for {:?}, its planograms set {:?}",
                    m.slots.keys().collect::<Vec<_>>(),
                    books.keys().collect::<Vec<_>>()
                ));
            }
            for ((slot, row), book) in m.slots.iter().zip(books.values()) {
                if &row.slot != slot
                    || &row.device_id != id
                    || row.sku != book.sku
                    || row.capacity != book.capacity
                    || row.price != book.price
                {
                    return Err(format!("{id} {slot}: row {row:?}, book {book:?}"));
                }
                let stock = book.stock();
                if stock < 0 || i64::from(row.stock) != stock || row.stock > row.capacity {
                    return Err(format!(
                        "{id} {slot}: stock {} but start {} + restocked {} - delivered {} = {stock} (capacity {})",
                        row.stock, book.start, book.restocked, book.delivered, row.capacity
                    ));
                }
                let outstanding = if held.is_empty() {
                    0
                } else {
                    held.get(&(id, slot)).copied().unwrap_or(0)
                };
                if row.reserved != outstanding {
                    return Err(format!(
                        "{id} {slot}: reserved {} but {outstanding} reservations are outstanding ({row:?})",
                        row.reserved
                    ));
                }
            }
        }
        if machines != self.slots.len() {
            return Err("the auditor books slots of a machine the store does not have".into());
        }
        Ok(())
    }
}
