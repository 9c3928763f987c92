//! `vendpay demo`: both flows end to end, printed as a timeline and checked.
//!
//! It starts its own [`Server`] (a temporary SQLite database, the in-process Alipay sandbox, an
//! ephemeral port) through the very configuration path `vendpay serve` uses, then acts as operator,
//! machines and customers **over HTTP**: machines sign their requests, customers pay through
//! `POST /sandbox/pay` so the sandbox POSTs a really signed notification back (which the server checks
//! with `notify_verify`), and refunds really go to the sandbox's `gateway.do`.
//!
//! Each scenario ends with checks against `GET /admin/sessions/{id}` (phase, spent, refunds, the money
//! invariant) and `GET /sandbox/refunds` (what the sandbox confirmed). Any failed check makes
//! [`run`] return `Ok(false)`, and the command exit non-zero.

use std::collections::HashMap;
use std::future::Future;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use vendpay_domain::{Clock, Currency, Money, SystemClock, Windows};

use crate::config::{Config, ConfigError};
use crate::error::ServeError;
use crate::server::Server;

/// Short windows by default so the demo takes seconds; `--real-time` uses the default windows.
pub struct Options {
    pub real_time: bool,
}

/// The demo could not run at all (a scenario that goes wrong is a failed check, not this).
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("configuration: {0}")]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Start(#[from] ServeError),
    #[error("cannot create a temporary directory: {0}")]
    TempDir(std::io::Error),
    #[error("HTTP client: {0}")]
    Client(String),
}

/// A step that went wrong: the scenario stops and counts as failed.
type Step<T> = Result<T, String>;

const ADMIN_TOKEN: &str = "vendpay-demo-admin-token";

/// Runs every scenario; `Ok(true)` when every check passed.
pub async fn run(options: Options) -> Result<bool, DemoError> {
    let dir = tempfile::tempdir().map_err(DemoError::TempDir)?;
    let db = dir.path().join("demo.sqlite");
    let (pay_first, purchase_first, order) = if options.real_time {
        ("300", "25", "120")
    } else {
        ("3", "2", "3")
    };
    let settings: HashMap<&str, String> = [
        ("VENDPAY_LISTEN", "127.0.0.1:0".to_owned()),
        ("VENDPAY_DB", db.display().to_string()),
        ("PAY_FIRST_WINDOW_SECS", pay_first.to_owned()),
        ("PURCHASE_FIRST_WINDOW_SECS", purchase_first.to_owned()),
        ("ORDER_PAYMENT_WINDOW_SECS", order.to_owned()),
        ("ADMIN_TOKEN", ADMIN_TOKEN.to_owned()),
        ("ALIPAY_NOTIFY_VERIFY", "true".to_owned()),
    ]
    .into_iter()
    .collect();
    // Only these settings: the demo needs the sandbox even where ALIPAY_GATEWAY_URL is set.
    let config = Config::from_lookup(|n| settings.get(n).cloned())?;
    let windows = config.windows;
    let server = Server::start(config).await?;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .map_err(|e| DemoError::Client(e.to_string()))?;
    let mut demo = Demo {
        http,
        base: server.local_url(),
        t0: Instant::now(),
        windows,
        scenario: String::new(),
        checks: 0,
        failures: Vec::new(),
    };

    println!(
        "vendpay demo: server {} on a temporary SQLite database; Alipay sandbox in-process at {}",
        demo.base, server.gateway_url
    );
    println!(
        "windows: pay first {} s, purchase first {} s, order payment {} s{}",
        windows.pay_first.as_secs(),
        windows.purchase_first.as_secs(),
        windows.order_payment.as_secs(),
        if options.real_time {
            " (real time)"
        } else {
            " (short; --real-time for 300/25/120)"
        }
    );

    demo.scenario(
        "1. Pay first: pay 10.00, buy 3.50 twice, one vend fails, the deadline refunds 6.50",
        pay_first_refund,
    )
    .await;
    demo.scenario(
        "2. Pay first, used up: pay 7.00, buy 3.50 twice, closed at once without a refund",
        pay_first_used_up,
    )
    .await;
    demo.scenario(
        "3. Purchase first: order 4.00, pay 5.00, 1.00 refunded at once, delivered",
        purchase_first_overpaid,
    )
    .await;
    demo.scenario(
        "4. Purchase first, delivery fails: order 4.00, pay 4.00, full refund",
        purchase_first_failed,
    )
    .await;
    demo.scenario(
        "5. A late payment: the order expired before the customer paid, full refund",
        late_payment,
    )
    .await;
    demo.scenario(
        "6. A duplicated notification: Alipay sends it twice, the payment is credited once",
        duplicated_notification,
    )
    .await;

    server.shutdown().await;
    println!();
    if demo.failures.is_empty() {
        println!(
            "all {} checks passed in {:.1} s",
            demo.checks,
            demo.t0.elapsed().as_secs_f64()
        );
        Ok(true)
    } else {
        println!("{} of {} checks FAILED:", demo.failures.len(), demo.checks);
        for f in &demo.failures {
            println!("  - {f}");
        }
        Ok(false)
    }
}

