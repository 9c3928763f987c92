//! The one contract every storage adapter passes (SQLite and DynamoDB alike).
//!
//! An adapter's test file calls [`run`] with a factory that gives a fresh, empty store (a new SQLite
//! database, a new DynamoDB table). Each check panics with a message naming what broke; the checks use
//! only the ports, so they say what the service relies on and nothing about how an adapter does it.
//!
//! The checks live by subject: `store` and `refunds` on the store ports, `ledger` through the
//! `Ledger` service, `inventory` on the catalogue and slot rows (through the ports and the `Ledger`);
//! `facts` (run by [`run_facts`]) on the sales facts of stores that serve reports; `fakes` and `limited` are the stand-ins they run with. This file holds [`run`] and the fixtures
//! they share.

// A test suite compiled as library code (behind the `contract` feature, which only dev-dependencies
// enable): it asserts like a test, so it may unwrap, expect and panic.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::future::Future;
use std::sync::Arc;

use vendpay_domain::*;

use crate::ports::*;

mod facts;
mod fakes;
mod inventory;
mod ledger;
mod limited;
mod refunds;
mod store;

pub use facts::run_facts;
pub use fakes::{ManualClock, Recorder};
pub use limited::{commit_actions, MAX_WRITE_ACTIONS};

use inventory::*;
use ledger::*;
use refunds::*;
use store::*;

/// A store for the suite: the three storage ports on one backend.
pub trait Store: SessionStore + DeviceStore + InventoryStore + 'static {}
impl<T: SessionStore + DeviceStore + InventoryStore + 'static> Store for T {}

/// Runs every check, each on a fresh store from `make`.
pub async fn run<S, F, Fut>(make: F)
where
    S: Store,
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<S>>,
{
    devices_register_once_and_keep_their_qrcode(make().await).await;
    a_commit_writes_every_row_and_reads_back(make().await).await;
    a_failed_condition_writes_nothing(make().await).await;
    session_versions_are_compare_and_set(make().await).await;
    the_device_guard_serialises_device_commands(make().await).await;
    the_deadline_index_finds_overdue_sessions_only(make().await).await;
    pending_refunds_are_listed_until_final(make().await).await;
    a_refund_is_sent_by_one_sender_at_a_time(make().await).await;
    racing_commits_on_one_version_let_exactly_one_win(make().await).await;
    ledger_racing_purchases_never_overspend(make().await).await;
    ledger_duplicate_notifications_credit_once(make().await).await;
    ledger_full_pay_first_flow(make().await).await;
    ledger_a_hundred_cent_top_ups_settle_in_writes_that_fit(make().await).await;
    ledger_the_sweep_goes_on_past_a_session_that_fails(make().await).await;
    ledger_order_ids_and_purchase_ids_share_one_namespace(make().await).await;
    ledger_one_send_of_a_refund_at_a_time_and_no_resend_storm(make().await).await;
    ledger_a_first_send_refused_in_a_verified_answer_fails(make().await).await;
    products_are_upserted_and_listed_by_sku(make().await).await;
    slot_maps_are_written_conditionally_and_atomically(make().await).await;
    a_full_slot_map_is_replaced_in_one_write(make().await).await;
    two_slot_maps_decided_on_one_read_cannot_both_land(make().await).await;
    a_sale_decided_on_a_stale_slot_row_writes_nothing(make().await).await;
    ledger_the_last_item_sells_then_the_slot_is_sold_out(make().await).await;
    ledger_a_failed_vend_releases_the_reservation(make().await).await;
    ledger_an_order_reserves_its_item_and_its_expiry_releases_it(make().await).await;
    ledger_a_restock_makes_a_sold_out_slot_available_again(make().await).await;
    ledger_machines_selling_the_last_item_of_one_product_are_independent(make().await).await;
    ledger_racing_purchases_for_the_last_item_let_exactly_one_win(make().await).await;
    ledger_a_vend_for_one_customer_and_a_sale_to_the_next_both_count(make().await).await;
    ledger_a_delivery_from_a_slot_counted_empty_is_flagged_and_stays_at_zero(make().await).await;
    ledger_the_biggest_decision_with_reserved_holds_fits_one_write(make().await).await;
}

