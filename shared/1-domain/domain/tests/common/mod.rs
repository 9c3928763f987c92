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
        price,
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
}

impl TestMachine {
    pub fn new(mode: Mode) -> TestMachine {
        TestMachine {
            device: device(mode),
            current: None,
            sessions: Vec::new(),
            windows: Windows::default(),
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
        t
    }

    pub fn pay(&mut self, p: &IncomingPayment, secs: i64) -> Transition {
        let d = receive_payment(&self.device, self.current(), p, &self.windows, at(secs));
        self.apply(d)
    }

    pub fn buy(&mut self, id: &str, price: u64, secs: i64) -> Transition {
        let d = request_purchase(
            &self.device,
            self.current(),
            &buy_req(id, "A1", cny(price), None),
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
            &self.windows,
            at(secs),
        );
        self.apply(d)
    }

    /// Ends the named session only.
    pub fn end_of(&mut self, session: &SessionId, secs: i64) -> Transition {
        let d = end_session(&self.device, self.current(), Some(session), at(secs));
        self.apply(d)
    }

    pub fn vend(
        &mut self,
        session: &SessionId,
        id: &str,
        delivered: bool,
        secs: i64,
    ) -> Transition {
        let d = report_vend(self.session(session), &req(id), delivered, at(secs));
        self.apply(d)
    }

    pub fn end(&mut self, secs: i64) -> Transition {
        let d = end_session(&self.device, self.current(), None, at(secs));
        self.apply(d)
    }

    pub fn deadline(&mut self, session: &SessionId, secs: i64) -> Transition {
        let d = deadline_due(self.session(session), at(secs));
        self.apply(d)
    }

    pub fn order(&mut self, id: &str, price: u64, secs: i64) -> Transition {
        let d = place_order(
            &self.device,
            self.current(),
            &order(id),
            &slot("B2"),
            cny(price),
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
