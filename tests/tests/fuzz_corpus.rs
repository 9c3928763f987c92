//! The fuzz targets' seed corpus, replayed on stable: every file of `tests/fuzz/corpus/<target>/` goes
//! through the same check the cargo-fuzz target runs (tests/fuzz/src/lib.rs, included here as a
//! module), so the regression seeds (a folded `notify_id`, `X-Timestamp: -9223372036854775808`, ...)
//! keep failing loudly if the bug comes back, with or without a nightly toolchain. `scripts/fuzz` runs
//! this first, then the fuzzers themselves when `cargo +nightly fuzz` is there.
//!
//! `FUZZ_REPLAY=<target>=<file or directory>` (absolute, or relative to the repository's root) replays
//! other inputs too (a crash artifact, a corpus a fuzzer grew) through that target's check.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code asserts by panicking

use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};

#[path = "../fuzz/src/lib.rs"]
mod fuzz_checks;

/// The fewest seeds a target's corpus may have.
const MIN_SEEDS: usize = 10;

fn files(path: &Path) -> Vec<PathBuf> {
    if path.is_file() {
        return vec![path.to_owned()];
    }
    let mut out: Vec<PathBuf> = match std::fs::read_dir(path) {
        Ok(dir) => dir
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.is_file())
            .collect(),
        Err(e) => panic!("cannot read {}: {e}", path.display()),
    };
    out.sort();
    out
}

fn check_fn(target: &str) -> fn(&[u8]) {
    match fuzz_checks::TARGETS
        .iter()
        .find(|(name, _)| *name == target)
    {
        Some((_, check)) => *check,
        None => panic!("no fuzz target {target:?}"),
    }
}

/// Runs every file through `target`'s check; the failures, each with its file and message.
fn replay(target: &str, inputs: &[PathBuf]) -> Vec<String> {
    let check = check_fn(target);
    let mut failures = Vec::new();
    for file in inputs {
        let data = match std::fs::read(file) {
            Ok(d) => d,
            Err(e) => panic!("cannot read {}: {e}", file.display()),
        };
        if let Err(payload) = panic::catch_unwind(AssertUnwindSafe(|| check(&data))) {
            let msg = payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_default();
            failures.push(format!("{}: {msg}", file.display()));
        }
    }
    failures
}

fn corpus(target: &str) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let inputs = files(&dir);
    assert!(
        inputs.len() >= MIN_SEEDS,
        "{} holds {} seeds; keep at least {MIN_SEEDS}",
        dir.display(),
        inputs.len()
    );
    let failures = replay(target, &inputs);
    assert!(
        failures.is_empty(),
        "{} of {} seeds of {target} fail:\n{}",
        failures.len(),
        inputs.len(),
        failures.join("\n")
    );
}

#[test]
fn notify_form_seeds() {
    corpus("notify_form");
}

#[test]
fn alipay_xml_seeds() {
    corpus("alipay_xml");
}

#[test]
fn device_body_seeds() {
    corpus("device_body");
}

#[test]
fn device_auth_seeds() {
    corpus("device_auth");
}

#[test]
fn amount_seeds() {
    corpus("amount");
}

#[test]
fn every_target_has_a_corpus_and_a_binary() {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    for (name, _) in fuzz_checks::TARGETS {
        assert!(
            fuzz.join("corpus").join(name).is_dir(),
            "no corpus for {name}"
        );
        assert!(
            fuzz.join("fuzz_targets")
                .join(format!("{name}.rs"))
                .is_file(),
            "no fuzz_targets/{name}.rs"
        );
    }
}

/// `FUZZ_REPLAY=<target>=<path>`: replays extra inputs (no-op when unset).
#[test]
fn extra_inputs_from_the_environment() {
    let Ok(spec) = std::env::var("FUZZ_REPLAY") else {
        return;
    };
    let Some((target, path)) = spec.split_once('=') else {
        panic!("FUZZ_REPLAY must be <target>=<file or directory>, got {spec:?}");
    };
    // Tests run in tests/; a relative path is read from the repository's root.
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path);
    let inputs = files(&path);
    let failures = replay(target, &inputs);
    assert!(
        failures.is_empty(),
        "{} of {} inputs fail:\n{}",
        failures.len(),
        inputs.len(),
        failures.join("\n")
    );
}
