//! One simulated machine: its own ledger on its own clock over the shared store, and an event queue
//! (customer steps, deadlines, refund sends, restocks) it works through in time order.
//!
//! Machines share nothing but the store's file and never touch each other's rows, so each runs as
//! its own task and the outcome does not depend on how the tasks interleave: that is what makes a seed
//! reproducible although the group commit batches whatever the machines send at once.
//!
//! A customer is a small state machine ([`Visit`]) whose every step is one ledger call a real machine
//! or Alipay would make: the payment notification, a purchase request, the vend result, the end button,
//! a purchase-first order. Deadlines and refunds are the messages the ledger itself dispatched, run when
//! they fall due; a refund Alipay did not answer is retried with the local worker's backoff. One file:
//! the event loop and the customer's steps are one state machine, each step scheduling the next.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use vendpay_app::inventory::Inventory;
use vendpay_app::{AppError, Ledger, RefundAttempt, RefundMessage};
use vendpay_domain::{
    BuyerId, Currency, DeclineReason, DeviceId, Disposition, IncomingPayment, MerchantTradeNo,
    Money, OrderId, PurchaseRequest, RefusalReason, Rejection, RequestId, SessionId, Slot,
    StockCount, Timestamp, TradeNo,
};
use vendpay_store_sqlite::Backoff;

use super::model::{
    appeal, MachineSpec, PlannedVisit, World, DAY_MS, DISTRICTS, LOCAL_OFFSET_SECS, TAG_RESTOCK,
};
use super::ports::{Audited, Outbox, SandboxGateway, SimClock};
use super::rng::Rng;

/// Vend results: failed, and never reported (the machine lost power, the report was lost).
const VEND_FAILED: f64 = 0.013;
const VEND_UNREPORTED: f64 = 0.0015;
/// A refund still unanswered after this many sends is a problem of the run.
const MAX_REFUND_SENDS: u32 = 40;

/// What happened that the facts do not say, per machine.
#[derive(Clone, Debug, Default)]
pub(crate) struct Stats {
    pub visits: u64,
    pub declined: BTreeMap<&'static str, u64>,
    pub orders_refused: u64,
    pub orders_abandoned: u64,
    pub walked_away: u64,
    pub restocks: u64,
    pub refund_sends: u64,
    pub deadlines: u64,
}

impl Stats {
    pub(crate) fn merge(&mut self, o: &Stats) {
        self.visits += o.visits;
        for (k, v) in &o.declined {
            *self.declined.entry(k).or_default() += v;
        }
        self.orders_refused += o.orders_refused;
        self.orders_abandoned += o.orders_abandoned;
        self.walked_away += o.walked_away;
        self.restocks += o.restocks;
        self.refund_sends += o.refund_sends;
        self.deadlines += o.deadlines;
    }
}

#[derive(Clone, Copy, Debug)]
enum Step {
    Pay,
    Choose,
    TopUp,
    Vend,
    End,
    Order,
    PayOrder,
    VendOrder,
}

/// One customer at the machine.
struct Visit {
    buyer: BuyerId,
    rng: Rng,
    /// `YYYYMMDD-nnnnn`: the day and the visit, the stem of its request and order ids.
    tag: String,
    step: Step,
    session: Option<SessionId>,
    /// Items the customer came for, and bought so far.
    wants: u8,
    bought: u8,
    /// Purchase requests or orders made (numbering their ids), payments made, second tries used.
    asks: u8,
    payments: u8,
    retries: u8,
    slot: usize,
    balance: u64,
    request: Option<RequestId>,
    order: Option<OrderId>,
}

enum Event {
    Visit(Box<Visit>),
    Deadline(SessionId),
    Refund {
        message: RefundMessage,
        attempt: u32,
    },
    Restock,
}

pub(crate) struct MachineSim {
    pub spec: Arc<MachineSpec>,
    world: Arc<World>,
    pub device: DeviceId,
    slots: Vec<Slot>,
    ledger: Ledger,
    inventory: Inventory,
    clock: Arc<SimClock>,
    outbox: Arc<Outbox>,
    pub audited: Arc<Audited>,
    sandbox: Arc<Mutex<super::ports::Sandbox>>,
    gateway: SandboxGateway,
    queue: BTreeMap<(i64, u64), Event>,
    seq: u64,
    /// What the machine's display greys out: slots that declined `sold_out` since the last restock.
    sold_out: Vec<bool>,
    pub stats: Stats,
}