/// The demo's HTTP side and its record of checks.
struct Demo {
    http: reqwest::Client,
    base: String,
    t0: Instant,
    windows: Windows,
    scenario: String,
    checks: usize,
    failures: Vec<String>,
}

/// A registered machine and its secret.
struct Machine {
    id: String,
    secret: String,
}

/// What a finished session must look like.
struct Expect<'a> {
    phase: &'a str,
    spent: u64,
    payments: usize,
    /// `(minor, reason)`; a reason ending in `*` matches by prefix.
    refunds: &'a [(u64, &'a str)],
}

fn cny(minor: u64) -> Value {
    json!({"minor": minor, "currency": "CNY"})
}

/// `{"minor", "currency"}` as `10.00 CNY`.
fn money(v: &Value) -> String {
    let minor = v.get("minor").and_then(Value::as_u64);
    let currency = v
        .get("currency")
        .and_then(Value::as_str)
        .and_then(|c| c.parse::<Currency>().ok());
    match (minor, currency) {
        (Some(m), Some(c)) => Money::new(m, c).map_or_else(|| v.to_string(), |m| m.to_string()),
        _ => v.to_string(),
    }
}

fn minor(v: &Value) -> u64 {
    v.get("minor").and_then(Value::as_u64).unwrap_or(0)
}

fn text<'a>(v: &'a Value, field: &str) -> &'a str {
    v.get(field).and_then(Value::as_str).unwrap_or("?")
}

