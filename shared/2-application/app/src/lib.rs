//! vendpay's application layer: the ports and the service that drives the domain through them.
//!
//! - [`ports`]: small traits named for what they do — `DeviceStore`, `SessionStore` (sessions with
//!   their ledgers, trade dedupe, request idempotency, refunds, the deadline index, slot rows),
//!   `InventoryStore` (catalogue and planograms),
//!   `DeadlineScheduler`, `RefundQueue` — and the atomic [`ports::Commit`] every decision is written as.
//! - [`ledger`]: [`Ledger`], the one service the Lambda handlers, the local server and the demo call.
//!   It reads, lets `vendpay-domain` decide, commits conditionally (re-deciding after a lost race) and
//!   dispatches the effects. It knows nothing of AWS, SQLite or HTTP.
//! - [`inventory`]: [`inventory::Inventory`], the operators' side of catalogue and inventory (products,
//!   slot maps, restocks, the restocking round); stock changes of sales ride in the ledger's commits.
//! - `contract` (feature `contract`): the storage contract suite both adapters pass.

pub mod inventory;
pub mod ledger;
pub mod ports;

#[cfg(feature = "contract")]
pub mod contract;

pub use ledger::{
    AppError, Ledger, RefundAttempt, RefundGateway, RefundOrder, RefundVerdict, SweepReport,
    REFUND_SEND_LEASE, SWEEP_DEADLINE_BUDGET,
};
pub use ports::*;
