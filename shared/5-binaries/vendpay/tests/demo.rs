//! `vendpay demo` runs green as a subprocess, within a bounded time.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code asserts by panicking

use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

#[test]
fn the_demo_passes_every_check() {
    let child = Command::new(env!("CARGO_BIN_EXE_vendpay"))
        .arg("demo")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start vendpay demo");
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    // Short windows (3 s / 2 s / 3 s): the demo takes about ten seconds; 90 s means it is stuck.
    let limit = Duration::from_secs(90);
    let out = match rx.recv_timeout(limit) {
        Ok(out) => out.expect("demo output"),
        Err(_) => {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            panic!("vendpay demo did not finish within {limit:?}");
        }
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "demo failed ({}):\n{stdout}\n--- stderr ---\n{stderr}",
        out.status
    );
    assert!(stdout.contains("checks passed"), "{stdout}");
    assert!(
        !stdout.lines().any(|l| l.trim_start().starts_with("FAIL")),
        "{stdout}"
    );
    for scenario in [
        "== 1.", "== 2.", "== 3.", "== 4.", "== 5.", "== 6.", "== 7.",
    ] {
        assert!(stdout.contains(scenario), "{scenario} missing:\n{stdout}");
    }
    // The inventory scene sells the last item, then declines the next purchase of its slot.
    assert!(stdout.contains("declined sold_out"), "{stdout}");
}
