//! The simulation's side of the ledger's ports: a clock it moves by hand, a deadline scheduler and a
//! refund queue that only collect messages (the machine's event loop delivers them when their time
//! comes), a store wrapper that audits every commit, and the refund gateway over the Alipay sandbox's
//! books, in process.
//!
//! The audit is how the run checks itself without reading 2 million sessions back: every commit that
//! lands is seen once, in order, per machine — the facts it wrote (counted and digested), each session
//! it wrote (the money invariant; Σ sale facts = `spent` and Σ issued refund facts = Σ refunds, as
//! `docs/sales.md` promises), and which sessions and refunds are still not final.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use async_trait::async_trait;
use vendpay_alipay::{AlipayError, ErrorCode};
use vendpay_alipay_sandbox::books::{Books, QrInput};
use vendpay_app::{
    Commit, DeadlineMessage, DeadlineScheduler, DispatchError, Machine, RefundGateway,
    RefundMessage, RefundOrder, RefundQueue, RefundRecord, RefundVerdict, RequestRecord,
    SessionStore, StoreError,
};
use vendpay_domain::facts::{Fact, FactKind};
use vendpay_domain::{
    BuyerId, Currency, DeviceId, Money, PaymentOutcome, Phase, Product, RefundId, RefundStatus,
    RequestId, Session, SessionId, Sku, Slot, SlotStock, Timestamp, TradeNo,
};
use vendpay_store_sqlite::SqliteStore;

use super::rng::{hash_str, Rng};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A clock moved by the simulation (one per machine, and one for the store).
#[derive(Default)]
pub(crate) struct SimClock(AtomicI64);

impl SimClock {
    pub(crate) fn set(&self, t: Timestamp) {
        self.0.store(t.millis(), Ordering::Relaxed);
    }
}

impl vendpay_domain::Clock for SimClock {
    fn now(&self) -> Timestamp {
        Timestamp::from_millis(self.0.load(Ordering::Relaxed))
    }
}

/// The messages a ledger dispatched since the machine last looked.
#[derive(Default)]
pub(crate) struct Outbox {
    deadlines: Mutex<Vec<DeadlineMessage>>,
    refunds: Mutex<Vec<RefundMessage>>,
}

impl Outbox {
    pub(crate) fn take(&self) -> (Vec<DeadlineMessage>, Vec<RefundMessage>) {
        (
            std::mem::take(&mut *lock(&self.deadlines)),
            std::mem::take(&mut *lock(&self.refunds)),
        )
    }
}

#[async_trait]
impl DeadlineScheduler for Outbox {
    async fn schedule(&self, message: &DeadlineMessage) -> Result<(), DispatchError> {
        lock(&self.deadlines).push(message.clone());
        Ok(())
    }
}

#[async_trait]
impl RefundQueue for Outbox {
    async fn enqueue(&self, message: &RefundMessage) -> Result<(), DispatchError> {
        lock(&self.refunds).push(message.clone());
        Ok(())
    }
}

/// What the commits of one machine added up to.
#[derive(Clone, Debug, Default)]
pub(crate) struct Audit {
    pub facts: BTreeMap<&'static str, u64>,
    /// Order-independent digest of every fact written: wrapping sums of two 64-bit hashes of each
    /// fact's JSON, plus the count.
    pub digest: (u64, u64),
    pub sessions: u64,
    pub orders: u64,
    pub refused_sessions: u64,
    pub revenue: u64,
    pub refunded: u64,
    pub issued_refunds: u64,
    pub anomalies: BTreeMap<String, u64>,
    pub refused: BTreeMap<String, u64>,
    pub refunds_failed: u64,
    /// Σ sale facts and Σ issued refund facts of each session not closed yet.
    pub open: HashMap<SessionId, (u64, u64)>,
    pub pending_refunds: BTreeSet<RefundId>,
    pub problems: Vec<String>,
}

pub(crate) const MAX_PROBLEMS: usize = 20;

impl Audit {
    pub(crate) fn problem(&mut self, p: String) {
        if self.problems.len() < MAX_PROBLEMS {
            self.problems.push(p);
        }
    }

    fn record(&mut self, c: &Commit) {
        for f in &c.facts {
            self.fact(f);
        }
        for s in &c.sessions {
            if s.version == 1 {
                match s.kind {
                    vendpay_domain::SessionKind::PayFirst => self.sessions += 1,
                    vendpay_domain::SessionKind::Order(_) => self.orders += 1,
                    vendpay_domain::SessionKind::Refused { .. } => self.refused_sessions += 1,
                }
            }
            let (sales, refunds) = self.open.get(&s.id).copied().unwrap_or((0, 0));
            let refunded: u64 = s.refunds.iter().map(|r| r.amount.minor()).sum();
            if s.spent.minor() != sales || refunded != refunds {
                self.problem(format!(
                    "session {}: spent {} and refunds {} but its facts say sales {sales} and refunds {refunds}",
                    s.id,
                    s.spent.minor(),
                    refunded
                ));
            }
            if let Err(e) = s.check_invariant() {
                self.problem(format!("session {}: {e}", s.id));
            }
            if s.phase == Phase::Closed {
                self.open.remove(&s.id);
            } else {
                self.open.insert(s.id.clone(), (sales, refunds));
            }
        }
        for r in &c.refunds {
            if r.status == RefundStatus::Pending {
                self.pending_refunds.insert(r.refund_id.clone());
            } else {
                self.pending_refunds.remove(&r.refund_id);
            }
        }
    }

