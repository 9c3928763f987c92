//! `vendpay serve`'s configuration (see `docs/contract.md`, “Configuration”), read once at
//! start-up.
//!
//! [`Config::from_env`] snapshots the environment and [`Config::from_lookup`] parses it; tests and the
//! demo call `from_lookup` with a map, so they go through exactly the checks `serve` does. Every missing
//! or malformed setting is a [`ConfigError`] whose message starts with the setting's name: start-up stops
//! there, never later inside a handler.
//!
//! With no `ALIPAY_GATEWAY_URL` the server runs the Alipay sandbox in-process ([`AlipayMode::Sandbox`]);
//! the `ALIPAY_*` keys are then the sandbox's built-in test keys and the merchant fields get harmless
//! defaults. With it, every gateway setting is required and checked here ([`AlipayMode::Gateway`]).
//!
//! The store is SQLite at `VENDPAY_DB` unless `VENDPAY_STORE=aws` (or `vendpay serve --store aws`):
//! then [`StoreConfig::Aws`] holds the AWS settings exactly as the Lambda functions read them
//! (`vendpay_lambda::Env`: `TABLE_NAME`, `DEADLINE_QUEUE_URL`, `REFUND_QUEUE_URL`, optional
//! `DEADLINE_QUEUE_ARN` + `SCHEDULER_ROLE_ARN` + `SCHEDULE_GROUP_NAME`), and `VENDPAY_AWS_CREATE=true`
//! (or `--create-missing`) lets the server create the table and queues that do not exist yet.
//!
//! Every setting of the binary is parsed here, once, so each error names its setting; the length is
//! the list of settings and their tests.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use vendpay_alipay::{AlipayConfig, MerchantProfile, Verifier};
use vendpay_api::auth::analytics_key_from_hex;
use vendpay_api::{settings, DeviceKey};
use vendpay_domain::facts::AnalyticsKey;

/// Report days are China's unless `REPORT_TZ` says otherwise (Alipay's day is GMT+8 too).
pub const DEFAULT_REPORT_TZ: &str = "+08:00";
use vendpay_domain::Windows;
use vendpay_lambda::Env;

pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
pub const DEFAULT_DB: &str = "vendpay.sqlite";
pub use settings::{MAX_WINDOW_SECS, MIN_ADMIN_TOKEN_LEN};

/// Every setting `vendpay serve` reads; [`Config::from_env`] snapshots exactly these.
pub const SETTINGS: &[&str] = &[
    "VENDPAY_LISTEN",
    "VENDPAY_DB",
    "PAY_FIRST_WINDOW_SECS",
    "PURCHASE_FIRST_WINDOW_SECS",
    "ORDER_PAYMENT_WINDOW_SECS",
    "ADMIN_TOKEN",
    "PUBLIC_BASE_URL",
    "DEVICE_KEY",
    "ANALYTICS_KEY",
    "REPORT_TZ",
    "ALIPAY_GATEWAY_URL",
    "ALIPAY_PARTNER_ID",
    "ALIPAY_SIGN_TYPE",
    "ALIPAY_PRIVATE_KEY",
    "ALIPAY_PUBLIC_KEY",
    "ALIPAY_MD5_KEY",
    "ALIPAY_NOTIFY_VERIFY",
    "ALIPAY_SECONDARY_MERCHANT_ID",
    "ALIPAY_SECONDARY_MERCHANT_NAME",
    "ALIPAY_MERCHANT_INDUSTRY",
    "ALIPAY_SETTLEMENT_CURRENCY",
    "ALIPAY_COUNTRY_CODE",
    "VENDPAY_STORE",
    "VENDPAY_SANDBOX",
    "VENDPAY_AWS_CREATE",
    "TABLE_NAME",
    "DEADLINE_QUEUE_URL",
    "REFUND_QUEUE_URL",
    "DEADLINE_QUEUE_ARN",
    "SCHEDULER_ROLE_ARN",
    "SCHEDULE_GROUP_NAME",
];

