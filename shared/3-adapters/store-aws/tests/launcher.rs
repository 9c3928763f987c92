//! Proves `scripts/moto_server.py` is needed and sufficient.
//!
//! Each round puts an item at version 0, then N clients race the same conditional write
//! (`PutItem ... ConditionExpression: version = 0`). DynamoDB admits exactly one. moto unmodified
//! (`--no-lock`) can admit several: its DynamoDB backend reads the item, checks the condition and stores
//! the new item without a lock, on one thread per request. Our launcher serialises DynamoDB requests.
//!
//! The race needs a thread switch inside moto between its read and its write, so the items carry a
//! padding list that makes building the new item (between the two) take a while. Measured on the
//! 2-core dev machine, 16 racers: 400 padding numbers → 6 of 200 unlocked rounds went wrong (3 %);
//! 2,000 → 14 of 100 (14 %), so 150 rounds miss with probability ≈ 0.86^150 ≈ 1e-10 and the first
//! failure typically shows within a few seconds. Locked: 0 of 100 (padding 400) and 0 of 20 (2,000).
//! `VENDPAY_RACE_{RACERS,PADDING,UNLOCKED_ROUNDS,LOCKED_ROUNDS}` and `VENDPAY_RACE_MEASURE=1` (run
//! every unlocked round) re-measure. The unlocked server
//! is raced for up to `UNLOCKED_MAX_ROUNDS` rounds and must go wrong at least once; the locked server
//! runs `LOCKED_ROUNDS` rounds of the same race and must never go wrong. Both servers are started by the
//! test (beside the one `scripts/with-moto` runs), from `VENDPAY_MOTO_PYTHON`/`VENDPAY_MOTO_LAUNCHER`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code asserts by panicking

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType,
    ScalarAttributeType,
};
use aws_sdk_dynamodb::Client;
use vendpay_test_kit::moto;

const RACERS: usize = 16;
const PADDING: usize = 2000;
// The race shows within a few rounds on a busy machine but can take over 150 on an idle one (one CI run
// saw none in 150); the search stops at the first bad round, so a high cap costs time only when needed.
const UNLOCKED_MAX_ROUNDS: usize = 800;
const LOCKED_ROUNDS: usize = 40;

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn required(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!(
            "{name} is not set: run the tests through the launcher, which sets it:\n\n    \
             scripts/with-moto cargo test -p vendpay-store-aws\n"
        )
    })
}

