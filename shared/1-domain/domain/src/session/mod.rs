//! The session (pay first) and order (purchase first) state machine (see `docs/contract.md`,
//! “Money rules”).
//!
//! Both flows share one aggregate, [`Session`]: an order is a session of kind [`SessionKind::Order`]
//! whose single purchase is the order itself, and a payment that is refused (machine busy, wrong
//! currency, no order, under-paid) is kept in a session of its own, [`SessionKind::Refused`], that
//! refunds it in full. Every payment therefore belongs to exactly one session and every refund names one
//! of that session's trades, so the invariant
//! `Σ payments = spent + held + balance + Σ refunds` holds per session.
//!
//! Each operation is a function from (state, command, now) to a [`Transition`]: the sessions to write
//! (each with its version bumped, so storage can make the write conditional on the version it read), the
//! device's new current session if it changes, the effects to carry out and the reply. A command that
//! changes nothing yields no sessions to write, so applying a command twice changes nothing the second
//! time. Lookups that span sessions (has this trade been seen, which session holds this request or
//! refund) are the caller's, through storage; the functions here only decide.
//!
//! The module is in four parts: [`types`] (the records, effects, replies and limits), `aggregate`
//! (the session's own rules, shared by every command), [`commands`] (the device-level commands) and
//! [`session_commands`] (those addressed to one session: vend results, deadlines, refund verdicts).

mod aggregate;
pub mod commands;
pub mod session_commands;
mod shelves;
pub mod types;

pub use commands::*;
pub use session_commands::*;
pub use shelves::Shelves;
pub use types::*;