/// The AWS resources `--store aws` uses (with the window settings, which it reads the same way).
pub const AWS_SETTINGS: &[&str] = &[
    "TABLE_NAME",
    "DEADLINE_QUEUE_URL",
    "REFUND_QUEUE_URL",
    "DEADLINE_QUEUE_ARN",
    "SCHEDULER_ROLE_ARN",
    "SCHEDULE_GROUP_NAME",
    "PAY_FIRST_WINDOW_SECS",
    "PURCHASE_FIRST_WINDOW_SECS",
    "ORDER_PAYMENT_WINDOW_SECS",
    "ANALYTICS_KEY",
];

/// The table `--store aws` creates when `TABLE_NAME` is not set (only with `VENDPAY_AWS_CREATE=true`).
pub const DEFAULT_TABLE_NAME: &str = "vendpay";

/// Merchant fields used with the sandbox when none are configured (the sandbox only checks they exist).
const SANDBOX_MERCHANT_DEFAULTS: &[(&str, &str)] = &[
    ("ALIPAY_SECONDARY_MERCHANT_ID", "vendpay_local"),
    ("ALIPAY_SECONDARY_MERCHANT_NAME", "vendpay local vending"),
    ("ALIPAY_MERCHANT_INDUSTRY", "5499"),
    ("ALIPAY_SETTLEMENT_CURRENCY", "CNY"),
];

/// A setting that stops start-up. The message always names the setting.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("{setting}: {reason}")]
    Invalid {
        setting: &'static str,
        reason: String,
    },
    #[error(transparent)]
    Setting(#[from] settings::SettingError),
    /// An Alipay setting (its message names the setting).
    #[error(transparent)]
    Alipay(#[from] vendpay_alipay::AlipayConfigError),
    /// `DEVICE_KEY` (its message names the setting).
    #[error(transparent)]
    DeviceKey(#[from] vendpay_api::auth::KeyError),
}

fn invalid(setting: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        setting,
        reason: reason.into(),
    }
}

/// Which Alipay the server talks to.
pub enum AlipayMode {
    /// No `ALIPAY_GATEWAY_URL`: the sandbox runs in-process with its built-in test keys.
    Sandbox,
    /// A real (or external) gateway, fully configured.
    Gateway {
        /// For the client (requests, answers).
        config: Arc<AlipayConfig>,
        /// The same keys again, for the notification route (a `Verifier` cannot be shared or cloned).
        notify_verifier: Arc<Verifier>,
    },
}

/// Where the money lives.
#[derive(Debug, Clone)]
pub enum StoreConfig {
    /// The embedded store at [`Config::db`], with in-process timers (the default).
    Sqlite,
    /// DynamoDB + SQS (+ EventBridge Scheduler beyond 15 minutes), as the Lambda functions use them.
    Aws(AwsConfig),
}

/// `--store aws`: the settings the Lambda functions' wiring reads, and whether to create what is missing.
#[derive(Debug, Clone)]
pub struct AwsConfig {
    /// [`AWS_SETTINGS`] as given (values are never printed).
    pub env: Env,
    /// `VENDPAY_AWS_CREATE` / `--create-missing`: create the table and the two queues if they do not
    /// exist. Then `TABLE_NAME` defaults to [`DEFAULT_TABLE_NAME`] and the queues to
    /// `<TABLE_NAME>-deadlines` and `<TABLE_NAME>-refunds` (or the names at the end of the given URLs).
    pub create_missing: bool,
}

/// The whole configuration of `vendpay serve`.
pub struct Config {
    pub listen: SocketAddr,
    /// The SQLite database; with `--store aws` only the device key file (and the sandbox's trade
    /// journal) are kept beside it.
    pub db: PathBuf,
    pub store: StoreConfig,
    pub windows: Windows,
    /// `None`: generate one at start and print it once.
    pub admin_token: Option<String>,
    /// `None`: `http://<listen address>`.
    pub public_base_url: Option<String>,
    /// `None`: kept in `<VENDPAY_DB>.device-key` (created on first start).
    pub device_key: Option<DeviceKey>,
    /// `ANALYTICS_KEY`; `None`: derived from the device key.
    pub analytics_key: Option<AnalyticsKey>,
    /// `REPORT_TZ`: the fixed offset report days are in (`+08:00`).
    pub report_tz: String,
    /// `ALIPAY_NOTIFY_VERIFY`.
    pub notify_verify: bool,
    pub alipay: AlipayMode,
    pub merchant: MerchantProfile,
    /// Settings that were given but have no effect (e.g. Alipay keys without a gateway URL).
    pub ignored: Vec<&'static str>,
}

/// Secrets stay out of logs and test failure messages.
impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mode = match &self.alipay {
            AlipayMode::Sandbox => "sandbox".to_owned(),
            AlipayMode::Gateway { config, .. } => format!("gateway {}", config.gateway_url),
        };
        f.debug_struct("Config")
            .field("listen", &self.listen)
            .field("db", &self.db)
            .field("store", &self.store)
            .field("windows", &self.windows)
            .field("admin_token", &self.admin_token.as_ref().map(|_| "<set>"))
            .field("public_base_url", &self.public_base_url)
            .field("device_key", &self.device_key.as_ref().map(|_| "<set>"))
            .field(
                "analytics_key",
                &self.analytics_key.as_ref().map(|_| "<set>"),
            )
            .field("report_tz", &self.report_tz)
            .field("notify_verify", &self.notify_verify)
            .field("alipay", &mode)
            .field("merchant", &self.merchant)
            .field("ignored", &self.ignored)
            .finish()
    }
}

