//! vendpay's embedded adapters: everything `vendpay serve` needs to run the whole system on one machine
//! with nothing else installed, and what the fast tests run on.
//!
//! - [`store`]: [`SqliteStore`], the `DeviceStore` + `SessionStore` + `InventoryStore` ports on one
//!   SQLite database (a file, or memory for tests). Its `//!` header lists the tables and every access
//!   pattern. Beneath it, private: `db` (the shared handle: connections, commit queue, clock),
//!   `group_commit` (one drainer, one transaction per group), `writes` (the SQL of a commit and of a
//!   slot-map change, migrations, pruning) and `row_codec` (rows to and from domain types), with no
//!   cycle among them (`scripts/check-layers`).
//!   The sales facts each commit writes are rows of `facts` (private `facts`), read by
//!   `vendpay report` through the `FactStore` port.
//! - [`delivery`]: [`TimerScheduler`] (a tokio timer per deadline message) and [`ChannelRefundQueue`],
//!   both feeding in-process channels, plus [`rearm`], which re-schedules every stored deadline and
//!   re-sends every pending refund after a restart.
//! - [`worker`]: [`Worker`], which drains those channels into a `vendpay_app::Ledger` (deadlines,
//!   refunds with capped exponential backoff, the periodic sweep).
//!
//! Killing the process loses nothing: every decision is in SQLite before its effect is dispatched, and
//! on start [`rearm`] rebuilds the in-memory timers and queue from the store.

mod db;
pub mod delivery;
mod facts;
mod group_commit;
mod row_codec;
pub mod store;
pub mod worker;
mod writes;

pub use db::Location;
pub use delivery::{channels, rearm, ChannelRefundQueue, RearmReport, Receivers, TimerScheduler};
pub use store::SqliteStore;
pub use worker::{Backoff, Worker};