    fn fact(&mut self, f: &Fact) {
        *self.facts.entry(f.kind.as_str()).or_default() += 1;
        let json = serde_json::to_string(f).unwrap_or_default();
        self.digest.0 = self.digest.0.wrapping_add(hash_str(&json));
        self.digest.1 = self
            .digest
            .1
            .wrapping_add(Rng::keyed(&[hash_str(&json), 1]).next_u64());
        let sums = self.open.entry(f.session.clone()).or_default();
        match f.kind {
            FactKind::Sale => {
                sums.0 += f.amount;
                self.revenue += f.amount;
            }
            FactKind::Refund if f.status.as_deref() == Some("issued") => {
                sums.1 += f.amount;
                self.refunded += f.amount;
                self.issued_refunds += 1;
                if let Some(why) = f.reason.as_deref().and_then(|r| r.strip_prefix("refused:")) {
                    *self.refused.entry(why.to_owned()).or_default() += 1;
                }
            }
            FactKind::Refund if f.status.as_deref() == Some("failed") => self.refunds_failed += 1,
            FactKind::Anomaly => {
                let kind = f.reason.clone().unwrap_or_default();
                *self.anomalies.entry(kind).or_default() += 1;
            }
            _ => {}
        }
    }

    /// Adds another machine's audit (the per-session books are per machine and stay apart).
    pub(crate) fn merge(&mut self, o: &Audit) {
        for (k, v) in &o.facts {
            *self.facts.entry(k).or_default() += v;
        }
        self.digest.0 = self.digest.0.wrapping_add(o.digest.0);
        self.digest.1 = self.digest.1.wrapping_add(o.digest.1);
        self.sessions += o.sessions;
        self.orders += o.orders;
        self.refused_sessions += o.refused_sessions;
        self.revenue += o.revenue;
        self.refunded += o.refunded;
        self.issued_refunds += o.issued_refunds;
        self.refunds_failed += o.refunds_failed;
        for (k, v) in &o.anomalies {
            *self.anomalies.entry(k.clone()).or_default() += v;
        }
        for (k, v) in &o.refused {
            *self.refused.entry(k.clone()).or_default() += v;
        }
        for p in &o.problems {
            self.problem(p.clone());
        }
    }
}

/// The SQLite store with every landed commit audited.
pub(crate) struct Audited {
    pub store: SqliteStore,
    pub audit: Mutex<Audit>,
}

impl Audited {
    pub(crate) fn audit(&self) -> MutexGuard<'_, Audit> {
        lock(&self.audit)
    }
}

#[async_trait]
impl SessionStore for Audited {
    async fn machine(&self, id: &DeviceId) -> Result<Option<Machine>, StoreError> {
        self.store.machine(id).await
    }
    async fn machine_selling(
        &self,
        id: &DeviceId,
        slot: &Slot,
    ) -> Result<Option<(Machine, Option<Product>)>, StoreError> {
        self.store.machine_selling(id, slot).await
    }
    async fn session(&self, id: &SessionId) -> Result<Option<Session>, StoreError> {
        self.store.session(id).await
    }
    async fn trade(&self, trade_no: &TradeNo) -> Result<Option<PaymentOutcome>, StoreError> {
        self.store.trade(trade_no).await
    }
    async fn request(
        &self,
        device: &DeviceId,
        request_id: &RequestId,
    ) -> Result<Option<RequestRecord>, StoreError> {
        self.store.request(device, request_id).await
    }
    async fn refund(&self, refund_id: &RefundId) -> Result<Option<RefundRecord>, StoreError> {
        self.store.refund(refund_id).await
    }
    async fn slots(&self, device: &DeviceId) -> Result<Vec<SlotStock>, StoreError> {
        self.store.slots(device).await
    }
    async fn product(&self, sku: &Sku) -> Result<Option<Product>, StoreError> {
        self.store.product(sku).await
    }
    async fn commit(&self, commit: &Commit) -> Result<(), StoreError> {
        self.store.commit(commit).await?;
        self.audit().record(commit);
        Ok(())
    }
    async fn due(&self, now: Timestamp, limit: usize) -> Result<Vec<SessionId>, StoreError> {
        self.store.due(now, limit).await
    }
    async fn pending_refunds(
        &self,
        due_by: Timestamp,
        limit: usize,
    ) -> Result<Vec<RefundRecord>, StoreError> {
        self.store.pending_refunds(due_by, limit).await
    }
}

