//! The report engine at scale: `build` over a synthetic year of 200 machines (about 2.6 M facts,
//! 1 M sales in the period), and `to_html` of a month of about 10 000 facts. Goal on the project's
//! 2-core machine: `build` of the year in 1–2 s (the whole `vendpay report` well under 10 s).

// A benchmark: a fixture that fails to generate ends it, as a test would.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use vendpay_domain::facts::FactKind;
use vendpay_insight::synthetic::{generate, Shape};
use vendpay_insight::{build, Period};

fn report(c: &mut Criterion) {
    let year = Period::parse("2026-01-01", "2026-12-31", "+08:00").unwrap();
    let (facts, history) = generate(&year, Shape::YEAR).unwrap();
    let sales = facts
        .iter()
        .filter(|f| f.kind == FactKind::Sale && f.at >= year.start())
        .count();
    eprintln!(
        "year: {} facts, {sales} sales in the period, {} buyers of history",
        facts.len(),
        history.len()
    );
    let month = Period::parse("2026-11-01", "2026-11-30", "+08:00").unwrap();
    let (small, small_history) = generate(&month, Shape::SMALL).unwrap();
    let small_report = build(&month, &small, &small_history);
    eprintln!(
        "month: {} facts, html {} bytes",
        small.len(),
        small_report.to_html().len()
    );

    let mut g = c.benchmark_group("report");
    g.sample_size(10);
    g.bench_function("build year (2.6 M facts)", |b| {
        b.iter(|| build(&year, black_box(&facts), black_box(&history)))
    });
    g.bench_function("build month (10 k facts)", |b| {
        b.iter(|| build(&month, black_box(&small), black_box(&small_history)))
    });
    g.bench_function("to_html month (10 k facts)", |b| {
        b.iter(|| black_box(&small_report).to_html())
    });
    g.bench_function("to_text month (10 k facts)", |b| {
        b.iter(|| black_box(&small_report).to_text())
    });
    g.finish();
}

criterion_group!(benches, report);
criterion_main!(benches);