/// The parts a machine is built from (see `simulate::setup`).
pub(crate) struct Parts {
    pub spec: Arc<MachineSpec>,
    pub world: Arc<World>,
    pub device: DeviceId,
    pub slots: Vec<Slot>,
    pub ledger: Ledger,
    pub inventory: Inventory,
    pub clock: Arc<SimClock>,
    pub outbox: Arc<Outbox>,
    pub audited: Arc<Audited>,
    pub sandbox: Arc<Mutex<super::ports::Sandbox>>,
}

fn ceil_to(x: u64, step: u64) -> u64 {
    x.div_ceil(step).saturating_mul(step)
}

fn cny(minor: u64) -> Money {
    Money::new(minor, Currency::Cny).unwrap_or_else(|| Money::zero(Currency::Cny))
}

impl MachineSim {
    pub(crate) fn new(p: Parts) -> MachineSim {
        let n = p.slots.len();
        MachineSim {
            gateway: SandboxGateway(p.sandbox.clone()),
            spec: p.spec,
            world: p.world,
            device: p.device,
            slots: p.slots,
            ledger: p.ledger,
            inventory: p.inventory,
            clock: p.clock,
            outbox: p.outbox,
            audited: p.audited,
            sandbox: p.sandbox,
            queue: BTreeMap::new(),
            seq: 0,
            sold_out: vec![false; n],
            stats: Stats::default(),
        }
    }

    fn now(&self) -> Timestamp {
        vendpay_domain::Clock::now(&*self.clock)
    }

    fn push(&mut self, at: Timestamp, e: Event) {
        self.seq += 1;
        self.queue.insert((at.millis(), self.seq), e);
    }

    fn problem(&self, what: String) {
        self.audited
            .audit()
            .problem(format!("{}: {what}", self.device));
    }

    /// Queues day `day`'s customers and, on restock nights, the refill.
    pub(crate) async fn run_day(&mut self, day: u32) {
        if day > 0 {
            super::lock(&self.sandbox).next_book();
        }
        let tag = self.world.date_tag(day);
        let plan = self.world.plan(self.spec.index, day);
        for (v, p) in plan.into_iter().enumerate() {
            let PlannedVisit {
                at,
                buyer,
                order,
                rng,
            } = p;
            let visit = Visit {
                buyer,
                rng,
                tag: format!("{tag}-{v:05}"),
                step: if order { Step::Order } else { Step::Pay },
                session: None,
                wants: 1,
                bought: 0,
                asks: 0,
                payments: 0,
                retries: 0,
                slot: 0,
                balance: 0,
                request: None,
                order: None,
            };
            self.push(at, Event::Visit(Box::new(visit)));
        }
        let day_start = self.world.day_start(day);
        if day > 0 && day.is_multiple_of(self.spec.restock_every) {
            let mut rng = Rng::keyed(&[
                self.world.seed,
                TAG_RESTOCK,
                self.spec.index as u64,
                u64::from(day),
            ]);
            let at = day_start.millis() + 3 * 3_600_000 + rng.between(0, 2 * 3_600_000);
            self.push(Timestamp::from_millis(at), Event::Restock);
        }
        self.run_until(day_start.millis() + DAY_MS).await;
    }

    /// Runs every queued event before `end` (ms), in time order.
    pub(crate) async fn run_until(&mut self, end: i64) {
        while let Some(entry) = self.queue.first_entry() {
            if entry.key().0 >= end {
                break;
            }
            let ((at, _), event) = entry.remove_entry();
            self.clock.set(Timestamp::from_millis(at));
            self.handle(event).await;
            self.collect();
        }
    }

    /// Whether anything is still queued.
    pub(crate) fn idle(&self) -> bool {
        self.queue.is_empty()
    }

    /// Turns the messages the ledger dispatched into events: a deadline at its time, a refund sent a
    /// moment later (the executor's queue delay).
    fn collect(&mut self) {
        let (deadlines, refunds) = self.outbox.take();
        let now = self.now();
        for d in deadlines {
            self.push(d.at.max(now), Event::Deadline(d.session));
        }
        for message in refunds {
            self.push(
                now.plus(Duration::from_millis(1500)),
                Event::Refund {
                    message,
                    attempt: 0,
                },
            );
        }
    }

