//! The refund queue's batches, handed to `vendpay_lambda::consumers::refunds` (which `vendpay serve
//! --store aws` runs too); the answer reports the records to retry as batch item failures.

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use vendpay_lambda::consumers::refunds;

pub use vendpay_lambda::consumers::refunds::backoff;

use crate::Executor;

pub async fn handle(executor: &Executor, batch: &SqsEvent) -> SqsBatchResponse {
    refunds::handle(executor, batch).await
}
