//! `vendpay load` as a subprocess, briefly: it runs green and checks what it says it checks — with
//! `--planogram` and a slot small enough to run out, the sold-out declines, the refills and each
//! machine's stock read back at the end.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code asserts by panicking

use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

fn load(args: &[&str]) -> String {
    let child = Command::new(env!("CARGO_BIN_EXE_vendpay"))
        .arg("load")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start vendpay load");
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let limit = Duration::from_secs(120);
    let out = match rx.recv_timeout(limit) {
        Ok(out) => out.expect("load output"),
        Err(_) => {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            panic!("vendpay load did not finish within {limit:?}");
        }
    };
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "load failed ({}):\n{stdout}\n--- stderr ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// The number after `label` on the line that starts with it.
fn figure(stdout: &str, label: &str) -> u64 {
    let line = stdout
        .lines()
        .find(|l| l.starts_with(label))
        .unwrap_or_else(|| panic!("no {label:?} line:\n{stdout}"));
    line[label.len()..]
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no number in {line:?}"))
}

#[test]
fn load_from_a_planogram_refills_sold_out_slots_and_accounts_for_every_item() {
    // 3 machines × ≥ 120 events ≈ 40 purchases each from a slot of 4: every machine runs out.
    let out = load(&[
        "--machines",
        "3",
        "--events",
        "360",
        "--concurrency",
        "4",
        "--planogram",
        "--capacity",
        "4",
    ]);
    assert!(out.contains("purchases name no price"), "{out}");
    assert!(
        out.contains("stock of all 3 machines = filled − delivered, none reserved"),
        "{out}"
    );
    let line = out
        .lines()
        .find(|l| l.starts_with("purchases"))
        .expect("purchases line");
    let refills: u64 = line
        .split("; ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no refill count in {line:?}"));
    assert!(refills >= 3, "every machine ran out at least once: {line}");
    assert!(figure(&out, "purchases") > 0, "{out}");
    assert!(out.contains("µs per purchase"), "{out}");
}
