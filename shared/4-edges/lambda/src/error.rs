//! Why a function does not start, and why an invocation fails as a whole.

/// Why a function did not start. Printed once by `main`; the message names the setting at fault.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Setting(#[from] vendpay_api::settings::SettingError),
    #[error(transparent)]
    Alipay(#[from] vendpay_alipay::AlipayConfigError),
    #[error(transparent)]
    DeviceKey(#[from] vendpay_api::auth::KeyError),
    #[error("HTTP client: {0}")]
    HttpClient(String),
}

/// Why an invocation failed as a whole (Lambda, or the event source, retries it). The Runtime API
/// reports it with a named `errorType` — what CloudWatch shows and an alarm can match — instead of
/// the Rust type name of a boxed error.
#[derive(Debug, thiserror::Error)]
pub enum InvocationError {
    /// Not an event this function is wired to: a misconfigured trigger, never fixed by a retry.
    #[error("{0}")]
    UnrecognisedEvent(String),
    /// The sweep could not finish (storage unavailable, contention); the next minute's sweep retries.
    #[error("sweep failed: {0}")]
    Sweep(#[from] vendpay_app::AppError),
    #[error("answer not serialisable: {0}")]
    Answer(#[from] serde_json::Error),
}

impl From<InvocationError> for lambda_runtime::Diagnostic {
    fn from(e: InvocationError) -> Self {
        let error_type = match e {
            InvocationError::UnrecognisedEvent(_) => "UnrecognisedEvent",
            InvocationError::Sweep(_) => "SweepFailed",
            InvocationError::Answer(_) => "AnswerNotSerialisable",
        };
        lambda_runtime::Diagnostic {
            error_type: error_type.to_owned(),
            error_message: e.to_string(),
        }
    }
}
