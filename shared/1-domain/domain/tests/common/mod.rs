//! Builders shared by the domain's example and property tests.
#![allow(dead_code)]

use vendpay_domain::*;

pub use vendpay_test_kit::fixtures::{at, cny};

pub fn device(mode: Mode) -> Device {
    Device {
        id: DeviceId::parse("vm-1").expect("id"),
        mode,
        currency: Currency::Cny,
    }
}

pub fn payment(trade: &str, amount: Money, buyer: Option<&str>, secs: i64) -> IncomingPayment {
    vendpay_test_kit::fixtures::payment_of(trade, amount, buyer, at(secs))
}

pub fn req(id: &str) -> RequestId {
    RequestId::parse(id).expect("request id")
}

pub fn slot(s: &str) -> Slot {
    Slot::parse(s).expect("slot")
}

pub fn buy_req(
    id: &str,
    slot_name: &str,
    price: Money,
    session: Option<&SessionId>,
) -> PurchaseRequest {
    PurchaseRequest {
        request_id: req(id),
        slot: slot(slot_name),
        price: Some(price),
        session: session.cloned(),
    }
}

pub fn order(id: &str) -> OrderId {
    OrderId::parse(id).expect("order id")
}

/// One machine and its sessions, applying transitions the way storage does.
pub struct TestMachine {
    pub device: Device,
    pub current: Option<SessionId>,
    pub sessions: Vec<Session>,
    pub windows: Windows,
    /// The planogram rows, as storage would hold them (empty: no planogram).
    pub slots: Vec<SlotStock>,
    pub catalogue: std::collections::BTreeMap<Sku, Product>,
}

impl TestMachine {
    pub fn new(mode: Mode) -> TestMachine {
        TestMachine {
            device: device(mode),
            current: None,
            sessions: Vec::new(),
            windows: Windows::default(),
            slots: Vec::new(),
            catalogue: Default::default(),
        }
    }

    /// What a command reads of the machine's slots, with every catalogue price.
    pub fn shelves(&self) -> Shelves {
        self.catalogue
            .values()
            .fold(Shelves::new(self.slots.iter().cloned()), |shelves, p| {
                shelves.with_price(p.sku.clone(), p.price)
            })
    }

    pub fn slot_row(&self, name: &str) -> &SlotStock {
        self.slots
            .iter()
            .find(|r| r.slot == slot(name))
            .expect("slot in the planogram")
    }

    /// Puts products in the catalogue: (sku, price).
    pub fn products(&mut self, items: &[(&str, u64)]) {
        for (sku, price) in items {
            let sku = Sku::parse(*sku).expect("sku");
            let p =
                vendpay_domain::inventory::product(sku.clone(), sku.as_str(), cny(*price), None)
                    .expect("product");
            self.catalogue.insert(sku, p);
        }
    }

    /// Replaces the planogram: (slot, sku, capacity).
    pub fn planogram(&mut self, slots: &[(&str, &str, u32)]) {
        let spec: Vec<SlotSpec> = slots
            .iter()
            .map(|(s, k, c)| SlotSpec {
                slot: slot(s),
                sku: Sku::parse(*k).expect("sku"),
                capacity: *c,
                price: None,
            })
            .collect();
        let w = vendpay_domain::inventory::replace_planogram(
            &self.device,
            &self.slots,
            &spec,
            &self.catalogue,
        )
        .expect("planogram accepted");
        self.write_slots(w);
    }

    /// Sets the stock of slots: (slot, count).
    pub fn restock(&mut self, counts: &[(&str, u32)]) {
        let counts: Vec<StockCount> = counts
            .iter()
            .map(|(s, n)| StockCount {
                slot: slot(s),
                stock: *n,
            })
            .collect();
        let w = vendpay_domain::inventory::restock(&self.device.id, &self.slots, &counts)
            .expect("restock accepted");
        self.write_slots(w);
    }

    fn write_slots(&mut self, w: SlotWrites) {
        self.slots
            .retain(|r| !w.remove.iter().any(|x| x.slot == r.slot));
        for row in w.write {
            self.put_row(row);
        }
    }

    fn put_row(&mut self, row: SlotStock) {
        match self.slots.iter_mut().find(|r| r.slot == row.slot) {
            Some(old) => {
                assert_eq!(row.version, old.version + 1, "conditional slot write");
                *old = row;
            }
            None => {
                assert_eq!(row.version, 1, "new slot");
                self.slots.push(row);
            }
        }
    }

