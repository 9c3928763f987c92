//! `vendpay`: the whole system on one machine (see `docs/architecture.md`, “Running locally”).
//!
//! - [`config`]: the settings (see `docs/contract.md`, “Configuration”), read once, each error
//!   naming its setting.
//! - [`keyfile`]: the device key kept beside the database when `DEVICE_KEY` is not set.
//! - [`server`]: `vendpay serve` — SQLite store, tokio timers, the refund worker, the HTTP listener in
//!   front of `vendpay_api::Api`, and the in-process Alipay sandbox when no gateway is configured.
//! - [`aws`]: `vendpay serve --store aws` — DynamoDB + SQS through the Lambda functions' wiring, the
//!   deadline and refund queues long-polled into the functions' own consumers, the once-a-minute sweep.
//! - [`sandbox`]: the sandbox's customer routes on the server's own listener.
//! - [`error`]: why the server did not start; [`respond`]: the HTTP helpers of the server's own routes.
//! - [`demo`]: `vendpay demo` — both flows and the catalogue and inventory scene end to end over HTTP,
//!   printed as a timeline and checked.
//! - [`local`]: the throwaway server (temporary SQLite, in-process sandbox) and client that `demo` and
//!   `load` run against.
//! - [`load`]: `vendpay load` — many machines in pay-first sessions over HTTP at once: events/s,
//!   latency, CPU per event and per purchase, and the money invariant of every session; with
//!   `--planogram` the purchases come from slot maps at the server's price (stock checked too).
//!
//! - [`report`]: `vendpay report` — the sales report (`docs/sales.md`) over a store's facts, as text,
//!   JSON or HTML, and the campaign CSV.
//! - [`simulate`]: `vendpay simulate` — a fleet's realistic traffic through the real ledger on a
//!   simulated clock into a SQLite store (the data `vendpay report` is timed on), reproducible per seed.
//!
//! The binary (`src/main.rs`) only parses the command line, sets up logging and calls these.

pub mod aws;
pub mod config;
pub mod demo;
pub mod error;
pub mod keyfile;
pub mod load;
pub mod local;
pub mod report;
pub mod respond;
pub mod sandbox;
pub mod server;
pub mod simulate;

pub use config::{Config, ConfigError};
pub use error::ServeError;
pub use server::Server;