/// How the simulated Alipay answers refunds it would otherwise simply pay (per refund id, so a rerun
/// answers the same): a few are refused for good (`REFUND_AMT_RESTRICTION`: the merchant's balance could
/// not cover it), a few are paid but their answer is lost (`UNKNOW`), so the executor retries and the
/// sandbox answers the repeat with the first result.
const REFUSED_SHARE: f64 = 0.004;
const LOST_ANSWER_SHARE: f64 = 0.015;

/// The sandbox's books of one machine. A new book is opened every simulated day (numbering on), and
/// the two before it are kept for the refunds of trades still settling, so memory stays flat over a
/// year of trades.
pub(crate) struct Sandbox {
    books: VecDeque<Books>,
    qrcode: String,
    store_id: String,
    /// The last trade or QR number handed out.
    last: u64,
    seed: u64,
}

impl Sandbox {
    pub(crate) fn new(seed: u64, store_id: &str, first: u64) -> Sandbox {
        let mut s = Sandbox {
            books: VecDeque::new(),
            qrcode: String::new(),
            store_id: store_id.to_owned(),
            last: first,
            seed,
        };
        s.next_book();
        s
    }

    pub(crate) fn qrcode(&self) -> &str {
        &self.qrcode
    }

    /// Opens the next book (a day's trades), keeping the two before it.
    pub(crate) fn next_book(&mut self) {
        let mut books = Books::numbered_from(self.last);
        let qr = books.create_qr(
            QrInput {
                store_id: self.store_id.clone(),
                store_name: self.store_id.clone(),
                notify_url: format!("http://127.0.0.1/alipay/notify/{}", self.store_id),
                trans_currency: Currency::Cny,
                currency: Currency::Cny,
                passback: None,
                biz_key: self.store_id.clone(),
            },
            "http://127.0.0.1",
        );
        self.last = self.last.saturating_add(1);
        self.qrcode = qr.qrcode;
        self.books.push_front(books);
        self.books.truncate(3);
    }

    /// A buyer pays the machine's code: the trade as Alipay records it.
    pub(crate) fn pay(
        &mut self,
        amount: Money,
        buyer: &BuyerId,
        now: Timestamp,
    ) -> Result<vendpay_alipay_sandbox::books::Trade, &'static str> {
        let books = self.books.front_mut().ok_or("NO_BOOKS")?;
        let trade = books.pay(&self.qrcode, amount, Some(buyer.to_string()), now)?;
        self.last = self.last.saturating_add(1);
        Ok(trade)
    }

    fn refund(&mut self, order: &RefundOrder) -> RefundVerdict {
        let mut rng = Rng::keyed(&[
            self.seed,
            super::model::TAG_REFUND,
            hash_str(order.refund_id.as_str()),
        ]);
        let x = rng.unit();
        let Some(books) = self
            .books
            .iter_mut()
            .find(|b| b.trade(order.trade_no.as_str()).is_some())
        else {
            return classify(Err("PURCHASE_TRADE_NOT_EXIST"));
        };
        let already = books
            .trade(order.trade_no.as_str())
            .is_some_and(|t| !t.refunded.is_zero());
        if x < REFUSED_SHARE && !already {
            return classify(Err("REFUND_AMT_RESTRICTION"));
        }
        let result = books.refund(
            order.merchant_trade_no.as_str(),
            Some(order.trade_no.as_str()),
            order.refund_id.as_str(),
            order.amount,
        );
        match result {
            Ok(vendpay_alipay_sandbox::books::RefundResult::Done(_))
                if x < REFUSED_SHARE + LOST_ANSWER_SHARE =>
            {
                RefundVerdict::Retry("Alipay answered UNKNOW".into())
            }
            Ok(_) => RefundVerdict::Succeeded,
            Err((code, _)) => classify(Err(code)),
        }
    }
}

/// Alipay's answer as the real adapter classifies it (`vendpay_api::alipay::refund_verdict`).
fn classify(result: Result<(), &str>) -> RefundVerdict {
    vendpay_api::alipay::refund_verdict(
        result.map_err(|code| AlipayError::Failed(ErrorCode::parse(code))),
    )
}

/// The refund executor's gateway: `spot.refund` answered by the machine's sandbox books.
pub(crate) struct SandboxGateway(pub Arc<Mutex<Sandbox>>);

#[async_trait]
impl RefundGateway for SandboxGateway {
    async fn refund(&self, order: &RefundOrder) -> RefundVerdict {
        lock(&self.0).refund(order)
    }
}
