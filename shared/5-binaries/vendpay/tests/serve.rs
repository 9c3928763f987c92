//! `vendpay serve` over real HTTP: the binary on an ephemeral port with a temporary database.
//!
//! - Sandbox mode: an operator registers a machine, a customer pays through `POST /sandbox/pay`, the
//!   machine (signing its requests) sees the balance and ends the session; the refund reaches the
//!   sandbox. SIGTERM stops the server cleanly.
//! - Gateway mode, against a sandbox this test runs (so it outlives the server): SIGKILL in the middle of
//!   a session and a restart on the same database keep the balance, the machine's secret (the device
//!   key file) and the deadline, which then refunds.
//! - Sandbox mode, the same SIGKILL and restart: the in-process sandbox is new, but the trade journal
//!   beside the database gives it the trade back, so the re-armed deadline's refund succeeds there.
//! - `--store aws --create-missing` against moto (run through `scripts/with-moto`): a fresh table and
//!   queues created by the server, a session ended and refunded through SQS, then SIGKILL and a restart
//!   on the same table: balance intact, and the deadline (a delayed SQS message) still refunds.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code asserts by panicking

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use vendpay_client::{cny, poll_until, Client, ClientError, MachineKeys, NewDevice, POLL_INTERVAL};

const TOKEN: &str = "serve-smoke-test-admin-token";

struct Serve {
    child: Child,
    url: String,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(db: &Path, env: &[(&str, String)]) -> Serve {
    start_with(db, &[], env)
}

fn start_with(db: &Path, args: &[&str], env: &[(&str, String)]) -> Serve {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_vendpay"));
    cmd.arg("serve")
        .args(args)
        .env("VENDPAY_LISTEN", "127.0.0.1:0")
        .env("VENDPAY_DB", db)
        .env("ADMIN_TOKEN", TOKEN)
        .env_remove("ALIPAY_GATEWAY_URL")
        .env_remove("DEVICE_KEY");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd
        .stdout(Stdio::piped())
        // VENDPAY_TEST_SERVER_LOGS=1 shows the servers' logs.
        .stderr(if std::env::var_os("VENDPAY_TEST_SERVER_LOGS").is_some() {
            Stdio::inherit()
        } else {
            Stdio::null()
        })
        .spawn()
        .expect("start vendpay serve");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(url) = line.strip_prefix("vendpay: listening on ") {
                let _ = tx.send(url.trim().to_owned());
            }
        }
    });
    let url = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("vendpay serve printed its address");
    Serve { child, url }
}

impl Serve {
    /// A client of this server with the admin token.
    fn client(&self) -> Client {
        must(Client::new(&self.url, TOKEN))
    }
}

/// A client error fails the test, naming what went wrong.
fn must<T>(r: Result<T, ClientError>) -> T {
    r.unwrap_or_else(|e| panic!("{e}"))
}

/// One request sent as given: the status and the answer.
async fn call(
    client: &Client,
    method: &str,
    path: &str,
    headers: &[(&str, String)],
    body: String,
) -> (u16, Value) {
    let a = must(client.call(method, path, headers, body).await);
    (a.status, a.body)
}

/// A machine's request signed now, without a body: the status and the answer.
async fn device(client: &Client, m: &MachineKeys, method: &str, path: &str) -> (u16, Value) {
    let a = must(client.device(m, method, path, None).await);
    (a.status, a.body)
}

async fn register(client: &Client, id: &str) -> MachineKeys {
    let m = must(
        client
            .register(&NewDevice {
                id,
                name: "Smoke",
                district: "Test",
                location: None,
                currency: "CNY",
                mode: "pay_first",
            })
            .await,
    );
    assert!(m.qrcode.starts_with("https://"), "{}", m.qrcode);
    m
}

async fn wait_open(client: &Client, m: &MachineKeys) -> Value {
    must(
        vendpay_client::wait_for("the balance", Duration::from_secs(10), async || {
            let s = client.session(m).await?;
            Ok((s["state"] == "open").then_some(s))
        })
        .await,
    )
}

async fn wait_refunded(client: &Client, session: &str, limit: Duration) -> Value {
    let done = |s: &Value| {
        let refunded = s["refunds"]
            .as_array()
            .is_some_and(|r| !r.is_empty() && r.iter().all(|r| r["status"] == "succeeded"));
        s["phase"] == "closed" && refunded
    };
    must(
        poll_until(
            &format!("the refund of {session}"),
            limit,
            POLL_INTERVAL,
            async || client.admin_session(session).await,
            done,
        )
        .await,
    )
}

