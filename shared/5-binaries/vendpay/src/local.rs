//! The server `vendpay demo` and `vendpay load` run against: a [`Server`] started through the
//! configuration path `vendpay serve` uses, on a temporary SQLite database with the in-process Alipay
//! sandbox and an ephemeral port, and a [`Client`] of it holding the admin token.

use std::collections::HashMap;

use vendpay_client::{Client, ClientError};
use vendpay_domain::Windows;

use crate::config::{Config, ConfigError};
use crate::error::ServeError;
use crate::server::Server;

/// The run could not start at all (a scenario or request that goes wrong is a failed check, not this).
#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    #[error("configuration: {0}")]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Start(#[from] ServeError),
    #[error("cannot create a temporary directory: {0}")]
    TempDir(std::io::Error),
    #[error(transparent)]
    Client(#[from] ClientError),
}

/// The windows, in seconds: pay first, purchase first, order payment.
pub(crate) struct WindowSecs<'a> {
    pub pay_first: &'a str,
    pub purchase_first: &'a str,
    pub order_payment: &'a str,
}

/// A running local server; the database goes with it.
pub(crate) struct Local {
    pub server: Server,
    pub client: Client,
    /// The windows as configured.
    pub windows: Windows,
    _dir: tempfile::TempDir,
}

/// Starts the server on `<tempdir>/<db_file>` with these windows and admin token; `http` sets up the
/// client's HTTP side.
pub(crate) async fn start(
    db_file: &str,
    windows: WindowSecs<'_>,
    admin_token: &str,
    http: reqwest::ClientBuilder,
) -> Result<Local, LocalError> {
    let dir = tempfile::tempdir().map_err(LocalError::TempDir)?;
    let db = dir.path().join(db_file);
    let settings: HashMap<&str, String> = [
        ("VENDPAY_LISTEN", "127.0.0.1:0".to_owned()),
        ("VENDPAY_DB", db.display().to_string()),
        ("PAY_FIRST_WINDOW_SECS", windows.pay_first.to_owned()),
        (
            "PURCHASE_FIRST_WINDOW_SECS",
            windows.purchase_first.to_owned(),
        ),
        (
            "ORDER_PAYMENT_WINDOW_SECS",
            windows.order_payment.to_owned(),
        ),
        ("ADMIN_TOKEN", admin_token.to_owned()),
        ("ALIPAY_NOTIFY_VERIFY", "true".to_owned()),
    ]
    .into_iter()
    .collect();
    // Only these settings: the run needs the sandbox even where ALIPAY_GATEWAY_URL is set.
    let config = Config::from_lookup(|n| settings.get(n).cloned())?;
    let windows = config.windows;
    let server = Server::start(config).await?;
    let client = Client::from_builder(http, &server.local_url(), admin_token)?;
    Ok(Local {
        server,
        client,
        windows,
        _dir: dir,
    })
}
