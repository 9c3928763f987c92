//! The simulated store: sessions, trade dedupe, request records, the refund index, the catalogue and
//! each machine's slot rows, applied atomically and conditionally (every session and slot row written
//! only over the version it was read at).

use super::*;

// ------------------------------------------------------------------------------------------------
// The simulated store.
// ------------------------------------------------------------------------------------------------

/// A machine as the simulated store keeps it: the device, its current session and its slot rows.
pub(crate) struct MachineRow {
    pub(crate) device: Device,
    pub(crate) current: Option<SessionId>,
    /// The planogram as stored, one row per slot (empty: the machine has none).
    pub(crate) slots: BTreeMap<Slot, SlotStock>,
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
        /// `None`: the machine omits it (allowed for a slot of the planogram only).
        price: Option<Money>,
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
        price: Option<Money>,
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

/// An operator's (or the machine's own) inventory request: not a money decision, so not a
/// `Transition`; it writes slot rows only, conditionally, as `InventoryStore::write_slots` does.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Operator {
    /// `PUT /admin/devices/{id}/slots`.
    Planogram { device: usize, spec: Vec<SlotSpec> },
    /// `POST /admin/devices/{id}/restock` (a refill) or `POST /devices/{id}/inventory` (the machine's
    /// own count): each named slot's count afterwards.
    Restock {
        device: usize,
        counts: Vec<StockCount>,
    },
}

impl Operator {
    pub(crate) fn device(&self) -> usize {
        match self {
            Operator::Planogram { device, .. } | Operator::Restock { device, .. } => *device,
        }
    }
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
    /// The catalogue (products of every currency the fleet takes).
    pub(crate) catalogue: BTreeMap<Sku, Product>,
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

    /// The price a slot of `device`'s planogram sells at (its own, else its product's); `None` outside it.
    pub(crate) fn slot_price(&self, device: usize, slot: &Slot) -> Option<Money> {
        let row = self.machines[device].slots.get(slot)?;
        row.price
            .or_else(|| self.catalogue.get(&row.sku).map(|p| p.price))
    }

    /// What a device-level command reads, as the ledger does: the machine's rows and, when the command
    /// names a slot that sells at its product's price, that price.
    pub(crate) fn shelves(&self, device: usize, slot: Option<&Slot>) -> Shelves {
        let shelves = Shelves::new(self.machines[device].slots.values().cloned());
        let Some(sku) = slot.and_then(|s| shelves.needs_price(s)).cloned() else {
            return shelves;
        };
        match self.catalogue.get(&sku) {
            Some(p) => shelves.with_price(sku, p.price),
            None => shelves,
        }
    }

    /// What a session-level command reads: the machine's rows only when the session reserved items.
    pub(crate) fn session_shelves(&self, s: &Session) -> Shelves {
        if !s.reserves_stock() {
            return Shelves::NONE;
        }
        match self.machine_of(&s.device_id) {
            Some(i) => Shelves::new(self.machines[i].slots.values().cloned()),
            None => Shelves::NONE,
        }
    }

    pub(crate) fn machine_of(&self, id: &DeviceId) -> Option<usize> {
        self.machines.iter().position(|m| &m.device.id == id)
    }

    /// Decides an operator's request the way the inventory service will.
    pub(crate) fn operate(&self, op: &Operator) -> Result<SlotWrites, InventoryError> {
        let m = &self.machines[op.device()];
        let current: Vec<SlotStock> = m.slots.values().cloned().collect();
        match op {
            Operator::Planogram { spec, .. } => vendpay_domain::inventory::replace_planogram(
                &m.device,
                &current,
                spec,
                &self.catalogue,
            ),
            Operator::Restock { counts, .. } => {
                vendpay_domain::inventory::restock(&m.device.id, &current, counts)
            }
        }
    }