/// A moto server of our own, stopped when dropped.
struct Server {
    child: Child,
    endpoint: String,
    _dir: TempDir,
}

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(lock: bool) -> Server {
    let python = required("VENDPAY_MOTO_PYTHON");
    let launcher = required("VENDPAY_MOTO_LAUNCHER");
    let dir = std::env::temp_dir().join(moto::unique("vendpay-launcher-test"));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let port_file = dir.join("port");
    let mut cmd = Command::new(python);
    cmd.arg(launcher)
        .arg("--port")
        .arg("0")
        .arg("--port-file")
        .arg(&port_file)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if !lock {
        cmd.arg("--no-lock");
    }
    let child = cmd.spawn().expect("start the launcher");
    let mut server = Server {
        child,
        endpoint: String::new(),
        _dir: TempDir(dir),
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(p) = std::fs::read_to_string(&port_file) {
            if let Ok(port) = p.trim().parse::<u16>() {
                server.endpoint = format!("http://127.0.0.1:{port}");
                return server;
            }
        }
        if let Ok(Some(status)) = server.child.try_wait() {
            panic!("the launcher exited during start-up: {status}");
        }
        assert!(
            Instant::now() < deadline,
            "the launcher did not start within 60 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

async fn table(client: &Client) -> String {
    let name = moto::unique("vp-race");
    client
        .create_table()
        .table_name(&name)
        .billing_mode(BillingMode::PayPerRequest)
        .key_schema(
            KeySchemaElement::builder()
                .attribute_name("pk")
                .key_type(KeyType::Hash)
                .build()
                .expect("key"),
        )
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name("pk")
                .attribute_type(ScalarAttributeType::S)
                .build()
                .expect("attr"),
        )
        .send()
        .await
        .expect("create table");
    name
}

/// One round: how many of `racers` conditional writes on version 0 were admitted (DynamoDB: exactly 1).
async fn round(client: &Client, table: &str, round: usize, racers: usize) -> usize {
    let padding_len = env_or("VENDPAY_RACE_PADDING", PADDING);
    let pk = AttributeValue::S(format!("r{round}"));
    client
        .put_item()
        .table_name(table)
        .item("pk", pk.clone())
        .item("version", AttributeValue::N("0".into()))
        .send()
        .await
        .expect("seed item");
    let padding = AttributeValue::L(
        (0..padding_len)
            .map(|i| AttributeValue::N(i.to_string()))
            .collect(),
    );
    let start = Arc::new(tokio::sync::Barrier::new(racers));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..racers {
        let (client, table, pk, padding, start) = (
            client.clone(),
            table.to_owned(),
            pk.clone(),
            padding.clone(),
            start.clone(),
        );
        tasks.spawn(async move {
            start.wait().await;
            let r = client
                .put_item()
                .table_name(table)
                .item("pk", pk)
                .item("version", AttributeValue::N("1".into()))
                .item("writer", AttributeValue::N(i.to_string()))
                .item("padding", padding)
                .condition_expression("version = :zero")
                .expression_attribute_values(":zero", AttributeValue::N("0".into()))
                .send()
                .await;
            match r {
                Ok(_) => true,
                Err(e)
                    if e.as_service_error()
                        .is_some_and(|s| s.is_conditional_check_failed_exception()) =>
                {
                    false
                }
                Err(e) => panic!("unexpected error in the race: {e:?}"),
            }
        });
    }
    let mut wins = 0;
    while let Some(r) = tasks.join_next().await {
        if r.expect("racer task") {
            wins += 1;
        }
    }
    wins
}

struct Tally {
    rounds: usize,
    bad_rounds: usize,
    max_wins: usize,
    elapsed: Duration,
}

/// Races up to `max_rounds` rounds; stops at the first impossible result when `stop_at_first`.
async fn race(endpoint: &str, racers: usize, max_rounds: usize, stop_at_first: bool) -> Tally {
    let config = moto::sdk_for(endpoint).await;
    let client = Client::new(&config);
    let table = table(&client).await;
    // Open the pool's connections first so the racers start together.
    round(&client, &table, usize::MAX, racers).await;
    let started = Instant::now();
    let mut t = Tally {
        rounds: 0,
        bad_rounds: 0,
        max_wins: 0,
        elapsed: Duration::ZERO,
    };
    for r in 0..max_rounds {
        let wins = round(&client, &table, r, racers).await;
        t.rounds += 1;
        t.max_wins = t.max_wins.max(wins);
        if wins != 1 {
            t.bad_rounds += 1;
            if stop_at_first {
                break;
            }
        }
    }
    t.elapsed = started.elapsed();
    t
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_launcher_lock_is_needed_and_sufficient() {
    let racers = env_or("VENDPAY_RACE_RACERS", RACERS);
    let unlocked_rounds = env_or("VENDPAY_RACE_UNLOCKED_ROUNDS", UNLOCKED_MAX_ROUNDS);
    let locked_rounds = env_or("VENDPAY_RACE_LOCKED_ROUNDS", LOCKED_ROUNDS);
    // Measuring mode: run every unlocked round instead of stopping at the first failure.
    let measure = std::env::var("VENDPAY_RACE_MEASURE").is_ok();

    let unlocked = start(false);
    let u = race(&unlocked.endpoint, racers, unlocked_rounds, !measure).await;
    drop(unlocked);
    eprintln!(
        "moto --no-lock: {} of {} rounds admitted more than one of {racers} racing conditional writes \
         (at most {} at once) in {:?}",
        u.bad_rounds, u.rounds, u.max_wins, u.elapsed
    );

    let locked = start(true);
    let l = race(&locked.endpoint, racers, locked_rounds, false).await;
    drop(locked);
    eprintln!(
        "moto via scripts/moto_server.py: {} of {} rounds went wrong (at most {} winners) in {:?}",
        l.bad_rounds, l.rounds, l.max_wins, l.elapsed
    );

    assert!(
        u.bad_rounds > 0,
        "unmodified moto admitted exactly one writer in all {} rounds: the race did not show, so this \
         test no longer proves the launcher is needed (moto may have started locking; re-measure)",
        u.rounds
    );
    assert_eq!(
        l.bad_rounds, 0,
        "the launcher let {} of {} rounds admit more than one conditional write (max {})",
        l.bad_rounds, l.rounds, l.max_wins
    );
}