impl Config {
    /// Reads every setting of [`SETTINGS`] from the process environment, once.
    pub fn from_env() -> Result<Config, ConfigError> {
        let mut snapshot = HashMap::new();
        for &name in SETTINGS {
            match std::env::var(name) {
                Ok(v) => {
                    snapshot.insert(name, v);
                }
                Err(std::env::VarError::NotPresent) => {}
                Err(std::env::VarError::NotUnicode(_)) => {
                    return Err(invalid(name, "is not valid UTF-8"))
                }
            }
        }
        Config::from_lookup(|name| snapshot.get(name).cloned())
    }

    /// Parses the settings `get` returns. Empty or blank values count as absent.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let opt = |name: &str| {
            get(name)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };

        let listen_raw = opt("VENDPAY_LISTEN").unwrap_or_else(|| DEFAULT_LISTEN.to_owned());
        let listen: SocketAddr = listen_raw.parse().map_err(|_| {
            invalid(
                "VENDPAY_LISTEN",
                format!("{listen_raw:?} is not an IP address and port such as 127.0.0.1:8080"),
            )
        })?;
        let db = PathBuf::from(opt("VENDPAY_DB").unwrap_or_else(|| DEFAULT_DB.to_owned()));
        let store = store_config(&get)?;

        let windows = settings::windows(&get)?;

        let admin_token = settings::admin_token(&get)?;

        let public_base_url = opt("PUBLIC_BASE_URL")
            .map(|u| settings::base_url(&u))
            .transpose()?;

        let device_key = opt("DEVICE_KEY")
            .map(|k| DeviceKey::from_hex("DEVICE_KEY", &k))
            .transpose()?;

        let analytics_key = opt("ANALYTICS_KEY")
            .map(|k| analytics_key_from_hex("ANALYTICS_KEY", &k))
            .transpose()?;

        let report_tz = opt("REPORT_TZ").unwrap_or_else(|| DEFAULT_REPORT_TZ.to_owned());
        vendpay_insight::parse_offset(&report_tz)
            .map_err(|e| invalid("REPORT_TZ", e.to_string()))?;

        let notify_verify = settings::notify_verify(&get)?;

        let sandbox_asked = flag(&get, "VENDPAY_SANDBOX")?;
        let gateway = opt("ALIPAY_GATEWAY_URL").is_some();
        if sandbox_asked && gateway {
            return Err(invalid(
                "VENDPAY_SANDBOX",
                "--sandbox and ALIPAY_GATEWAY_URL exclude each other: choose one Alipay",
            ));
        }
        if matches!(store, StoreConfig::Aws(_)) && !gateway && !sandbox_asked {
            // A real table and refund queue driven against a fake Alipay would record real refunds
            // as failed and overwrite real QR codes: the sandbox there is only ever asked for.
            return Err(invalid(
                "ALIPAY_GATEWAY_URL",
                "is not set: with --store aws vendpay talks to a real Alipay gateway (set ALIPAY_GATEWAY_URL, ALIPAY_PARTNER_ID and the keys), or give --sandbox (VENDPAY_SANDBOX=true) to use the in-process sandbox against this table and queues",
            ));
        }

        let mut ignored = Vec::new();
        let (alipay, merchant) = if gateway {
            let config = AlipayConfig::from_lookup(|n| get(n))?;
            let notify_verifier = AlipayConfig::from_lookup(|n| get(n))?.verifier;
            let merchant = MerchantProfile::from_lookup(|n| get(n))?;
            (
                AlipayMode::Gateway {
                    config: Arc::new(config),
                    notify_verifier: Arc::new(notify_verifier),
                },
                merchant,
            )
        } else {
            for name in [
                "ALIPAY_PARTNER_ID",
                "ALIPAY_SIGN_TYPE",
                "ALIPAY_PRIVATE_KEY",
                "ALIPAY_PUBLIC_KEY",
                "ALIPAY_MD5_KEY",
            ] {
                if opt(name).is_some() {
                    ignored.push(name);
                }
            }
            // The operator's merchant fields still apply (and are still checked) with the sandbox.
            let merchant = MerchantProfile::from_lookup(|n| {
                opt(n).or_else(|| {
                    SANDBOX_MERCHANT_DEFAULTS
                        .iter()
                        .find(|(k, _)| *k == n)
                        .map(|(_, v)| (*v).to_owned())
                })
            })?;
            (AlipayMode::Sandbox, merchant)
        };

        Ok(Config {
            listen,
            db,
            store,
            windows,
            admin_token,
            public_base_url,
            device_key,
            analytics_key,
            report_tz,
            notify_verify,
            alipay,
            merchant,
            ignored,
        })
    }

    pub fn is_sandbox(&self) -> bool {
        matches!(self.alipay, AlipayMode::Sandbox)
    }

    pub fn is_aws(&self) -> bool {
        matches!(self.store, StoreConfig::Aws(_))
    }
}

