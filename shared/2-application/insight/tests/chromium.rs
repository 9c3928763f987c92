//! The HTML report in a real browser: a synthetic month rendered to a file, then `scripts/check-html`
//! checks in headless Chromium that each of the five charts drew, and takes a screenshot (left in the
//! target directory for a look). Skipped with `VENDPAY_SKIP_CHROMIUM=1`; otherwise a missing Chromium
//! that cannot be installed fails the test (CI installs it).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests state expectations so

use std::path::PathBuf;
use std::process::Command;

use vendpay_insight::synthetic::{generate, Shape};
use vendpay_insight::{build, Period};

#[test]
fn every_chart_draws_in_chromium() {
    if std::env::var("VENDPAY_SKIP_CHROMIUM").as_deref() == Ok("1") {
        println!("SKIPPED: VENDPAY_SKIP_CHROMIUM=1, the HTML report was not checked in Chromium");
        return;
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../..");
    let script = root.join("scripts/check-html");
    let month = Period::parse("2026-11-01", "2026-11-30", "+08:00").unwrap();
    let (facts, history) = generate(&month, Shape::SMALL).unwrap();
    let report = build(&month, &facts, &history);
    assert!(report.items.len() > 5 && report.districts.len() > 5);

    let out = option_env!("CARGO_TARGET_TMPDIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let html = out.join("sales-report.html");
    let png = out.join("sales-report.png");
    std::fs::write(&html, report.to_html()).unwrap();
    let _ = std::fs::remove_file(&png);

    let run = Command::new("bash")
        .arg(&script)
        .arg(&html)
        .arg(&png)
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", script.display()));
    let stdout = String::from_utf8_lossy(&run.stdout);
    let stderr = String::from_utf8_lossy(&run.stderr);
    println!("{stdout}\nscreenshot: {}", png.display());
    assert!(
        run.status.success(),
        "scripts/check-html failed ({}):\n{stdout}\n{stderr}",
        run.status
    );
    for chart in ["daily", "districts", "heatmap", "items", "tags"] {
        assert!(stdout.contains(&format!("{chart} ok")), "{chart}: {stdout}");
    }
    assert!(std::fs::metadata(&png).unwrap().len() > 10_000);
}
