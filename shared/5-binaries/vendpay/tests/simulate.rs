//! `vendpay simulate`: the same seed writes the same facts, every session ends closed and every refund
//! final, and no simulated buyer id reaches a fact, the output or the logs.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code asserts by panicking

use std::path::Path;
use std::process::{Command, Output};

use vendpay::simulate::{self, Options};
use vendpay_app::{FactStore, SessionStore};
use vendpay_domain::facts::{AnalyticsKey, Fact, FactKind};
use vendpay_domain::Timestamp;
use vendpay_store_sqlite::SqliteStore;

const KEY: &str = "5a5b5c5d5e5f606162636465666768696a6b6c6d6e6f70717273747576777879";
const SIZE: [&str; 6] = ["--machines", "5", "--days", "3", "--seed", "11"];

fn vendpay(args: &[&str], db: Option<&Path>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_vendpay"));
    cmd.arg("simulate").args(args);
    if let Some(db) = db {
        cmd.arg("--db").arg(db);
    }
    // Everything the ledger and the store log, so the privacy check sees every log line.
    cmd.env("ANALYTICS_KEY", KEY)
        .env("RUST_LOG", "info")
        .env_remove("VENDPAY_DB")
        .env_remove("DEVICE_KEY");
    cmd.output().expect("run vendpay simulate")
}

fn text(out: &Output) -> String {
    format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

async fn facts(db: &Path) -> Vec<Fact> {
    let store = SqliteStore::open(db).await.expect("open");
    store
        .facts(Timestamp::from_millis(0), Timestamp::FAR_FUTURE)
        .await
        .expect("facts")
}

fn digest_line(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find(|l| l.contains("digest"))
        .map(|l| l.split("digest").nth(1).unwrap_or("").trim().to_owned())
        .expect("a digest line")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seed_writes_the_same_facts_closes_everything_and_leaks_no_buyer_id() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a.sqlite"), dir.path().join("b.sqlite"));
    let first = vendpay(&SIZE, Some(&a));
    let second = vendpay(&SIZE, Some(&b));
    for out in [&first, &second] {
        assert!(out.status.success(), "simulate failed:\n{}", text(out));
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(stdout.contains("check      ok"), "{stdout}");
    }
    assert_eq!(digest_line(&first), digest_line(&second));

    // Byte for byte the same facts in both databases.
    let (fa, fb) = (facts(&a).await, facts(&b).await);
    assert!(!fa.is_empty());
    assert_eq!(
        serde_json::to_string(&fa).unwrap(),
        serde_json::to_string(&fb).unwrap()
    );
    let count = |k: FactKind| fa.iter().filter(|f| f.kind == k).count();
    assert!(
        count(FactKind::Sale) > 100,
        "{} sales",
        count(FactKind::Sale)
    );
    assert!(count(FactKind::Payment) > 50);
    let issued = fa
        .iter()
        .filter(|f| f.kind == FactKind::Refund && f.status.as_deref() == Some("issued"))
        .count();
    let finals = fa
        .iter()
        .filter(|f| f.kind == FactKind::Refund && f.status.as_deref() != Some("issued"))
        .count();
    assert!(issued > 10);
    assert_eq!(issued, finals, "every issued refund has its final verdict");
    assert!(fa.iter().any(|f| f.buyer_key.is_some()));

    // Closed and final, as the store sees it too.
    let store = SqliteStore::open(&a).await.unwrap();
    assert!(store
        .due(Timestamp::FAR_FUTURE, 1)
        .await
        .unwrap()
        .is_empty());
    assert!(store
        .pending_refunds(Timestamp::FAR_FUTURE, 1)
        .await
        .unwrap()
        .is_empty());

    // The buyer ids: in the sessions' own ledgers (the money rules need them), nowhere else.
    let listed = vendpay(&[&SIZE[..], &["--list-buyers"]].concat(), None);
    assert!(listed.status.success(), "{}", text(&listed));
    let buyers: Vec<String> = String::from_utf8_lossy(&listed.stdout)
        .lines()
        .map(str::to_owned)
        .collect();
    assert!(buyers.len() > 100, "{} buyers", buyers.len());
    assert!(buyers
        .iter()
        .all(|b| b.len() == 16 && b.starts_with("2088") && b.bytes().all(|c| c.is_ascii_digit())));
    let mut sessions = String::new();
    for d in vendpay_app::InventoryStore::stocked_devices(&store)
        .await
        .unwrap()
    {
        for s in store.sessions_of_device(&d, 10_000).await.unwrap() {
            sessions.push_str(&serde_json::to_string(&s).unwrap());
        }
    }
    assert!(
        buyers
            .iter()
            .filter(|b| sessions.contains(b.as_str()))
            .count()
            > 50,
        "the listed buyers are the ones the sessions were paid by"
    );
    let facts_json = serde_json::to_string(&fa).unwrap();
    let outputs = format!("{}\n{}", text(&first), text(&second));
    assert!(outputs.contains("INFO"), "logs were captured:\n{outputs}");
    for b in &buyers {
        assert!(!facts_json.contains(b.as_str()), "buyer id {b} in a fact");
        assert!(
            !outputs.contains(b.as_str()),
            "buyer id {b} in the output or logs"
        );
    }

    // A database with sessions is refused without --append; with it, an overlapping period too.
    let again = vendpay(&SIZE, Some(&a));
    assert!(!again.status.success());
    assert!(
        text(&again).contains("already has sessions"),
        "{}",
        text(&again)
    );
    let overlap = vendpay(&[&SIZE[..], &["--append"]].concat(), Some(&a));
    assert!(!overlap.status.success());
    assert!(
        text(&overlap).contains("--append needs a --start after"),
        "{}",
        text(&overlap)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_library_run_is_reproducible_appends_a_later_period_and_seeds_differ() {
    let dir = tempfile::tempdir().unwrap();
    let options = |db: &str, seed: u64| Options {
        machines: 3,
        days: 2,
        seed,
        db: Some(dir.path().join(db)),
        analytics_key: Some(AnalyticsKey::new(b"simulate test key".to_vec())),
        ..Options::default()
    };
    let one = simulate::run(&options("one.sqlite", 5)).await.unwrap();
    let two = simulate::run(&options("two.sqlite", 5)).await.unwrap();
    let other = simulate::run(&options("other.sqlite", 6)).await.unwrap();
    for s in [&one, &two, &other] {
        assert!(s.ok(), "{s:?}");
        assert_eq!((s.open_sessions, s.pending_refunds), (0, 0));
        assert!(s.sales > 0 && s.refunds_issued > 0 && s.facts > s.sales);
    }
    assert_eq!(one.digest, two.digest);
    assert_eq!(one.facts_by_kind, two.facts_by_kind);
    assert_ne!(one.digest, other.digest);

    // The next two days into the same database.
    let later = Options {
        append: true,
        start: "2026-11-03".into(),
        ..options("one.sqlite", 5)
    };
    let appended = simulate::run(&later).await.unwrap();
    assert!(appended.ok(), "{appended:?}");
    let all = facts(&dir.path().join("one.sqlite")).await;
    assert_eq!(all.len() as u64, one.facts + appended.facts);

    let buyers = simulate::buyer_ids(&options("x", 5)).unwrap();
    assert_eq!(buyers, simulate::buyer_ids(&options("y", 5)).unwrap());
}