fn list(v: &Value, field: &str) -> Vec<Value> {
    v.get(field)
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

/// The clock time of an RFC 3339 timestamp (`…T01:02:03.456Z` → `01:02:03.456`).
fn clock_time(v: &Value, field: &str) -> String {
    let t = text(v, field);
    t.get(11..23).unwrap_or(t).to_owned()
}

/// One line describing an operator's view of a session.
fn summary(s: &Value) -> String {
    let refunds: Vec<String> = list(s, "refunds")
        .iter()
        .map(|r| {
            format!(
                "{} {} {}",
                money(&r["amount"]),
                text(r, "reason"),
                text(r, "status")
            )
        })
        .collect();
    format!(
        "{}, balance {}, held {}, spent {}, refunds [{}]",
        text(s, "phase"),
        money(&s["balance"]),
        money(&s["held"]),
        money(&s["spent"]),
        refunds.join("; ")
    )
}

impl Demo {
    fn say(&self, msg: impl AsRef<str>) {
        println!(
            "[{:>7.3}s] {}",
            self.t0.elapsed().as_secs_f64(),
            msg.as_ref()
        );
    }

    fn check(&mut self, ok: bool, what: impl AsRef<str>) {
        self.checks += 1;
        println!(
            "           {} {}",
            if ok { "ok  " } else { "FAIL" },
            what.as_ref()
        );
        if !ok {
            self.failures
                .push(format!("{}: {}", self.scenario, what.as_ref()));
        }
    }

    async fn scenario<F>(&mut self, title: &str, body: F)
    where
        F: for<'d> AsyncScenario<'d>,
    {
        self.scenario = title.split(':').next().unwrap_or(title).to_owned();
        println!("\n== {title}");
        if let Err(e) = body.call(self).await {
            self.check(false, format!("scenario stopped: {e}"));
        }
    }

    async fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, String)],
        body: Option<String>,
    ) -> Step<(u16, Value)> {
        let method = reqwest::Method::from_bytes(method.as_bytes())
            .map_err(|e| format!("method {method}: {e}"))?;
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        for (k, v) in headers {
            req = req.header(*k, v.as_str());
        }
        if let Some(b) = body {
            req = req.header("content-type", "application/json").body(b);
        }
        let res = req.send().await.map_err(|e| format!("{path}: {e}"))?;
        let status = res.status().as_u16();
        let bytes = res.bytes().await.map_err(|e| format!("{path}: {e}"))?;
        let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Ok((status, value))
    }

    /// A request whose answer must be 2xx.
    async fn ok(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, String)],
        body: Option<String>,
    ) -> Step<Value> {
        let (status, value) = self.request(method, path, headers, body).await?;
        if (200..300).contains(&status) {
            Ok(value)
        } else {
            Err(format!("{method} {path} answered {status}: {value}"))
        }
    }

    fn admin_auth(&self) -> Vec<(&'static str, String)> {
        vec![("authorization", format!("Bearer {ADMIN_TOKEN}"))]
    }

    async fn admin(&self, method: &str, path: &str, body: Option<Value>) -> Step<Value> {
        self.ok(
            method,
            path,
            &self.admin_auth(),
            body.map(|b| b.to_string()),
        )
        .await
    }

    /// A machine's request, signed as `docs/contract.md` (“Machine authentication”) says.
    async fn device(
        &self,
        m: &Machine,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> Step<Value> {
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let ts = SystemClock.now().secs().to_string();
        let signature = vendpay_api::auth::sign(&m.secret, method, path, &ts, body.as_bytes());
        let headers = vec![
            ("x-device-id", m.id.clone()),
            ("x-timestamp", ts),
            ("x-signature", signature),
        ];
        self.ok(method, path, &headers, Some(body)).await
    }

    async fn register(&self, id: &str, mode: &str) -> Step<Machine> {
        let created = self
            .admin(
                "POST",
                "/admin/devices",
                Some(
                    json!({"device_id": id, "name": format!("Demo {id}"), "district": "Xuhui",
                    "location": "Lobby", "currency": "CNY", "mode": mode}),
                ),
            )
            .await?;
        let secret = created
            .get("secret")
            .and_then(Value::as_str)
            .ok_or("no secret in the registration answer")?
            .to_owned();
        let qr = self
            .admin("POST", &format!("/admin/devices/{id}/qrcode"), None)
            .await?;
        self.say(format!(
            "machine {id} registered ({mode}, CNY); Alipay QR code {}",
            text(&qr, "qrcode")
        ));
        Ok(Machine {
            id: id.to_owned(),
            secret,
        })
    }

    /// A customer pays the machine's QR code; returns the trade number.
    async fn pay(&self, m: &Machine, amount: u64) -> Step<String> {
        let receipt = self
            .ok(
                "POST",
                "/sandbox/pay",
                &[],
                Some(json!({"device_id": m.id, "amount": cny(amount)}).to_string()),
            )
            .await?;
        let trade = text(&receipt, "trade_no").to_owned();
        self.say(format!(
            "customer pays {} by scanning {}'s QR code (Alipay trade {trade}); the sandbox POSTs the signed notification",
            money(&cny(amount)),
            m.id
        ));
        Ok(trade)
    }

    async fn status(&self, m: &Machine) -> Step<Value> {
        self.device(m, "GET", &format!("/devices/{}/session", m.id), None)
            .await
    }

    async fn session(&self, id: &str) -> Step<Value> {
        self.admin("GET", &format!("/admin/sessions/{id}"), None)
            .await
    }

    /// Polls until `done` holds, within `timeout`.
    async fn poll<Fut>(
        &self,
        what: &str,
        timeout: Duration,
        mut fetch: impl FnMut() -> Fut,
        done: impl Fn(&Value) -> bool,
    ) -> Step<Value>
    where
        Fut: Future<Output = Step<Value>>,
    {
        let until = Instant::now() + timeout;
        loop {
            let v = fetch().await?;
            if done(&v) {
                return Ok(v);
            }
            if Instant::now() >= until {
                return Err(format!(
                    "timed out after {timeout:?} waiting for {what}; last seen {v}"
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Polls the machine's view until `done`.
    async fn wait_status(
        &self,
        m: &Machine,
        what: &str,
        timeout: Duration,
        done: impl Fn(&Value) -> bool,
    ) -> Step<Value> {
        self.poll(what, timeout, || self.status(m), done).await
    }

    /// Polls the operator's view of a session until `done`, printing each change on the way.
    async fn watch_session(
        &self,
        id: &str,
        what: &str,
        timeout: Duration,
        done: impl Fn(&Value) -> bool,
    ) -> Step<Value> {
        let seen = std::cell::RefCell::new(String::new());
        self.poll(
            what,
            timeout,
            || async {
                // A refused payment's session appears only once its notification has arrived.
                let (status, s) = self
                    .request(
                        "GET",
                        &format!("/admin/sessions/{id}"),
                        &self.admin_auth(),
                        None,
                    )
                    .await?;
                match status {
                    404 => return Ok(Value::Null),
                    200 => {}
                    _ => return Err(format!("GET /admin/sessions/{id} answered {status}: {s}")),
                }
                let line = summary(&s);
                if *seen.borrow() != line {
                    self.say(format!("session {id}: {line}"));
                    *seen.borrow_mut() = line;
                }
                Ok(s)
            },
            done,
        )
        .await
    }

    /// How long to wait for something the server does at once (a notification round trip, a refund).
    fn soon(&self) -> Duration {
        Duration::from_secs(10)
    }

    /// The final checks of a scenario.
    async fn verify(&mut self, session_id: &str, trade: &str, want: Expect<'_>) -> Step<()> {
        let s = self.session(session_id).await?;
        self.check(
            text(&s, "phase") == want.phase,
            format!(
                "session {session_id} is {} (want {})",
                text(&s, "phase"),
                want.phase
            ),
        );
        self.check(
            minor(&s["spent"]) == want.spent,
            format!(
                "spent {} (want {})",
                money(&s["spent"]),
                money(&cny(want.spent))
            ),
        );
        let payments = list(&s, "payments");
        self.check(
            payments.len() == want.payments,
            format!(
                "{} payment(s) recorded (want {})",
                payments.len(),
                want.payments
            ),
        );
        let refunds = list(&s, "refunds");
        let got: Vec<(u64, String, String)> = refunds
            .iter()
            .map(|r| {
                (
                    minor(&r["amount"]),
                    text(r, "reason").to_owned(),
                    text(r, "status").to_owned(),
                )
            })
            .collect();
        let matches = got.len() == want.refunds.len()
            && got
                .iter()
                .zip(want.refunds)
                .all(|((a, reason, status), (wa, wr))| {
                    let reason_ok = match wr.strip_suffix('*') {
                        Some(prefix) => reason.starts_with(prefix),
                        None => reason == wr,
                    };
                    a == wa && reason_ok && status == "succeeded"
                });
        let describe = |rs: &mut dyn Iterator<Item = String>| {
            let v: Vec<String> = rs.collect();
            if v.is_empty() {
                "none".to_owned()
            } else {
                v.join("; ")
            }
        };
        self.check(
            matches,
            format!(
                "refunds: {} (want {})",
                describe(
                    &mut got
                        .iter()
                        .map(|(a, r, st)| format!("{} {r} {st}", money(&cny(*a))))
                ),
                describe(
                    &mut want
                        .refunds
                        .iter()
                        .map(|(a, r)| format!("{} {r} succeeded", money(&cny(*a))))
                )
            ),
        );
        let paid: u64 = payments.iter().map(|p| minor(&p["amount"])).sum();
        let refunded: u64 = got.iter().map(|(a, _, _)| a).sum();
        let (spent, held, balance) = (minor(&s["spent"]), minor(&s["held"]), minor(&s["balance"]));
        self.check(
            paid == spent + held + balance + refunded,
            format!(
                "payments {} = spent {} + held {} + balance {} + refunds {}",
                money(&cny(paid)),
                money(&cny(spent)),
                money(&cny(held)),
                money(&cny(balance)),
                money(&cny(refunded))
            ),
        );
        let log = self.ok("GET", "/sandbox/refunds", &[], None).await?;
        let confirmed: u64 = log
            .as_array()
            .into_iter()
            .flatten()
            .filter(|r| text(r, "trade_no") == trade && text(r, "verdict") == "succeeded")
            .map(|r| minor(&r["amount"]))
            .sum();
        let want_total: u64 = want.refunds.iter().map(|(a, _)| a).sum();
        self.check(
            confirmed == want_total,
            format!(
                "the Alipay sandbox confirmed refunds of {} on trade {trade} (want {})",
                money(&cny(confirmed)),
                money(&cny(want_total))
            ),
        );
        Ok(())
    }
}

/// An async scenario borrowing the demo (a closure cannot name the borrow's lifetime).
trait AsyncScenario<'d> {
    type Fut: Future<Output = Step<()>> + 'd;
    fn call(self, demo: &'d mut Demo) -> Self::Fut;
}

impl<'d, F, Fut> AsyncScenario<'d> for F
where
    F: FnOnce(&'d mut Demo) -> Fut,
    Fut: Future<Output = Step<()>> + 'd,
{
    type Fut = Fut;
    fn call(self, demo: &'d mut Demo) -> Fut {
        self(demo)
    }
}

async fn buy(d: &Demo, m: &Machine, request: &str, slot: &str, price: u64) -> Step<Value> {
    let a = d
        .device(
            m,
            "POST",
            &format!("/devices/{}/purchases", m.id),
            Some(json!({"request_id": request, "slot": slot, "price": cny(price)})),
        )
        .await?;
    d.say(format!(
        "machine asks to sell slot {slot} for {} (request {request}): {}, balance {}",
        money(&cny(price)),
        text(&a, "decision"),
        money(&a["balance"])
    ));
    Ok(a)
}

async fn vend(d: &Demo, m: &Machine, request: &str, delivered: bool) -> Step<Value> {
    let s = d
        .device(
            m,
            "POST",
            &format!("/devices/{}/purchases/{request}/result", m.id),
            Some(json!({"delivered": delivered})),
        )
        .await?;
    let detail = if text(&s, "mode") == "purchase_first" {
        format!("order {}", text(&s, "state"))
    } else {
        format!(
            "session {}, balance {}, held {}, spent {}",
            text(&s, "state"),
            money(&s["balance"]),
            money(&s["held"]),
            money(&s["spent"])
        )
    };
    d.say(format!(
        "machine reports {request}: {}; {detail}",
        if delivered {
            "delivered"
        } else {
            "vend failed"
        }
    ));
    Ok(s)
}

async fn place_order(d: &Demo, m: &Machine, order: &str, slot: &str, price: u64) -> Step<Value> {
    let o = d
        .device(
            m,
            "POST",
            &format!("/devices/{}/orders", m.id),
            Some(json!({"order_id": order, "slot": slot, "price": cny(price)})),
        )
        .await?;
    d.say(format!(
        "customer picks slot {slot}; machine registers order {order} for {}: {}, expires at {}",
        money(&cny(price)),
        text(&o, "state"),
        clock_time(&o, "expires_at")
    ));
    Ok(o)
}

async fn pay_first_refund(d: &mut Demo) -> Step<()> {
    let m = d.register("vm-pay-first", "pay_first").await?;
    let trade = d.pay(&m, 1000).await?;
    let s = d
        .wait_status(&m, "the payment to open a session", d.soon(), |s| {
            s["state"] == "open" && minor(&s["balance"]) == 1000
        })
        .await?;
    let session = text(&s, "session_id").to_owned();
    d.say(format!(
        "notification verified and credited: session {session} open, balance {}, deadline at {}",
        money(&s["balance"]),
        clock_time(&s, "deadline_at")
    ));
    let a = buy(d, &m, "p-1", "A1", 350).await?;
    d.check(a["decision"] == "approved", "first purchase approved");
    vend(d, &m, "p-1", true).await?;
    let a = buy(d, &m, "p-2", "A2", 350).await?;
    d.check(
        a["decision"] == "approved",
        "second purchase approved (3.50 held)",
    );
    let s = vend(d, &m, "p-2", false).await?;
    d.check(
        minor(&s["balance"]) == 650,
        format!(
            "the failed vend's hold returned: balance {}",
            money(&s["balance"])
        ),
    );
    d.say(format!(
        "nothing more happens; waiting for the deadline ({} s after the payment)",
        d.windows.pay_first.as_secs()
    ));
    let wait = d.windows.pay_first + d.soon();
    d.watch_session(&session, "the deadline refund", wait, |s| {
        s["phase"] == "closed"
            && list(s, "refunds")
                .iter()
                .all(|r| r["status"] == "succeeded")
    })
    .await?;
    let status = d.status(&m).await?;
    d.say(format!("machine sees: {}", text(&status, "state")));
    d.verify(
        &session,
        &trade,
        Expect {
            phase: "closed",
            spent: 350,
            payments: 1,
            refunds: &[(650, "settlement")],
        },
    )
    .await
}

async fn pay_first_used_up(d: &mut Demo) -> Step<()> {
    let m = d.register("vm-used-up", "pay_first").await?;
    let trade = d.pay(&m, 700).await?;
    let s = d
        .wait_status(&m, "the payment to open a session", d.soon(), |s| {
            s["state"] == "open" && minor(&s["balance"]) == 700
        })
        .await?;
    let session = text(&s, "session_id").to_owned();
    d.say(format!(
        "session {session} open, balance {}",
        money(&s["balance"])
    ));
    buy(d, &m, "p-1", "B1", 350).await?;
    vend(d, &m, "p-1", true).await?;
    buy(d, &m, "p-2", "B2", 350).await?;
    let s = vend(d, &m, "p-2", true).await?;
    d.check(
        s["state"] == "closed",
        format!(
            "the balance reached zero: the session closed at once ({})",
            text(&s, "state")
        ),
    );
    let status = d.status(&m).await?;
    d.say(format!("machine sees: {}", text(&status, "state")));
    d.check(status["state"] == "idle", "the machine is idle again");
    d.verify(
        &session,
        &trade,
        Expect {
            phase: "closed",
            spent: 700,
            payments: 1,
            refunds: &[],
        },
    )
    .await
}

async fn purchase_first_overpaid(d: &mut Demo) -> Step<()> {
    let m = d.register("vm-order", "purchase_first").await?;
    let o = place_order(d, &m, "o-1", "C1", 400).await?;
    let session = text(&o, "session_id").to_owned();
    let trade = d.pay(&m, 500).await?;
    let paid_at = Instant::now();
    let s = d
        .wait_status(&m, "the order to be paid", d.soon(), |s| {
            s["state"] == "paid"
        })
        .await?;
    d.say(format!(
        "machine sees order {} paid ({} for a {} item): it vends now",
        text(&s, "order_id"),
        money(&s["paid"]),
        money(&s["price"])
    ));
    let detail = d.session(&session).await?;
    d.check(
        list(&detail, "refunds")
            .iter()
            .any(|r| minor(&r["amount"]) == 100 && r["reason"] == "overpayment"),
        "the 1.00 over-payment refund was recorded with the payment",
    );
    d.watch_session(&session, "the over-payment refund", d.soon(), |s| {
        list(s, "refunds")
            .iter()
            .any(|r| r["status"] == "succeeded")
    })
    .await?;
    d.say(format!(
        "over-payment refunded {:.2} s after the customer paid, before the machine vended",
        paid_at.elapsed().as_secs_f64()
    ));
    vend(d, &m, "o-1", true).await?;
    d.watch_session(&session, "the order to close", d.soon(), |s| {
        s["phase"] == "closed"
    })
    .await?;
    d.verify(
        &session,
        &trade,
        Expect {
            phase: "closed",
            spent: 400,
            payments: 1,
            refunds: &[(100, "overpayment")],
        },
    )
    .await
}

async fn purchase_first_failed(d: &mut Demo) -> Step<()> {
    let m = d.register("vm-jammed", "purchase_first").await?;
    let o = place_order(d, &m, "o-1", "D1", 400).await?;
    let session = text(&o, "session_id").to_owned();
    let trade = d.pay(&m, 400).await?;
    d.wait_status(&m, "the order to be paid", d.soon(), |s| {
        s["state"] == "paid"
    })
    .await?;
    d.say("machine sees the order paid and tries to vend; the item jams");
    vend(d, &m, "o-1", false).await?;
    d.watch_session(&session, "the full refund", d.soon(), |s| {
        s["phase"] == "closed"
            && list(s, "refunds")
                .iter()
                .all(|r| r["status"] == "succeeded")
    })
    .await?;
    d.verify(
        &session,
        &trade,
        Expect {
            phase: "closed",
            spent: 0,
            payments: 1,
            refunds: &[(400, "vend_failed")],
        },
    )
    .await
}

async fn late_payment(d: &mut Demo) -> Step<()> {
    let m = d.register("vm-late", "purchase_first").await?;
    let o = place_order(d, &m, "o-1", "E1", 200).await?;
    let order_session = text(&o, "session_id").to_owned();
    d.say(format!(
        "the customer walks away; waiting for the order to expire ({} s)",
        d.windows.order_payment.as_secs()
    ));
    let wait = d.windows.order_payment + d.soon();
    d.wait_status(&m, "the order to expire", wait, |s| s["state"] == "idle")
        .await?;
    let expired = d.session(&order_session).await?;
    d.say(format!(
        "order {}: {}",
        text(&expired, "order_id"),
        text(&expired, "order_status")
    ));
    d.check(
        expired["order_status"] == "expired",
        format!("the order expired ({})", text(&expired, "order_status")),
    );
    let trade = d.pay(&m, 200).await?;
    let refused = format!("r:{trade}");
    d.watch_session(&refused, "the late payment's refund", d.soon(), |s| {
        s["phase"] == "closed"
            && !list(s, "refunds").is_empty()
            && list(s, "refunds")
                .iter()
                .all(|r| r["status"] == "succeeded")
    })
    .await?;
    let status = d.status(&m).await?;
    d.check(
        status["state"] == "idle",
        format!("the machine stays idle ({})", text(&status, "state")),
    );
    d.verify(
        &refused,
        &trade,
        Expect {
            phase: "closed",
            spent: 0,
            payments: 1,
            refunds: &[(200, "refused_*")],
        },
    )
    .await
}

async fn duplicated_notification(d: &mut Demo) -> Step<()> {
    let m = d.register("vm-dup", "pay_first").await?;
    d.ok(
        "POST",
        "/sandbox/faults",
        &[],
        Some(json!({"notifications": ["duplicate"]}).to_string()),
    )
    .await?;
    d.say("sandbox switch: the next notification is sent again after its first `success`");
    let trade = d.pay(&m, 500).await?;
    let deliveries = d
        .poll(
            "both notification deliveries",
            d.soon(),
            || d.ok("GET", "/sandbox/deliveries", &[], None),
            |v| {
                v.as_array()
                    .into_iter()
                    .flatten()
                    .filter(|x| text(x, "trade_no") == trade)
                    .count()
                    >= 2
            },
        )
        .await?;
    let answers: Vec<String> = deliveries
        .as_array()
        .into_iter()
        .flatten()
        .filter(|x| text(x, "trade_no") == trade)
        .map(|x| format!("#{} → {}", x["attempt"], text(x, "answer")))
        .collect();
    d.say(format!(
        "Alipay delivered the notification twice: {}",
        answers.join(", ")
    ));
    d.check(
        answers.len() == 2 && answers.iter().all(|a| a.ends_with("success")),
        "both deliveries acknowledged with `success`",
    );
    let s = d.status(&m).await?;
    let session = text(&s, "session_id").to_owned();
    d.say(format!(
        "session {session}: {}, balance {}",
        text(&s, "state"),
        money(&s["balance"])
    ));
    d.check(
        minor(&s["balance"]) == 500,
        format!("credited once: balance {}", money(&s["balance"])),
    );
    // The machine names the session it means, so a retried or replayed end cannot end the next one.
    let ended = d
        .device(
            &m,
            "POST",
            &format!("/devices/{}/session/end", m.id),
            Some(serde_json::json!({ "session_id": session })),
        )
        .await?;
    d.say(format!(
        "customer presses \"return change\": session {}",
        text(&ended, "state")
    ));
    d.watch_session(&session, "the change to be refunded", d.soon(), |s| {
        s["phase"] == "closed"
            && list(s, "refunds")
                .iter()
                .all(|r| r["status"] == "succeeded")
    })
    .await?;
    d.verify(
        &session,
        &trade,
        Expect {
            phase: "closed",
            spent: 0,
            payments: 1,
            refunds: &[(500, "settlement")],
        },
    )
    .await
}