pub const T0: i64 = 1_700_000_000_000;

fn id<T: std::str::FromStr>(s: &str) -> T
where
    T::Err: std::fmt::Debug,
{
    s.parse().expect("valid id in the contract suite")
}

fn cny(minor: u64) -> Money {
    Money::new(minor, Currency::Cny).expect("small amount")
}

pub fn device_record(device: &str, mode: Mode) -> DeviceRecord {
    DeviceRecord {
        device: Device {
            id: id(device),
            mode,
            currency: Currency::Cny,
        },
        name: format!("Machine {device}"),
        district: "Xuhui".into(),
        location: Some("Gate 3".into()),
        credential: "test-credential".into(),
        qrcode: None,
        created_at: Timestamp::from_millis(T0),
        current: None,
        version: 0,
    }
}

fn payment(trade: &str, minor: u64) -> IncomingPayment {
    IncomingPayment {
        trade_no: id(trade),
        merchant_trade_no: id(&format!("M{trade}")),
        amount: cny(minor),
        buyer_id: None,
        paid_at: Timestamp::from_millis(T0),
    }
}

/// Opens a session on `device` by a payment, through the domain, and commits it.
async fn open_session<S: Store>(
    store: &S,
    device: &str,
    trade: &str,
    minor: u64,
    at: i64,
) -> Session {
    let m = store
        .machine(&id(device))
        .await
        .expect("machine read")
        .expect("machine exists");
    let t = receive_payment(
        &m.record.device,
        m.current.as_ref(),
        &payment(trade, minor),
        &Shelves::new(m.slots.iter().cloned()),
        &Windows::default(),
        Timestamp::from_millis(T0 + at),
    )
    .expect("payment accepted");
    let Reply::Payment(outcome) = t.reply.clone() else {
        panic!("payment reply expected")
    };
    let commit = Commit {
        device: Some(DeviceGuard {
            device: id(device),
            expected_version: m.record.version,
            new_current: t.current.clone(),
        }),
        sessions: t.sessions.clone(),
        trade: Some((id(trade), outcome.clone())),
        request: None,
        refunds: vec![],
        send: None,
        stock: vec![],
        facts: vec![],
    };
    store.commit(&commit).await.expect("commit");
    t.session(&outcome.session).expect("written").clone()
}

/// Runs futures concurrently without an executor dependency (the suite runs on the caller's runtime).
async fn join_all<F: Future>(futures: Vec<F>) -> Vec<F::Output> {
    use std::pin::Pin;
    use std::task::{Context, Poll};
    struct JoinAll<F: Future> {
        futures: Vec<Option<Pin<Box<F>>>>,
        outputs: Vec<Option<F::Output>>,
    }
    // The futures are boxed and the outputs are never pinned, so moving JoinAll is fine.
    impl<F: Future> Unpin for JoinAll<F> {}
    impl<F: Future> Future for JoinAll<F> {
        type Output = Vec<F::Output>;
        fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
            let this = self.get_mut();
            let mut pending = false;
            for (slot, out) in this.futures.iter_mut().zip(this.outputs.iter_mut()) {
                if let Some(f) = slot {
                    match f.as_mut().poll(cx) {
                        Poll::Ready(v) => {
                            *out = Some(v);
                            *slot = None;
                        }
                        Poll::Pending => pending = true,
                    }
                }
            }
            if pending {
                Poll::Pending
            } else {
                Poll::Ready(this.outputs.iter_mut().filter_map(Option::take).collect())
            }
        }
    }
    let n = futures.len();
    JoinAll {
        futures: futures.into_iter().map(|f| Some(Box::pin(f))).collect(),
        outputs: (0..n).map(|_| None).collect(),
    }
    .await
}