    /// Writes slot rows the way storage will, all or nothing: a removal only over the version read, a
    /// new row at version 1, a changed row at one above the stored version.
    pub(crate) fn write_slots(&mut self, device: usize, w: &SlotWrites) -> Result<(), String> {
        let rows = &self.machines[device].slots;
        for r in &w.remove {
            match rows.get(&r.slot) {
                Some(old) if old.version == r.version => {}
                other => {
                    return Err(format!(
                        "slot {} removed at version {} over {:?}",
                        r.slot,
                        r.version,
                        other.map(|o| o.version)
                    ))
                }
            }
        }
        let id = &self.machines[device].device.id;
        for r in &w.write {
            let expected = rows.get(&r.slot).map_or(0, |old| old.version);
            if &r.device_id != id || r.version != expected + 1 {
                return Err(format!(
                    "slot {} of {} written at version {} over version {expected} of {id}",
                    r.slot, r.device_id, r.version
                ));
            }
        }
        let rows = &mut self.machines[device].slots;
        for r in &w.remove {
            rows.remove(&r.slot);
        }
        for r in &w.write {
            rows.insert(r.slot.clone(), r.clone());
        }
        Ok(())
    }

    /// Decides `cmd` the way the service layer will: storage lookups first, then the domain.
    pub(crate) fn decide(&self, cmd: &Command, now: Timestamp) -> Decision {
        let noop = |reply| {
            Ok(Transition {
                sessions: vec![],
                current: None,
                effects: vec![],
                reply,
                stock: vec![],
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
                    &self.shelves(*device, None),
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
                request_purchase(
                    &m.device,
                    self.current(*device),
                    &req,
                    &self.shelves(*device, Some(slot)),
                    &self.windows,
                    now,
                )
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
                    Some(s) => report_vend(s, request, *delivered, &self.session_shelves(s), now),
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
                        Some(o) if price.is_none_or(|p| p == o.price) && &o.slot == slot => {
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
                        &self.shelves(*device, Some(slot)),
                        &self.windows,
                        now,
                    ),
                }
            }
            Command::End { device, session } => end_session(
                &self.machines[*device].device,
                self.current(*device),
                session.as_ref(),
                &self.shelves(*device, None),
                now,
            ),
            Command::Deadline { session } => match self.sessions.get(session) {
                Some(s) => deadline_due(s, &self.session_shelves(s), now),
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

    /// Persists a transition the way storage will: every session write and every slot row write
    /// conditional on its version (a slot row one above the stored one: a decision never creates or
    /// removes a slot), all or nothing. Returns what it overwrote.
    pub(crate) fn apply(&mut self, cmd: &Command, t: &Transition) -> Result<Before, String> {
        for s in &t.sessions {
            let expected = self.sessions.get(&s.id).map_or(0, |old| old.version);
            if s.version != expected + 1 {
                return Err(format!(
                    "session {} written at version {} over version {expected}",
                    s.id, s.version
                ));
            }
        }
        let mut targets = Vec::new();
        for row in &t.stock {
            let Some(m) = self.machine_of(&row.device_id) else {
                return Err(format!("slot row of unknown machine {}", row.device_id));
            };
            match self.machines[m].slots.get(&row.slot) {
                Some(old) if row.version == old.version + 1 => targets.push(m),
                other => {
                    return Err(format!(
                        "slot {} of {} written at version {} over {:?}",
                        row.slot,
                        row.device_id,
                        row.version,
                        other.map(|o| o.version)
                    ))
                }
            }
        }
        let sessions = t
            .sessions
            .iter()
            .map(|s| self.sessions.insert(s.id.clone(), s.clone()))
            .collect();
        let rows = t
            .stock
            .iter()
            .zip(targets)
            .filter_map(|(row, m)| self.machines[m].slots.insert(row.slot.clone(), row.clone()))
            .collect();
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
        Ok(Before { sessions, rows })
    }
}

/// What a transition overwrote: the sessions as they were (`None`: new), in the order of
/// `Transition::sessions`, and the slot rows as they were.
pub(crate) struct Before {
    pub(crate) sessions: Vec<Option<Session>>,
    pub(crate) rows: Vec<SlotStock>,
}
