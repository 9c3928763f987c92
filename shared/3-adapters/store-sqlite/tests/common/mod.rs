//! Helpers shared by the integration tests: a clock that follows tokio's (pausable) time, a scripted
//! Alipay refund gateway, and small constructors.

#![allow(dead_code, unused_imports)]

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use vendpay_app::contract::Recorder;
use vendpay_app::{DeviceStore, Ledger, RefundGateway, RefundOrder, RefundVerdict, SessionStore};
use vendpay_domain::{Clock, IncomingPayment, Mode, Session, SystemClock, Timestamp, Windows};
use vendpay_store_sqlite::SqliteStore;

pub use vendpay_app::contract::{device_record, T0};
pub use vendpay_test_kit::fixtures::{cny, id, payment_of};

/// Wall-clock time that moves with tokio's clock, so paused-time tests move both together.
pub struct TokioClock {
    base: Timestamp,
    start: tokio::time::Instant,
}

impl TokioClock {
    pub fn at(base_ms: i64) -> Arc<TokioClock> {
        Arc::new(TokioClock {
            base: Timestamp::from_millis(base_ms),
            start: tokio::time::Instant::now(),
        })
    }
}

impl Clock for TokioClock {
    fn now(&self) -> Timestamp {
        self.base.plus(self.start.elapsed())
    }
}

/// Trade `trade` of `minor` fen, anonymous, paid at `at`.
pub fn payment(trade: &str, minor: u64, at: Timestamp) -> IncomingPayment {
    payment_of(trade, cny(minor), None, at)
}

/// Answers refunds from a script (then `Succeeded`), recording each call and when it came.
#[derive(Default)]
pub struct ScriptedGateway {
    script: Mutex<VecDeque<RefundVerdict>>,
    pub calls: Mutex<Vec<(RefundOrder, tokio::time::Instant)>>,
}

impl ScriptedGateway {
    pub fn new(script: Vec<RefundVerdict>) -> Arc<ScriptedGateway> {
        Arc::new(ScriptedGateway {
            script: Mutex::new(script.into()),
            calls: Mutex::new(Vec::new()),
        })
    }

    pub fn calls(&self) -> Vec<(RefundOrder, tokio::time::Instant)> {
        self.calls.lock().expect("calls").clone()
    }
}

#[async_trait]
impl RefundGateway for ScriptedGateway {
    async fn refund(&self, order: &RefundOrder) -> RefundVerdict {
        self.calls
            .lock()
            .expect("calls")
            .push((order.clone(), tokio::time::Instant::now()));
        self.script
            .lock()
            .expect("script")
            .pop_front()
            .unwrap_or(RefundVerdict::Succeeded)
    }
}

/// Polls `check` every 100 ms of (virtual) time until it holds or `limit_secs` pass.
pub async fn eventually<F, Fut>(limit_secs: u64, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let end = tokio::time::Instant::now() + std::time::Duration::from_secs(limit_secs);
    while tokio::time::Instant::now() < end {
        if check().await {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    check().await
}

/// A ledger on `store` with recorded (not carried out) effects, on the system clock.
pub fn ledger(store: &SqliteStore) -> Ledger {
    let rec = Arc::new(Recorder::default());
    Ledger::new(
        Arc::new(store.clone()),
        rec.clone(),
        rec,
        Arc::new(SystemClock),
        Windows::default(),
    )
}

/// Registers machine `vm-1` (pay first) on `store` and opens its session with a payment of `minor`
/// fen through the ledger; the session as stored.
pub async fn open_session_on(store: &SqliteStore, minor: u64) -> Session {
    store
        .register(&device_record("vm-1", Mode::PayFirst))
        .await
        .expect("register");
    let out = ledger(store)
        .payment(&id("vm-1"), &payment("T1", minor, SystemClock.now()))
        .await
        .expect("pay");
    store
        .session(&out.session)
        .await
        .expect("read")
        .expect("session")
}