/// `VENDPAY_STORE` (`sqlite` or `aws`) and, for `aws`, its settings. Without `VENDPAY_AWS_CREATE=true`
/// the table and both queues must be named; the URLs' form and the Scheduler pair are checked by the
/// Lambda wiring at start-up (with the same messages the functions give).
/// A `true`/`false` setting (any case), `false` when absent.
fn flag(get: &impl Fn(&str) -> Option<String>, name: &'static str) -> Result<bool, ConfigError> {
    match settings::present(get, name)
        .map(|v| v.to_ascii_lowercase())
        .as_deref()
    {
        None | Some("false") => Ok(false),
        Some("true") => Ok(true),
        Some(other) => Err(invalid(
            name,
            format!("{other:?} is neither true nor false"),
        )),
    }
}

fn store_config(get: &impl Fn(&str) -> Option<String>) -> Result<StoreConfig, ConfigError> {
    let store = settings::present(get, "VENDPAY_STORE").unwrap_or_else(|| "sqlite".to_owned());
    match store.to_ascii_lowercase().as_str() {
        "sqlite" => return Ok(StoreConfig::Sqlite),
        "aws" => {}
        _ => {
            return Err(invalid(
                "VENDPAY_STORE",
                format!("{store:?}: the stores are sqlite and aws"),
            ))
        }
    }
    let create_missing = flag(get, "VENDPAY_AWS_CREATE")?;
    let env = Env::from_pairs(
        AWS_SETTINGS
            .iter()
            .filter_map(|&name| settings::present(get, name).map(|v| (name, v))),
    );
    if !create_missing {
        for name in ["TABLE_NAME", "DEADLINE_QUEUE_URL", "REFUND_QUEUE_URL"] {
            if env.get(name).is_none() {
                return Err(invalid(
                    name,
                    "is not set (--store aws needs the table and both queues; set VENDPAY_AWS_CREATE=true or pass --create-missing to create them)",
                ));
            }
        }
    }
    match (env.get("DEADLINE_QUEUE_ARN"), env.get("SCHEDULER_ROLE_ARN")) {
        (Some(_), None) => {
            return Err(invalid(
                "SCHEDULER_ROLE_ARN",
                "is required with DEADLINE_QUEUE_ARN",
            ))
        }
        (None, Some(_)) => {
            return Err(invalid(
                "DEADLINE_QUEUE_ARN",
                "is required with SCHEDULER_ROLE_ARN",
            ))
        }
        _ => {}
    }
    Ok(StoreConfig::Aws(AwsConfig {
        env,
        create_missing,
    }))
}

