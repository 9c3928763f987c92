//! Why `vendpay serve` (and the demo and load tool, which start it) did not start. Each message names
//! the setting or the resource to fix.

use std::net::SocketAddr;

use crate::keyfile;

/// Why the server did not start. Each message says what to fix.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("VENDPAY_LISTEN: cannot listen on {addr}: {reason}")]
    Listen { addr: SocketAddr, reason: String },
    #[error("VENDPAY_DB: cannot open {path}: {reason}")]
    Store { path: String, reason: String },
    #[error("VENDPAY_DB: cannot re-arm timers from {path}: {reason}")]
    Rearm { path: String, reason: String },
    #[error(transparent)]
    KeyFile(#[from] keyfile::KeyFileError),
    #[error("ADMIN_TOKEN is not set and none could be generated: {0}")]
    AdminToken(String),
    #[error("the Alipay sandbox could not start: {0}")]
    Sandbox(String),
    #[error("the Alipay HTTP client could not be built: {0}")]
    HttpClient(String),
    /// `--store aws`: a setting the Lambda wiring refused (the message names it).
    #[error(transparent)]
    Aws(#[from] vendpay_lambda::StartError),
    /// `--store aws`: the table or a queue could not be found or created.
    #[error("{setting}: {reason}")]
    AwsResource {
        setting: &'static str,
        reason: String,
    },
}

impl From<vendpay_api::settings::SettingError> for ServeError {
    fn from(e: vendpay_api::settings::SettingError) -> ServeError {
        ServeError::Aws(e.into())
    }
}
