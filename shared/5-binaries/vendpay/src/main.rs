//! The `vendpay` command: `vendpay serve`, `vendpay demo`, `vendpay load`, `vendpay simulate` and `vendpay report` (see the crate's library for the parts).

use std::io::IsTerminal;
use std::process::ExitCode;

use tracing_subscriber::EnvFilter;
use vendpay::server::{DeviceKeySource, ServerStore};
use vendpay::{Config, Server};

const USAGE: &str = "\
usage:
  vendpay serve [--store sqlite|aws] [--create-missing] [--sandbox]
                                   serve every route on VENDPAY_LISTEN (default 127.0.0.1:8080), on
                                   SQLite (VENDPAY_DB) or on DynamoDB + SQS (TABLE_NAME,
                                   DEADLINE_QUEUE_URL, REFUND_QUEUE_URL; AWS_ENDPOINT_URL for an
                                   emulator); --create-missing creates the table and queues;
                                   --sandbox uses the in-process Alipay sandbox with --store aws
                                   (without a gateway, --store aws refuses to start)
  vendpay aws-setup                create the DynamoDB table and SQS queues that are missing (as
                                   serve --store aws --create-missing) and print `export` lines of
                                   TABLE_NAME, DEADLINE_QUEUE_URL, REFUND_QUEUE_URL for the shell
  vendpay demo [--real-time]       run both flows and the inventory scene end to end and check every
                                   outcome
  vendpay load [--machines N] [--seconds S | --events E] [--concurrency C] [--rounds R]
               [--planogram [--capacity N]]
                                   load benchmark: N machines (200) in pay-first sessions over HTTP for
                                   S seconds (20), C requests in flight (32), R purchases a session (10);
                                   reports events/s, latency and CPU, checks the money of every session;
                                   --planogram: each machine gets a slot map (capacity 1000), filled,
                                   and buys from it without a price (stock checked at the end)
  vendpay simulate [--machines N] [--days D] [--seed S] [--db FILE] [--start YYYY-MM-DD] [--append]
                   [--demand F] [--list-buyers]
                                   fill a SQLite store (--db, default VENDPAY_DB) with N machines (50)
                                   x D days (30) of realistic traffic from 2026-11-01 through the real
                                   ledger on a simulated clock; the same seed (7) writes the same facts
                                   (under one ANALYTICS_KEY or DEVICE_KEY, as serve); refuses a db that
                                   has sessions unless --append; --demand scales every machine's visits (1.0: ~32 sales a machine a day);
                                   the store is written without fsync (synthetic data); --list-buyers prints the buyer ids it
                                   would use and stops
  vendpay report --from YYYY-MM-DD --to YYYY-MM-DD [--format text|json|html] [--out FILE]
                 [--campaign FILE.csv] [--db FILE]
                                   the sales report (docs/sales.md) over the store's facts (--db,
                                   default VENDPAY_DB), days at REPORT_TZ (+08:00); --campaign writes
                                   district,buyer_key,tags of the hottest districts; exit 2 for a bad
                                   period
  vendpay help