    pub fn session(&self, id: &SessionId) -> &Session {
        self.sessions
            .iter()
            .find(|s| &s.id == id)
            .expect("session exists")
    }

    pub fn current(&self) -> Option<&Session> {
        self.current.as_ref().map(|id| self.session(id))
    }

    pub fn apply(&mut self, d: Decision) -> Transition {
        let t = d.expect("command accepted");
        for s in &t.sessions {
            s.check_invariant().expect("invariant");
            match self.sessions.iter_mut().find(|old| old.id == s.id) {
                Some(old) => {
                    assert_eq!(s.version, old.version + 1, "conditional write");
                    *old = s.clone();
                }
                None => {
                    assert_eq!(s.version, 1, "new session");
                    self.sessions.push(s.clone());
                }
            }
        }
        if let Some(id) = &t.current {
            self.current = Some(id.clone());
        }
        for row in &t.stock {
            self.put_row(row.clone());
        }
        t
    }

    pub fn pay(&mut self, p: &IncomingPayment, secs: i64) -> Transition {
        let d = receive_payment(
            &self.device,
            self.current(),
            p,
            &self.shelves(),
            &self.windows,
            at(secs),
        );
        self.apply(d)
    }

    pub fn buy(&mut self, id: &str, price: u64, secs: i64) -> Transition {
        let d = request_purchase(
            &self.device,
            self.current(),
            &buy_req(id, "A1", cny(price), None),
            &self.shelves(),
            &self.windows,
            at(secs),
        );
        self.apply(d)
    }

    /// A purchase that names the session it is meant for.
    pub fn buy_in(&mut self, session: &SessionId, id: &str, price: u64, secs: i64) -> Transition {
        let d = request_purchase(
            &self.device,
            self.current(),
            &buy_req(id, "A1", cny(price), Some(session)),
            &self.shelves(),
            &self.windows,
            at(secs),
        );
        self.apply(d)
    }

    /// Ends the named session only.
    pub fn end_of(&mut self, session: &SessionId, secs: i64) -> Transition {
        let d = end_session(
            &self.device,
            self.current(),
            Some(session),
            &self.shelves(),
            at(secs),
        );
        self.apply(d)
    }

    pub fn vend(
        &mut self,
        session: &SessionId,
        id: &str,
        delivered: bool,
        secs: i64,
    ) -> Transition {
        let d = report_vend(
            self.session(session),
            &req(id),
            delivered,
            &self.shelves(),
            at(secs),
        );
        self.apply(d)
    }

    pub fn end(&mut self, secs: i64) -> Transition {
        let d = end_session(
            &self.device,
            self.current(),
            None,
            &self.shelves(),
            at(secs),
        );
        self.apply(d)
    }

    pub fn deadline(&mut self, session: &SessionId, secs: i64) -> Transition {
        let d = deadline_due(self.session(session), &self.shelves(), at(secs));
        self.apply(d)
    }

    pub fn order(&mut self, id: &str, price: u64, secs: i64) -> Transition {
        let d = place_order(
            &self.device,
            self.current(),
            &order(id),
            &slot("B2"),
            Some(cny(price)),
            &self.shelves(),
            &self.windows,
            at(secs),
        );
        self.apply(d)
    }

    pub fn settle(
        &mut self,
        session: &SessionId,
        refund: &RefundId,
        outcome: RefundOutcome,
        secs: i64,
    ) -> Transition {
        let d = settle_refund(self.session(session), refund, outcome, at(secs));
        self.apply(d)
    }
}

/// The refunds a transition issued: (trade, amount in minor units).
pub fn refunds(t: &Transition) -> Vec<(String, u64)> {
    t.effects
        .iter()
        .filter_map(|e| match e {
            Effect::IssueRefund {
                trade_no, amount, ..
            } => Some((trade_no.to_string(), amount.minor())),
            _ => None,
        })
        .collect()
}

pub fn outcome(t: &Transition) -> PaymentOutcome {
    match &t.reply {
        Reply::Payment(o) => o.clone(),
        other => panic!("not a payment reply: {other:?}"),
    }
}

pub fn purchase(t: &Transition) -> PurchaseAnswer {
    match &t.reply {
        Reply::Purchase(a) => a.clone(),
        other => panic!("not a purchase reply: {other:?}"),
    }
}