fn sigterm_and_wait(server: &mut Serve) -> std::process::ExitStatus {
    let pid = server.child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill")
        .success());
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(s) = server.child.try_wait().expect("wait") {
            return s;
        }
        assert!(
            Instant::now() < until,
            "vendpay serve did not stop on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test]
async fn serve_in_sandbox_mode_over_http() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("smoke.sqlite");
    let mut server = start(&db, &[]);
    let client = server.client();

    let m = register(&client, "vm-smoke").await;
    let (status, _) = call(
        &client,
        "GET",
        "/admin/devices/vm-smoke",
        &[],
        String::new(),
    )
    .await;
    assert_eq!(status, 401, "admin routes need the token");

    // A customer pays 8.88 CNY through the sandbox, on our own listener.
    let (status, receipt) = call(
        &client,
        "POST",
        "/sandbox/pay",
        &[],
        json!({"device_id": "vm-smoke", "amount": {"minor": 888, "currency": "CNY"}}).to_string(),
    )
    .await;
    assert_eq!(status, 200, "{receipt}");
    let trade = receipt["trade_no"].as_str().expect("trade").to_owned();
    let session = wait_open(&client, &m).await;
    assert_eq!(session["balance"], json!({"minor": 888, "currency": "CNY"}));
    assert_eq!(session["session_id"], format!("s:{trade}"));

    // A badly signed request is refused; an oversized body is 413 with the JSON error shape.
    let forged = MachineKeys {
        secret: "wrong-secret".to_owned(),
        ..m.clone()
    };
    let (status, _) = device(&client, &forged, "GET", "/devices/vm-smoke/session").await;
    assert_eq!(status, 401);
    let (status, body) = call(
        &client,
        "POST",
        "/admin/devices",
        &[("authorization", format!("Bearer {TOKEN}"))],
        "x".repeat(70 * 1024),
    )
    .await;
    assert_eq!(status, 413);
    assert_eq!(body["error"]["code"], "body_too_large");
    let (status, body) = call(&client, "POST", "/sandbox/pay", &[], "{}".into()).await;
    assert_eq!(status, 400, "{body}");

    // "Return change": the refund goes to the sandbox at once.
    let (status, body) = device(&client, &m, "POST", "/devices/vm-smoke/session/end").await;
    assert_eq!(status, 200, "{body}");
    let closed = wait_refunded(&client, &format!("s:{trade}"), Duration::from_secs(10)).await;
    assert_eq!(
        closed["refunds"][0]["amount"],
        json!({"minor": 888, "currency": "CNY"})
    );
    let refunds = must(client.sandbox_list("refunds").await);
    let confirmed = refunds
        .iter()
        .filter(|r| r["trade_no"] == trade.as_str() && r["verdict"] == "succeeded")
        .count();
    assert_eq!(confirmed, 1, "{refunds:?}");

    let status = sigterm_and_wait(&mut server);
    assert!(status.success(), "{status}");
}

