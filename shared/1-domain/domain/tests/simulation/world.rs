//! The simulated store: sessions, trade dedupe, request records and the refund index, applied atomically.

use super::*;

// ------------------------------------------------------------------------------------------------
// The simulated store.
// ------------------------------------------------------------------------------------------------

/// A machine as the simulated store keeps it: the device and its current session.
pub(crate) struct MachineRow {
    pub(crate) device: Device,
    pub(crate) current: Option<SessionId>,
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Command {
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
pub(crate) enum AlipayRefund {
    /// Alipay paid the buyer back. Final: every later verified answer to the same request is a success
    /// (`REPEATED_REFUNDMENT_REQUEST` with the amount), bar the rare `TRADE_HAS_CLOSE` of a retry.
    Paid,
    /// Alipay refused it for good.
    Refused,
}

pub(crate) struct World {
    pub(crate) machines: Vec<MachineRow>,
    pub(crate) sessions: BTreeMap<SessionId, Session>,
    pub(crate) trades: HashMap<TradeNo, PaymentOutcome>,
    pub(crate) requests: HashMap<(DeviceId, RequestId), PurchaseAnswer>,
    pub(crate) refunds: HashMap<RefundId, SessionId>,
    pub(crate) windows: Windows,
    /// Alipay's truth per refund it has received (not storage: the world outside).
    pub(crate) alipay: HashMap<RefundId, AlipayRefund>,
}

impl World {
    /// The stored refund with this id.
    pub(crate) fn refund(&self, id: &RefundId) -> Option<&Refund> {
        self.refunds
            .get(id)
            .and_then(|s| self.sessions.get(s))
            .and_then(|s| s.refund(id))
    }

    pub(crate) fn current(&self, device: usize) -> Option<&Session> {
        self.machines[device]
            .current
            .as_ref()
            .and_then(|id| self.sessions.get(id))
    }

    /// Decides `cmd` the way the service layer will: storage lookups first, then the domain.
    pub(crate) fn decide(&self, cmd: &Command, now: Timestamp) -> Decision {
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
    pub(crate) fn apply(&mut self, cmd: &Command, t: &Transition) -> Result<(), String> {
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
