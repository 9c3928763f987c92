//! What vendpay's tests share, so each fixture and each emulator helper is written once:
//!
//! - [`fixtures`]: a fixed clock origin ([`fixtures::T0`]), money in CNY, ids parsed from literals, a
//!   payment notification as the domain receives it.
//! - [`moto`]: the endpoint of the moto emulator that `scripts/with-moto` starts (a missing one fails
//!   the test loudly, saying how to run it — never a silent pass), one SDK configuration pointing at
//!   it with dummy credentials, and names unique across tests, binaries and runs.
//!
//! A dev-dependency only (it sits outside the layers; `scripts/check-layers` allows exactly that).

// A test kit: a fixture that cannot be built is a broken test, and failing loudly is the point.
#![allow(clippy::panic, clippy::expect_used, clippy::unwrap_used)]

pub mod fixtures;
pub mod moto;