#[tokio::test]
async fn gateway_mode_survives_sigkill_and_restart() {
    use vendpay_alipay::PartnerId;
    use vendpay_alipay_sandbox::{
        Sandbox, SandboxConfig, TEST_ALIPAY_PUBLIC_KEY, TEST_MERCHANT_PRIVATE_KEY,
    };
    use vendpay_domain::{Currency, Money};

    let partner = "2088000000000777";
    let sandbox = Sandbox::new(SandboxConfig::with_test_keys(
        PartnerId::parse(partner).expect("partner"),
    ))
    .expect("sandbox");
    let running = sandbox
        .serve("127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("serve sandbox");
    let env = [
        ("ALIPAY_GATEWAY_URL", running.gateway_url()),
        ("ALIPAY_PARTNER_ID", partner.to_owned()),
        ("ALIPAY_PRIVATE_KEY", TEST_MERCHANT_PRIVATE_KEY.to_owned()),
        ("ALIPAY_PUBLIC_KEY", TEST_ALIPAY_PUBLIC_KEY.to_owned()),
        ("ALIPAY_SECONDARY_MERCHANT_ID", "smoke_merchant".to_owned()),
        ("ALIPAY_SECONDARY_MERCHANT_NAME", "Smoke Vending".to_owned()),
        ("ALIPAY_MERCHANT_INDUSTRY", "5499".to_owned()),
        ("ALIPAY_SETTLEMENT_CURRENCY", "USD".to_owned()),
        // Long enough to restart within, short enough to see the deadline after.
        ("PAY_FIRST_WINDOW_SECS", "6".to_owned()),
    ];
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("restart.sqlite");
    let server = start(&db, &env);
    let client = server.client();
    // In gateway mode the sandbox routes are not ours.
    let (status, _) = call(&client, "POST", "/sandbox/pay", &[], "{}".into()).await;
    assert_eq!(status, 404);

    let m = register(&client, "vm-restart").await;
    let receipt = sandbox
        .pay(
            &m.qrcode,
            Money::new(1234, Currency::Cny).expect("money"),
            None,
        )
        .expect("pay");
    let session = wait_open(&client, &m).await;
    assert_eq!(
        session["balance"],
        json!({"minor": 1234, "currency": "CNY"})
    );

    // SIGKILL (Drop kills), then start again on the same database.
    drop(server);
    let server = start(&db, &env);
    let client = server.client();
    let (status, s) = device(&client, &m, "GET", "/devices/vm-restart/session").await;
    assert_eq!(
        status, 200,
        "the machine's secret still verifies after a restart: {s}"
    );
    assert_eq!(s["balance"], json!({"minor": 1234, "currency": "CNY"}));

    // The re-armed deadline refunds the whole balance through the gateway.
    let closed = wait_refunded(
        &client,
        &format!("s:{}", receipt.trade_no),
        Duration::from_secs(20),
    )
    .await;
    assert_eq!(
        closed["refunds"][0]["amount"],
        json!({"minor": 1234, "currency": "CNY"})
    );
    assert_eq!(closed["refunds"][0]["reason"], "settlement");
    drop(server);
}

async fn pay_in_sandbox(client: &Client, id: &str, minor: u64) -> String {
    let receipt = must(client.pay(id, &cny(minor)).await);
    receipt["trade_no"].as_str().expect("trade").to_owned()
}

/// SIGKILL mid-session and restart, then the deadline: the balance, the secret and the refund survive.
async fn kill_restart_and_settle(db: &Path, args: &[&str], env: &[(&str, String)], id: &str) {
    let server = start_with(db, args, env);
    let client = server.client();
    let m = register(&client, id).await;
    let trade = pay_in_sandbox(&client, id, 1234).await;
    let session = wait_open(&client, &m).await;
    assert_eq!(
        session["balance"],
        json!({"minor": 1234, "currency": "CNY"})
    );

    // SIGKILL (Drop kills), then start again on the same database (and table).
    drop(server);
    let server = start_with(db, args, env);
    let client = server.client();
    let (status, s) = device(&client, &m, "GET", &format!("/devices/{id}/session")).await;
    assert_eq!(
        status, 200,
        "the machine's secret still verifies after a restart: {s}"
    );
    assert_eq!(s["state"], "open", "{s}");
    assert_eq!(
        s["balance"],
        json!({"minor": 1234, "currency": "CNY"}),
        "{s}"
    );

    // The deadline refunds the whole balance, through the new in-process sandbox. On AWS a long poll
    // the killed process left open may have taken the deadline message: it then comes back after the
    // queue's visibility timeout (30 s), hence the long limit.
    let closed = wait_refunded(&client, &format!("s:{trade}"), Duration::from_secs(60)).await;
    let refunds = closed["refunds"].as_array().expect("refunds");
    assert_eq!(refunds.len(), 1, "{closed}");
    assert_eq!(
        refunds[0]["amount"],
        json!({"minor": 1234, "currency": "CNY"})
    );
    assert_eq!(refunds[0]["reason"], "settlement");
    drop(server);
}

#[tokio::test]
async fn sandbox_mode_survives_sigkill_and_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("sandbox-restart.sqlite");
    // Long enough to restart within, short enough to see the deadline after.
    let env = [("PAY_FIRST_WINDOW_SECS", "6".to_owned())];
    kill_restart_and_settle(&db, &[], &env, "vm-sandbox-restart").await;
    let journal = std::fs::read_to_string(dir.path().join("sandbox-restart.sqlite.sandbox-trades"))
        .expect("the sandbox's trade journal");
    assert_eq!(journal.lines().count(), 1, "{journal}");
}

fn moto_table() -> String {
    let endpoint = match std::env::var("VENDPAY_MOTO_ENDPOINT") {
        Ok(v) if !v.trim().is_empty() => v,
        _ => panic!(
            "VENDPAY_MOTO_ENDPOINT is not set: this test needs moto's server. Run it through the launcher:\n\n    \
             scripts/with-moto cargo test -p vendpay --test serve\n"
        ),
    };
    assert_eq!(
        std::env::var("AWS_ENDPOINT_URL").ok().as_deref(),
        Some(endpoint.as_str()),
        "AWS_ENDPOINT_URL must point at moto (scripts/with-moto sets both)"
    );
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    format!("vp-serve-{:x}", t ^ (u64::from(std::process::id()) << 40))
}

