//! How an AWS answer becomes a [`StoreError`] or a [`DispatchError`].
//!
//! The split matters to the caller: `Conflict` makes the ledger re-read and re-decide, `Unavailable` is
//! retried (by the ledger's bounded retries, then by Lambda/SQS redelivery), `Permanent` is not.

use std::error::Error as StdError;

use aws_sdk_dynamodb::config::http::HttpResponse;
use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::types::CancellationReason;
pub use vendpay_app::{DispatchError, Failure, StoreError};

/// Error codes that mean "try again later": throttling, capacity, server-side trouble.
const RETRYABLE_CODES: &[&str] = &[
    "ProvisionedThroughputExceededException",
    "ThrottlingException",
    "Throttling",
    "RequestLimitExceeded",
    "InternalServerError",
    "InternalFailure",
    "ServiceUnavailable",
    "TransactionInProgressException",
    "LimitExceededException",
];

/// Classifies any SDK error (of DynamoDB, SQS or Scheduler: the smithy types are shared).
pub fn classify<E>(err: SdkError<E, HttpResponse>) -> StoreError
where
    E: ProvideErrorMetadata + StdError + Send + Sync + 'static,
{
    let text = DisplayErrorContext(&err).to_string();
    let kind = match &err {
        // The request never got a verdict: the network, a timeout, an unreadable answer.
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            Kind::Unavailable
        }
        SdkError::ServiceError(service) => {
            let code = service.err().code().unwrap_or_default();
            // TransactionConflictException: a plain write hit an item inside a running transaction.
            if code == "ConditionalCheckFailedException" || code == "TransactionConflictException" {
                Kind::Conflict
            } else if RETRYABLE_CODES.contains(&code) || is_5xx(service.raw()) {
                Kind::Unavailable
            } else {
                // ResourceNotFoundException (no table), ValidationException, access denied, ...
                Kind::Permanent
            }
        }
        // ConstructionFailure and anything new: a bug on our side or a config problem.
        _ => Kind::Permanent,
    };
    // The SDK error stays the source; the text (its full context) is what the logs print.
    match kind {
        Kind::Conflict => StoreError::Conflict(text),
        Kind::Unavailable => StoreError::Unavailable(Failure::described(text, err)),
        Kind::Permanent => StoreError::Permanent(Failure::described(text, err)),
    }
}

enum Kind {
    Conflict,
    Unavailable,
    Permanent,
}

fn is_5xx(raw: &HttpResponse) -> bool {
    raw.status().is_server_error()
}

/// The verdict on a cancelled `TransactWriteItems` from its per-item reasons.
pub fn classify_cancellation(reasons: &[CancellationReason], text: String) -> StoreError {
    let codes: Vec<&str> = reasons.iter().filter_map(|r| r.code()).collect();
    // TransactionConflict: another write to one of the items was in flight (common under concurrent
    // purchases on one session). Nothing was written and what we read may be stale, so it is a conflict:
    // the ledger re-reads and re-decides, exactly as for a failed condition.
    if codes
        .iter()
        .any(|c| matches!(*c, "ConditionalCheckFailed" | "TransactionConflict"))
    {
        StoreError::Conflict(text)
    } else if codes
        .iter()
        .any(|c| matches!(*c, "ThrottlingError" | "ProvisionedThroughputExceeded"))
    {
        StoreError::Unavailable(text.into())
    } else {
        StoreError::Permanent(text.into())
    }
}

/// For queues and schedulers, whose port has one error type.
pub fn dispatch_error<E>(what: &str, err: SdkError<E, HttpResponse>) -> DispatchError
where
    E: ProvideErrorMetadata + StdError + Send + Sync + 'static,
{
    DispatchError(format!("{what}: {}", DisplayErrorContext(&err)))
}
