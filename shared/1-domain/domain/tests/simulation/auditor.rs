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
