//! `vendpay demo`: both flows end to end, printed as a timeline and checked.
//!
//! It starts its own [`Server`](crate::server::Server) (a temporary SQLite database, the in-process
//! Alipay sandbox, an ephemeral port) through the very configuration path `vendpay serve` uses
//! ([`local`]), then acts as operator, machines and customers **over HTTP** through the test kit client
//! (`vendpay-client`): machines sign their requests, customers pay through `POST /sandbox/pay` so the
//! sandbox POSTs a really signed notification back (which the server checks with `notify_verify`), and
//! refunds really go to the sandbox's `gateway.do`.
//!
//! Each scenario ends with checks against `GET /admin/sessions/{id}` (phase, spent, refunds, the money
//! invariant) and `GET /sandbox/refunds` (what the sandbox confirmed); the inventory scenario also
//! reads `GET /admin/devices/{id}/inventory` (stock and reservations after each step) and
//! `GET /admin/inventory` (the restocking round). Any failed check makes
//! [`run`] return `Ok(false)`, and the command exit non-zero.
//!
//! - this file: the runner, the timeline (`say`) and the record of checks;
//! - [`steps`]: what operator, customers and machines do, each step printed on the timeline;
//! - [`checks`]: the final checks of a scenario;
//! - [`view`]: how answers are printed;
//! - [`pay_first`], [`purchase_first`] and [`inventory`]: the scenarios;
//! - [`local`]: the local server (shared with `vendpay load`).

mod checks;
mod inventory;
mod pay_first;
mod purchase_first;
mod steps;
mod view;

use std::future::Future;
use std::time::{Duration, Instant};

use vendpay_client::{Client, ClientError};
use vendpay_domain::Windows;

use crate::local::{self, LocalError, WindowSecs};

/// Short windows by default so the demo takes seconds; `--real-time` uses the default windows.
pub struct Options {
    pub real_time: bool,
}

/// The demo could not run at all (a scenario that goes wrong is a failed check, not this).
pub type DemoError = LocalError;

/// A step that went wrong: the scenario stops and counts as failed.
type Step<T> = Result<T, ClientError>;

const ADMIN_TOKEN: &str = "vendpay-demo-admin-token";

/// Runs every scenario; `Ok(true)` when every check passed.
pub async fn run(options: Options) -> Result<bool, DemoError> {
    let windows = if options.real_time {
        WindowSecs {
            pay_first: "300",
            purchase_first: "25",
            order_payment: "120",
        }
    } else {
        WindowSecs {
            pay_first: "3",
            purchase_first: "2",
            order_payment: "3",
        }
    };
    let http = reqwest::Client::builder().timeout(Duration::from_secs(20));
    let local = local::start("demo.sqlite", windows, ADMIN_TOKEN, http).await?;
    let windows = local.windows;
    let mut demo = Demo {
        client: local.client.clone(),
        t0: Instant::now(),
        windows,
        scenario: String::new(),
        checks: 0,
        failures: Vec::new(),
    };

    println!(
        "vendpay demo: server {} on a temporary SQLite database; Alipay sandbox in-process at {}",
        demo.client.base(),
        local.server.gateway_url
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
        pay_first::refund_at_the_deadline,
    )
    .await;
    demo.scenario(
        "2. Pay first, used up: pay 7.00, buy 3.50 twice, closed at once without a refund",
        pay_first::used_up,
    )
    .await;
    demo.scenario(
        "3. Purchase first: order 4.00, pay 5.00, 1.00 refunded at once, delivered",
        purchase_first::overpaid,
    )
    .await;
    demo.scenario(
        "4. Purchase first, delivery fails: order 4.00, pay 4.00, full refund",
        purchase_first::vend_failed,
    )
    .await;
    demo.scenario(
        "5. A late payment: the order expired before the customer paid, full refund",
        purchase_first::late_payment,
    )
    .await;
    demo.scenario(
        "6. A duplicated notification: Alipay sends it twice, the payment is credited once",
        pay_first::duplicated_notification,
    )
    .await;
    demo.scenario(
        "7. Catalogue and inventory: the last item sold at the server's price, sold out, restocked, the restocking round",
        inventory::sold_out_and_restocked,
    )
    .await;

    local.server.shutdown().await;
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
    client: Client,
    t0: Instant,
    windows: Windows,
    scenario: String,
    checks: usize,
    failures: Vec<String>,
}

impl Demo {
    /// One line of the timeline.
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

    /// How long to wait for something the server does at once (a notification round trip, a refund).
    fn soon(&self) -> Duration {
        Duration::from_secs(10)
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