    async fn handle(&mut self, event: Event) {
        match event {
            Event::Deadline(session) => {
                // A message for a session already closed would read it and change nothing (messages
                // cannot be cancelled); the audit knows which are open, so skip the read.
                if !self.audited.audit().open.contains_key(&session) {
                    return;
                }
                self.stats.deadlines += 1;
                if let Err(e) = self.ledger.deadline(&session).await {
                    self.problem(format!("deadline of {session}: {e}"));
                }
            }
            Event::Refund { message, attempt } => {
                self.stats.refund_sends += 1;
                let retry_in = Backoff::default().delay(attempt);
                match self
                    .ledger
                    .execute_refund(&message, &self.gateway, retry_in)
                    .await
                {
                    Ok(RefundAttempt::Settled(_) | RefundAttempt::Superseded) => {}
                    Ok(RefundAttempt::InFlight) => {
                        self.problem(format!("refund {} found in flight", message.refund_id));
                    }
                    Err(e) if e.is_retryable() && attempt < MAX_REFUND_SENDS => {
                        let at = self.now().plus(retry_in);
                        self.push(
                            at,
                            Event::Refund {
                                message,
                                attempt: attempt + 1,
                            },
                        );
                    }
                    Err(e) => self.problem(format!("refund {}: {e}", message.refund_id)),
                }
            }
            Event::Restock => {
                let counts: Vec<StockCount> = self
                    .slots
                    .iter()
                    .zip(&self.spec.slots)
                    .map(|(slot, plan)| StockCount {
                        slot: slot.clone(),
                        stock: plan.capacity,
                    })
                    .collect();
                match self.inventory.restock(&self.device, &counts).await {
                    Ok(_) => {
                        self.stats.restocks += 1;
                        self.sold_out.fill(false);
                    }
                    Err(e) => self.problem(format!("restock: {e}")),
                }
            }
            Event::Visit(v) => self.visit(v).await,
        }
    }

    /// The slot a customer picks now: by the item's appeal in this district at this hour, never one the
    /// display shows sold out.
    fn pick(&self, rng: &mut Rng) -> Option<usize> {
        let (_, _, _, hour, ..) = self.now().civil_at_offset(LOCAL_OFFSET_SECS);
        let kind = DISTRICTS[self.spec.district].kind;
        let weights: Vec<f64> = self
            .spec
            .slots
            .iter()
            .enumerate()
            .map(|(i, s)| {
                if self.sold_out[i] {
                    0.0
                } else {
                    appeal(s.item, kind, hour as usize)
                }
            })
            .collect();
        weights
            .iter()
            .any(|w| *w > 0.0)
            .then(|| rng.weighted(&weights))
    }

    fn later(&mut self, mut v: Box<Visit>, step: Step, lo_ms: i64, hi_ms: i64) {
        let at = self.now().millis() + v.rng.between(lo_ms, hi_ms);
        v.step = step;
        self.push(Timestamp::from_millis(at), Event::Visit(v));
    }

    /// A buyer pays `amount` on the machine's code; Alipay's notification reaches the ledger.
    async fn pay(&mut self, v: &mut Visit, amount: u64) -> Option<Disposition> {
        v.payments += 1;
        let now = self.now();
        let trade = match super::lock(&self.sandbox).pay(cny(amount), &v.buyer, now) {
            Ok(t) => t,
            Err(code) => {
                self.problem(format!("sandbox refused a payment: {code}"));
                return None;
            }
        };
        let payment = match (
            TradeNo::parse(trade.trade_no),
            MerchantTradeNo::parse(trade.out_trade_no),
        ) {
            (Ok(trade_no), Ok(merchant_trade_no)) => IncomingPayment {
                trade_no,
                merchant_trade_no,
                amount: trade.amount,
                buyer_id: Some(v.buyer.clone()),
                paid_at: now,
            },
            _ => {
                self.problem("the sandbox made an unparsable trade number".into());
                return None;
            }
        };
        match self.ledger.payment(&self.device, &payment).await {
            Ok(outcome) => {
                if matches!(
                    outcome.disposition,
                    Disposition::Credited | Disposition::OrderPaid
                ) {
                    v.session = Some(outcome.session);
                    v.balance += amount;
                }
                Some(outcome.disposition)
            }
            Err(e) => {
                self.problem(format!("payment: {e}"));
                None
            }
        }
    }

