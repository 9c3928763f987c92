//! Intentionally empty. This crate exists for its `Cargo.toml`: it turns on, for every binary of the
//! workspace, the dependency features the test build turns on, so all of them reuse one compilation of
//! the AWS SDK and tokio instead of one each. See `scripts/check-features`.