Settings come from the environment (docs/contract.md): VENDPAY_LISTEN, VENDPAY_DB, ADMIN_TOKEN,
PUBLIC_BASE_URL, DEVICE_KEY, PAY_FIRST_WINDOW_SECS, PURCHASE_FIRST_WINDOW_SECS, ORDER_PAYMENT_WINDOW_SECS,
ALIPAY_* (no ALIPAY_GATEWAY_URL on SQLite: an in-process Alipay sandbox); VENDPAY_SANDBOX (true|false,
as --sandbox); VENDPAY_STORE (sqlite|aws, as --store),
VENDPAY_AWS_CREATE (true|false, as --create-missing), TABLE_NAME, DEADLINE_QUEUE_URL, REFUND_QUEUE_URL,
DEADLINE_QUEUE_ARN, SCHEDULER_ROLE_ARN, SCHEDULE_GROUP_NAME and the AWS SDK's own (AWS_ENDPOINT_URL,
AWS_REGION, ...). With --store aws any setting may be a secretsmanager:<id>[#field] or ssm:<name>
reference. Logs: RUST_LOG (default info).";

/// What the command line asked for.
enum Command {
    /// Settings the command line gives (they win over the environment).
    Serve(Vec<(&'static str, String)>),
    Demo {
        real_time: bool,
    },
    Load(vendpay::load::Options),
    Simulate(vendpay::simulate::Options),
    Report(vendpay::report::Options),
    AwsSetup,
    Help,
}

fn parse_args(args: &[String]) -> Result<Command, String> {
    let rest: Vec<&str> = args.iter().skip(1).map(String::as_str).collect();
    match rest.as_slice() {
        [] | ["help" | "--help" | "-h"] => Ok(Command::Help),
        ["serve", flags @ ..] => {
            let mut overrides = Vec::new();
            let mut i = 0;
            while i < flags.len() {
                if flags[i] == "--create-missing" {
                    overrides.push(("VENDPAY_AWS_CREATE", "true".to_owned()));
                    i += 1;
                    continue;
                }
                if flags[i] == "--sandbox" {
                    overrides.push(("VENDPAY_SANDBOX", "true".to_owned()));
                    i += 1;
                    continue;
                }
                let store = match flags[i] {
                    "--store" => {
                        i += 1;
                        Some(flags.get(i).copied().unwrap_or(""))
                    }
                    f => f.strip_prefix("--store="),
                };
                match store {
                    Some(s @ ("sqlite" | "aws")) => overrides.push(("VENDPAY_STORE", s.to_owned())),
                    Some(other) => {
                        return Err(format!("--store {other:?}: the stores are sqlite and aws"))
                    }
                    None => return Err(format!("unknown option {:?}\n\n{USAGE}", flags[i])),
                }
                i += 1;
            }
            Ok(Command::Serve(overrides))
        }
        ["aws-setup"] => Ok(Command::AwsSetup),
        ["demo"] => Ok(Command::Demo { real_time: false }),
        ["demo", "--real-time"] => Ok(Command::Demo { real_time: true }),
        ["load", flags @ ..] => Ok(Command::Load(vendpay::load::Options::parse(flags)?)),
        ["simulate", flags @ ..] => {
            Ok(Command::Simulate(vendpay::simulate::Options::parse(flags)?))
        }
        ["report", flags @ ..] => vendpay::report::Options::parse(flags)
            .map(Command::Report)
            .map_err(|e| e.to_string()),
        _ => Err(format!("unknown command {:?}\n\n{USAGE}", rest.join(" "))),
    }
}

fn init_logging(default: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    // A second init only fails if something set a subscriber already; logging then goes there.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .try_init();
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let command = match parse_args(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("vendpay: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("vendpay: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match command {
        Command::Help => {
            println!("{USAGE}");
            ExitCode::SUCCESS
        }
        Command::Serve(overrides) => {
            init_logging("info");
            runtime.block_on(serve(overrides))
        }
        Command::AwsSetup => {
            init_logging("info");
            let setup = async {
                let env = vendpay_lambda::Env::from_process(vendpay::config::AWS_SETTINGS)?;
                vendpay::aws::setup(&env).await
            };
            match runtime.block_on(setup) {
                Ok(exports) => {
                    print!("{exports}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("vendpay aws-setup: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Demo { real_time } => {
            // The timeline goes to stdout; only warnings and errors are logged unless RUST_LOG says more.
            init_logging("warn");
            match runtime.block_on(vendpay::demo::run(vendpay::demo::Options { real_time })) {
                Ok(true) => ExitCode::SUCCESS,
                Ok(false) => ExitCode::FAILURE,
                Err(e) => {
                    eprintln!("vendpay demo: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Load(options) => {
            init_logging("warn");
            match runtime.block_on(vendpay::load::run(options)) {
                Ok(true) => ExitCode::SUCCESS,
                Ok(false) => ExitCode::FAILURE,
                Err(e) => {
                    eprintln!("vendpay load: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Report(options) => {
            init_logging("warn");
            match runtime.block_on(vendpay::report::run(&options)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("vendpay report: {e}");
                    ExitCode::from(e.exit_code())
                }
            }
        }
        Command::Simulate(options) => {
            // The summary goes to stdout, progress to stderr. The ledger's own alerts (anomalies,
            // refused refunds) are what the simulation makes on purpose and the summary counts them.
            init_logging("warn,vendpay_app=off");
            match runtime.block_on(vendpay::simulate::cli(options)) {
                Ok(true) => ExitCode::SUCCESS,
                Ok(false) => ExitCode::FAILURE,
                Err(e) => {
                    eprintln!("vendpay simulate: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

async fn serve(overrides: Vec<(&'static str, String)>) -> ExitCode {
    let config = match read_config(&overrides).await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("vendpay: configuration: {e}");
            return ExitCode::FAILURE;
        }
    };
    for name in &config.ignored {
        tracing::warn!(
            setting = name,
            "ignored: ALIPAY_GATEWAY_URL is not set, so the in-process sandbox is used"
        );
    }
    let sandbox = config.is_sandbox();
    let db = config.db.display().to_string();
    let windows = config.windows;
    let server = match Server::start(config).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("vendpay: {e}");
            return ExitCode::FAILURE;
        }
    };
    let url = server.local_url();
    println!("vendpay: listening on {url}");
    match &server.store {
        ServerStore::Sqlite { rearmed, .. } => println!(
            "vendpay: store sqlite at {db}; re-armed {} deadline(s) and {} refund(s)",
            rearmed.deadlines, rearmed.refunds
        ),
        ServerStore::Aws(r) => {
            println!(
                "vendpay: store aws: table {}, deadline queue {}, refund queue {}",
                r.table, r.deadline_queue_url, r.refund_queue_url
            );
            if !r.created.is_empty() {
                println!("vendpay: created {}", r.created.join(", "));
            }
            println!(
                "vendpay: polling both queues (long polls of {} s) and sweeping overdue sessions every {} s",
                vendpay::aws::WAIT_TIME_SECS,
                vendpay::aws::SWEEP_EVERY.as_secs()
            );
        }
    }
    println!(
        "vendpay: windows pay first {} s, purchase first {} s, order payment {} s",
        windows.pay_first.as_secs(),
        windows.purchase_first.as_secs(),
        windows.order_payment.as_secs()
    );
    if sandbox {
        println!(
            "vendpay: Alipay SANDBOX mode (in-process, built-in TEST keys, no real money) at {}",
            server.gateway_url
        );
        println!(
            "vendpay: the sandbox's trades are journalled beside VENDPAY_DB ({} restored), so refunds after a restart still find them; its QR codes are not",
            server.sandbox_trades_restored
        );
        println!("vendpay: a customer pays a machine with POST {url}/sandbox/pay {{\"device_id\", \"amount\": {{\"minor\", \"currency\"}}}}");
        tracing::warn!(gateway = %server.gateway_url, "Alipay sandbox mode: set ALIPAY_GATEWAY_URL, ALIPAY_PARTNER_ID and keys to talk to Alipay");
    } else {
        println!("vendpay: Alipay gateway {}", server.gateway_url);
    }
    println!(
        "vendpay: notifications come back to {}/alipay/notify/{{device_id}}",
        server.public_base_url
    );
    match &server.device_key_source {
        DeviceKeySource::Setting => println!("vendpay: device key from DEVICE_KEY"),
        DeviceKeySource::File { path, created } => println!(
            "vendpay: device key {} {}",
            if *created { "created in" } else { "read from" },
            path.display()
        ),
    }
    if let Some(path) = &server.admin_token_file {
        // The path, never the token: stdout often ends up in logs that outlive the token's secrecy.
        println!(
            "vendpay: ADMIN_TOKEN was not set; the admin token is in {} (mode 0600)",
            path.display()
        );
    }
    tracing::info!(addr = %server.addr, sandbox, "vendpay serve started");
    server.run_until(shutdown_signal()).await;
    tracing::info!("vendpay serve stopped");
    ExitCode::SUCCESS
}

/// The configuration from the environment with the command line's settings on top. With the AWS store,
/// secret references (`secretsmanager:...`, `ssm:...`) are resolved first, as the Lambda functions do.
async fn read_config(overrides: &[(&'static str, String)]) -> Result<Config, String> {
    let mut names: Vec<&'static str> = vendpay::config::SETTINGS.to_vec();
    for n in &vendpay_lambda::setting_groups::names(vendpay_lambda::setting_groups::ALL) {
        if !names.contains(n) {
            names.push(n);
        }
    }
    let env = vendpay_lambda::Env::from_process(&names).map_err(|e| e.to_string())?;
    let mut pairs: Vec<(String, String)> = names
        .iter()
        .filter_map(|&n| env.get(n).map(|v| (n.to_owned(), v)))
        .filter(|(n, _)| !overrides.iter().any(|(o, _)| o == n))
        .collect();
    pairs.extend(overrides.iter().map(|(n, v)| ((*n).to_owned(), v.clone())));
    let env = vendpay_lambda::Env::from_pairs(pairs);
    let aws = env
        .get("VENDPAY_STORE")
        .is_some_and(|s| s.eq_ignore_ascii_case("aws"));
    let env = if aws {
        let sdk = vendpay_lambda::wiring::sdk_config().await;
        env.resolve(&sdk).await.map_err(|e| e.to_string())?
    } else {
        env
    };
    Config::from_lookup(env.lookup()).map_err(|e| e.to_string())
}

/// SIGINT (Ctrl-C) or SIGTERM.
async fn shutdown_signal() {
    let interrupt = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => tracing::info!("SIGINT received"),
        () = terminate => tracing::info!("SIGTERM received"),
    }
}