    async fn visit(&mut self, mut v: Box<Visit>) {
        match v.step {
            Step::Pay => {
                self.stats.visits += u64::from(v.payments == 0);
                let Some(slot) = self.pick(&mut v.rng) else {
                    return;
                };
                v.slot = slot;
                v.wants = match v.rng.unit() {
                    x if x < 0.68 => 1,
                    x if x < 0.92 => 2,
                    _ => 3,
                };
                let est = self.spec.price(slot) + (u64::from(v.wants) - 1) * 600;
                let amount = match v.rng.unit() {
                    x if x < 0.35 && v.wants == 1 => est,
                    x if x < 0.6 => ceil_to(est, 500),
                    x if x < 0.9 => ceil_to(est, 1000),
                    _ => ceil_to(est, 2000),
                };
                match self.pay(&mut v, amount).await {
                    Some(Disposition::Credited) => self.later(v, Step::Choose, 8_000, 20_000),
                    Some(Disposition::Refused(RefusalReason::MachineBusy))
                        if v.payments < 2 && v.rng.chance(0.5) =>
                    {
                        // Refunded at once; they wait for the other customer and try again.
                        self.later(v, Step::Pay, 120_000, 300_000)
                    }
                    _ => {}
                }
            }
            Step::Choose => self.choose(v).await,
            Step::TopUp => {
                let short = self.spec.price(v.slot).saturating_sub(v.balance).max(1);
                let amount = ceil_to(short, 500);
                if let Some(Disposition::Credited) = self.pay(&mut v, amount).await {
                    self.later(v, Step::Choose, 5_000, 10_000);
                }
            }
            Step::Vend => self.vend(v).await,
            Step::End => {
                let Some(session) = v.session.clone() else {
                    return;
                };
                // The machine ends a session spent to zero by itself; with change left most press
                // "end", a few walk away and the deadline refunds it.
                if v.balance > 0 && v.rng.chance(0.1) {
                    self.stats.walked_away += 1;
                    return;
                }
                if let Err(e) = self.ledger.end_session(&self.device, Some(&session)).await {
                    self.problem(format!("end of {session}: {e}"));
                }
            }
            Step::Order => self.order(v).await,
            Step::PayOrder => {
                let Some(price) = v.order.as_ref().map(|_| self.spec.price(v.slot)) else {
                    return;
                };
                let amount = match v.rng.unit() {
                    _ if v.payments > 0 => price,
                    x if x < 0.03 => ceil_to(price + 1, 1000),
                    x if x < 0.04 => price.saturating_sub(100).max(100),
                    _ => price,
                };
                v.balance = 0;
                match self.pay(&mut v, amount).await {
                    Some(Disposition::OrderPaid) => self.later(v, Step::VendOrder, 4_000, 8_000),
                    Some(Disposition::Refused(RefusalReason::Underpaid)) if v.rng.chance(0.6) => {
                        self.later(v, Step::PayOrder, 15_000, 30_000)
                    }
                    // Paid after the order expired on a machine that also takes sessions: the money
                    // opened a session; the customer ends it for the refund.
                    Some(Disposition::Credited) => self.later(v, Step::End, 5_000, 15_000),
                    _ => {}
                }
            }
            Step::VendOrder => {
                let Some(order) = v.order.clone() else {
                    return;
                };
                let x = v.rng.unit();
                if x < VEND_UNREPORTED {
                    return;
                }
                let delivered = x >= VEND_UNREPORTED + VEND_FAILED;
                match self
                    .ledger
                    .vend(&self.device, &RequestId::for_order(&order), delivered)
                    .await
                {
                    Ok(_) | Err(AppError::Rejected(_)) => {}
                    Err(e) => self.problem(format!("vend of order {order}: {e}")),
                }
            }
        }
    }