#[tokio::test]
async fn aws_store_on_a_fresh_moto_survives_sigkill_and_restart() {
    let args = ["--store", "aws", "--create-missing", "--sandbox"];
    // The in-process sandbox numbers its QR codes and trades from 1 at every start, so each phase gets
    // its own table and database: a second sandbox's trade 2 must not meet the first one's.
    let dir = tempfile::tempdir().expect("tempdir");

    // "Return change": the refund travels the refund queue to the refund executor.
    {
        let db = dir.path().join("aws-end.sqlite");
        let env = [("TABLE_NAME", moto_table())];
        let server = start_with(&db, &args, &env);
        let client = server.client();
        let m = register(&client, "vm-aws-end").await;
        let trade = pay_in_sandbox(&client, "vm-aws-end", 500).await;
        wait_open(&client, &m).await;
        let (status, body) = device(&client, &m, "POST", "/devices/vm-aws-end/session/end").await;
        assert_eq!(status, 200, "{body}");
        let closed = wait_refunded(&client, &format!("s:{trade}"), Duration::from_secs(20)).await;
        assert_eq!(
            closed["refunds"][0]["amount"],
            json!({"minor": 500, "currency": "CNY"})
        );
        drop(server);
    }

    // SIGKILL mid-session; the restart finds the table and queues (creates nothing) and the deadline,
    // a delayed SQS message, still refunds.
    let db = dir.path().join("aws-restart.sqlite");
    let table = moto_table();
    let env = [
        ("TABLE_NAME", table.clone()),
        ("PAY_FIRST_WINDOW_SECS", "8".to_owned()),
    ];
    kill_restart_and_settle(&db, &args, &env, "vm-aws-restart").await;

    // Without --create-missing, a missing setting is named and start-up stops.
    let out = Command::new(env!("CARGO_BIN_EXE_vendpay"))
        .args(["serve", "--store", "aws", "--sandbox"])
        .env("VENDPAY_LISTEN", "127.0.0.1:0")
        .env("VENDPAY_DB", &db)
        .env("TABLE_NAME", &table)
        .env_remove("DEADLINE_QUEUE_URL")
        .env_remove("REFUND_QUEUE_URL")
        .env_remove("VENDPAY_AWS_CREATE")
        .output()
        .expect("run vendpay serve");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("DEADLINE_QUEUE_URL"), "{err}");
}

/// `vendpay aws-setup` on moto: creates the table and both queues, prints their settings as `export`
/// lines, and a second run creates nothing and prints the same lines; `serve --store aws` then starts
/// on those settings without `--create-missing`.
#[tokio::test]
async fn aws_setup_creates_once_and_prints_the_settings() {
    let table = moto_table();
    let setup = || {
        Command::new(env!("CARGO_BIN_EXE_vendpay"))
            .arg("aws-setup")
            .env("TABLE_NAME", &table)
            .env_remove("DEADLINE_QUEUE_URL")
            .env_remove("REFUND_QUEUE_URL")
            .output()
            .expect("run vendpay aws-setup")
    };
    let first = setup();
    assert!(first.status.success(), "{first:?}");
    let exports = String::from_utf8_lossy(&first.stdout).into_owned();
    let logged = String::from_utf8_lossy(&first.stderr);
    assert!(logged.contains("created the DynamoDB table"), "{logged}");
    let settings: Vec<(String, String)> = exports
        .lines()
        .map(|line| {
            let (name, value) = line
                .strip_prefix("export ")
                .and_then(|l| l.split_once('='))
                .unwrap_or_else(|| panic!("not an export line: {line:?}"));
            (name.to_owned(), value.trim_matches('\'').to_owned())
        })
        .collect();
    let names: Vec<&str> = settings.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        ["TABLE_NAME", "DEADLINE_QUEUE_URL", "REFUND_QUEUE_URL"]
    );
    assert_eq!(settings[0].1, table);
    assert!(
        settings[1].1.ends_with(&format!("/{table}-deadlines")),
        "{exports}"
    );
    assert!(
        settings[2].1.ends_with(&format!("/{table}-refunds")),
        "{exports}"
    );

    let second = setup();
    assert!(second.status.success(), "{second:?}");
    assert_eq!(String::from_utf8_lossy(&second.stdout), exports);
    assert!(
        !String::from_utf8_lossy(&second.stderr).contains("created"),
        "{second:?}"
    );

    // The printed settings are all `serve --store aws` needs.
    let dir = tempfile::tempdir().expect("tempdir");
    let env: Vec<(&str, String)> = settings
        .iter()
        .map(|(n, v)| (n.as_str(), v.clone()))
        .collect();
    let server = start_with(
        &dir.path().join("setup.sqlite"),
        &["--store", "aws", "--sandbox"],
        &env,
    );
    let m = register(&server.client(), "vm-setup").await;
    assert!(!m.secret.is_empty());
}