/// The base URL to use when `PUBLIC_BASE_URL` is not set: the address actually bound, with a wildcard
/// address replaced by loopback (a URL cannot point at 0.0.0.0).
pub fn default_base_url(bound: SocketAddr) -> String {
    let mut addr = bound;
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr {
            SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    format!("http://{addr}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn parse(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Config::from_lookup(|n| map.get(n).cloned())
    }

    fn error_of(pairs: &[(&str, &str)]) -> String {
        match parse(pairs) {
            Ok(c) => panic!("expected an error, got {c:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn defaults_are_the_designs() {
        let c = parse(&[]).expect("defaults");
        assert_eq!(c.listen, "127.0.0.1:8080".parse().expect("addr"));
        assert_eq!(c.db, PathBuf::from("vendpay.sqlite"));
        assert_eq!(c.windows, Windows::default());
        assert_eq!(c.windows.pay_first, Duration::from_secs(300));
        assert_eq!(c.windows.purchase_first, Duration::from_secs(25));
        assert_eq!(c.windows.order_payment, Duration::from_secs(120));
        assert!(c.notify_verify);
        assert!(c.is_sandbox());
        assert!(c.admin_token.is_none() && c.device_key.is_none() && c.public_base_url.is_none());
        assert!(c.ignored.is_empty());
    }

    #[test]
    fn values_are_read() {
        let key = "ab".repeat(32);
        let c = parse(&[
            ("VENDPAY_LISTEN", "0.0.0.0:9000"),
            ("VENDPAY_DB", "/tmp/x.sqlite"),
            ("PAY_FIRST_WINDOW_SECS", "3"),
            ("PURCHASE_FIRST_WINDOW_SECS", " 2 "),
            ("ORDER_PAYMENT_WINDOW_SECS", "4"),
            ("ADMIN_TOKEN", "0123456789abcdef"),
            ("PUBLIC_BASE_URL", "https://pay.example.com/"),
            ("DEVICE_KEY", &key),
            ("ALIPAY_NOTIFY_VERIFY", "FALSE"),
            ("ALIPAY_PARTNER_ID", "2088000000000001"),
        ])
        .expect("config");
        assert_eq!(c.listen.port(), 9000);
        assert_eq!(c.db, PathBuf::from("/tmp/x.sqlite"));
        assert_eq!(c.windows.pay_first, Duration::from_secs(3));
        assert_eq!(c.windows.purchase_first, Duration::from_secs(2));
        assert_eq!(c.windows.order_payment, Duration::from_secs(4));
        assert_eq!(c.admin_token.as_deref(), Some("0123456789abcdef"));
        assert_eq!(
            c.public_base_url.as_deref(),
            Some("https://pay.example.com")
        );
        assert_eq!(c.device_key.as_ref().map(DeviceKey::to_hex), Some(key));
        assert!(!c.notify_verify);
        assert_eq!(c.ignored, ["ALIPAY_PARTNER_ID"]);
    }

    #[test]
    fn blank_values_count_as_absent() {
        let c = parse(&[("VENDPAY_LISTEN", "  "), ("ADMIN_TOKEN", "")]).expect("config");
        assert_eq!(c.listen.port(), 8080);
        assert!(c.admin_token.is_none());
    }

    #[test]
    fn malformed_settings_are_named() {
        let cases: &[(&str, &str)] = &[
            ("VENDPAY_LISTEN", "localhost"),
            ("PAY_FIRST_WINDOW_SECS", "five"),
            ("PAY_FIRST_WINDOW_SECS", "0"),
            ("PURCHASE_FIRST_WINDOW_SECS", "-1"),
            ("ORDER_PAYMENT_WINDOW_SECS", "99999999"),
            ("ADMIN_TOKEN", "short"),
            ("ADMIN_TOKEN", "has a space in the middle"),
            ("PUBLIC_BASE_URL", "pay.example.com"),
            ("PUBLIC_BASE_URL", "https://"),
            ("DEVICE_KEY", "abcd"),
            (
                "DEVICE_KEY",
                "not hex at all, not hex at all, not hex at all, not hex at all",
            ),
            ("ALIPAY_NOTIFY_VERIFY", "maybe"),
            ("ALIPAY_SETTLEMENT_CURRENCY", "XYZ"),
        ];
        for (setting, value) in cases {
            let msg = error_of(&[(setting, value)]);
            assert!(
                msg.starts_with(setting),
                "{setting}={value:?} gave {msg:?}, which does not start with the setting's name"
            );
        }
    }

    #[test]
    fn a_gateway_needs_its_credentials() {
        let msg = error_of(&[("ALIPAY_GATEWAY_URL", "https://mapi.alipay.com/gateway.do")]);
        assert!(msg.contains("ALIPAY_PARTNER_ID"), "{msg}");
        let msg = error_of(&[
            ("ALIPAY_GATEWAY_URL", "https://mapi.alipay.com/gateway.do"),
            ("ALIPAY_PARTNER_ID", "2088000000000001"),
        ]);
        assert!(msg.contains("ALIPAY_PRIVATE_KEY"), "{msg}");
        let msg = error_of(&[("ALIPAY_GATEWAY_URL", "ftp://example.com")]);
        assert!(msg.starts_with("ALIPAY_GATEWAY_URL"), "{msg}");
    }

    #[test]
    fn a_gateway_with_keys_and_merchant_is_accepted() {
        let c = parse(&[
            ("ALIPAY_GATEWAY_URL", "http://127.0.0.1:8091/gateway.do"),
            ("ALIPAY_PARTNER_ID", "2088000000000001"),
            (
                "ALIPAY_PRIVATE_KEY",
                vendpay_alipay_sandbox::TEST_MERCHANT_PRIVATE_KEY,
            ),
            (
                "ALIPAY_PUBLIC_KEY",
                vendpay_alipay_sandbox::TEST_ALIPAY_PUBLIC_KEY,
            ),
            ("ALIPAY_SECONDARY_MERCHANT_ID", "m_1"),
            ("ALIPAY_SECONDARY_MERCHANT_NAME", "Vending Co"),
            ("ALIPAY_MERCHANT_INDUSTRY", "5499"),
            ("ALIPAY_SETTLEMENT_CURRENCY", "USD"),
        ])
        .expect("config");
        assert!(!c.is_sandbox());
        assert_eq!(c.merchant.secondary_merchant_id, "m_1");
        // Without the merchant fields the gateway is refused, naming the first missing one.
        let msg = error_of(&[
            ("ALIPAY_GATEWAY_URL", "http://127.0.0.1:8091/gateway.do"),
            ("ALIPAY_PARTNER_ID", "2088000000000001"),
            (
                "ALIPAY_PRIVATE_KEY",
                vendpay_alipay_sandbox::TEST_MERCHANT_PRIVATE_KEY,
            ),
            (
                "ALIPAY_PUBLIC_KEY",
                vendpay_alipay_sandbox::TEST_ALIPAY_PUBLIC_KEY,
            ),
        ]);
        assert!(msg.contains("ALIPAY_"), "{msg}");
    }

    #[test]
    fn the_store_is_sqlite_unless_aws_is_asked_for() {
        assert!(!parse(&[]).expect("config").is_aws());
        assert!(!parse(&[("VENDPAY_STORE", "sqlite"), ("TABLE_NAME", "t")])
            .expect("config")
            .is_aws());
        let full = [
            ("VENDPAY_STORE", "aws"),
            ("VENDPAY_SANDBOX", "true"),
            ("TABLE_NAME", "vp"),
            (
                "DEADLINE_QUEUE_URL",
                "https://sqs.us-east-1.amazonaws.com/1/vp-d",
            ),
            (
                "REFUND_QUEUE_URL",
                "https://sqs.us-east-1.amazonaws.com/1/vp-r",
            ),
        ];
        match parse(&full).expect("config").store {
            StoreConfig::Aws(a) => {
                assert!(!a.create_missing);
                assert_eq!(a.env.get("TABLE_NAME").as_deref(), Some("vp"));
            }
            StoreConfig::Sqlite => panic!("expected the aws store"),
        }
        // Creating: nothing else is needed.
        match parse(&[
            ("VENDPAY_STORE", "AWS"),
            ("VENDPAY_AWS_CREATE", "TRUE"),
            ("VENDPAY_SANDBOX", "true"),
        ])
        .expect("config")
        .store
        {
            StoreConfig::Aws(a) => assert!(a.create_missing && a.env.get("TABLE_NAME").is_none()),
            StoreConfig::Sqlite => panic!("expected the aws store"),
        }
    }

    #[test]
    fn aws_settings_are_named() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (&[("VENDPAY_STORE", "dynamo")], "VENDPAY_STORE"),
            (&[("VENDPAY_STORE", "aws")], "TABLE_NAME"),
            (
                &[("VENDPAY_STORE", "aws"), ("TABLE_NAME", "t")],
                "DEADLINE_QUEUE_URL",
            ),
            (
                &[
                    ("VENDPAY_STORE", "aws"),
                    ("TABLE_NAME", "t"),
                    ("DEADLINE_QUEUE_URL", "https://q/1/d"),
                ],
                "REFUND_QUEUE_URL",
            ),
            (
                &[("VENDPAY_STORE", "aws"), ("VENDPAY_AWS_CREATE", "yes")],
                "VENDPAY_AWS_CREATE",
            ),
            (
                &[
                    ("VENDPAY_STORE", "aws"),
                    ("VENDPAY_AWS_CREATE", "true"),
                    ("DEADLINE_QUEUE_ARN", "arn:aws:sqs:us-east-1:1:d"),
                ],
                "SCHEDULER_ROLE_ARN",
            ),
            (
                &[
                    ("VENDPAY_STORE", "aws"),
                    ("VENDPAY_AWS_CREATE", "true"),
                    ("SCHEDULER_ROLE_ARN", "arn:aws:iam::1:role/r"),
                ],
                "DEADLINE_QUEUE_ARN",
            ),
        ];
        for (pairs, setting) in cases {
            let msg = error_of(pairs);
            assert!(
                msg.starts_with(setting),
                "{pairs:?} gave {msg:?}, not naming {setting}"
            );
        }
    }

    #[test]
    fn the_default_base_url_is_reachable() {
        assert_eq!(
            default_base_url("0.0.0.0:8080".parse().expect("addr")),
            "http://127.0.0.1:8080"
        );
        assert_eq!(
            default_base_url("127.0.0.1:9".parse().expect("addr")),
            "http://127.0.0.1:9"
        );
    }
}