    async fn choose(&mut self, mut v: Box<Visit>) {
        v.asks += 1;
        let Ok(request_id) = RequestId::parse(format!("{}-p{}", v.tag, v.asks)) else {
            return;
        };
        let req = PurchaseRequest {
            request_id: request_id.clone(),
            slot: self.slots[v.slot].clone(),
            price: None,
            session: v.session.clone(),
        };
        let answer = match self.ledger.purchase_in(&self.device, &req).await {
            Ok(a) => a,
            Err(e) => {
                self.problem(format!("purchase {request_id}: {e}"));
                return;
            }
        };
        v.balance = answer.balance.minor();
        let Some(reason) = answer.declined else {
            v.request = Some(request_id);
            self.later(v, Step::Vend, 3_000, 6_000);
            return;
        };
        *self.stats.declined.entry(reason.as_str()).or_default() += 1;
        match reason {
            DeclineReason::SoldOut => {
                self.sold_out[v.slot] = true;
                if v.retries < 2 {
                    v.retries += 1;
                    if let Some(slot) = self.pick(&mut v.rng) {
                        v.slot = slot;
                        self.later(v, Step::Choose, 4_000, 8_000);
                        return;
                    }
                }
                self.later(v, Step::End, 2_000, 6_000);
            }
            DeclineReason::InsufficientBalance if v.payments < 3 && v.rng.chance(0.5) => {
                self.later(v, Step::TopUp, 10_000, 20_000)
            }
            DeclineReason::InsufficientBalance | DeclineReason::SessionFull => {
                self.later(v, Step::End, 2_000, 6_000)
            }
            // The window ran out while they hesitated: the deadline already settled it.
            DeclineReason::NoSession | DeclineReason::SessionClosed => {}
        }
    }

    async fn vend(&mut self, mut v: Box<Visit>) {
        let Some(request_id) = v.request.take() else {
            return;
        };
        let x = v.rng.unit();
        if x < VEND_UNREPORTED {
            // No report ever comes: the deadline refunds the hold and flags it.
            return;
        }
        let delivered = x >= VEND_UNREPORTED + VEND_FAILED;
        let session = match self.ledger.vend(&self.device, &request_id, delivered).await {
            Ok(s) => s,
            Err(AppError::Rejected(_)) => return,
            Err(e) => {
                self.problem(format!("vend {request_id}: {e}"));
                return;
            }
        };
        v.balance = session.balance.minor();
        if delivered {
            v.bought += 1;
            if v.bought < v.wants && v.balance > 0 {
                if let Some(slot) = self.pick(&mut v.rng) {
                    v.slot = slot;
                    self.later(v, Step::Choose, 6_000, 15_000);
                    return;
                }
            }
        } else if v.retries < 2 && v.rng.chance(0.6) {
            v.retries += 1;
            if let Some(slot) = self.pick(&mut v.rng) {
                v.slot = slot;
                self.later(v, Step::Choose, 5_000, 10_000);
                return;
            }
        }
        self.later(v, Step::End, 2_000, 6_000);
    }

    async fn order(&mut self, mut v: Box<Visit>) {
        self.stats.visits += u64::from(v.asks == 0);
        let Some(slot) = self.pick(&mut v.rng) else {
            return;
        };
        v.slot = slot;
        v.asks += 1;
        let Ok(order_id) = OrderId::parse(format!("{}-o{}", v.tag, v.asks)) else {
            return;
        };
        match self
            .ledger
            .order(&self.device, &order_id, &self.slots[slot], None)
            .await
        {
            Ok(session) => {
                v.session = Some(session.id);
                v.order = Some(order_id);
                let window = self.ledger.windows().order_payment.as_millis() as i64;
                match v.rng.unit() {
                    x if x < 0.035 => self.stats.orders_abandoned += 1,
                    x if x < 0.04 => self.later(v, Step::PayOrder, window + 5_000, window + 60_000),
                    _ => self.later(v, Step::PayOrder, 10_000, 40_000),
                }
            }
            Err(AppError::Rejected(r)) => {
                self.stats.orders_refused += 1;
                let again = match r {
                    Rejection::SoldOut(_) => {
                        self.sold_out[slot] = true;
                        Some((4_000, 8_000))
                    }
                    Rejection::Busy(_) => Some((60_000, 180_000)),
                    _ => None,
                };
                if let Some((lo, hi)) = again.filter(|_| v.asks < 3) {
                    self.later(v, Step::Order, lo, hi);
                }
            }
            Err(e) => self.problem(format!("order {order_id}: {e}")),
        }
    }
}
