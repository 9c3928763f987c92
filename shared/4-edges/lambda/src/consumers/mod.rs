//! The two SQS consumers (and the sweep) that the Lambda functions `deadline` and `refund-executor`
//! run, and that `vendpay serve --store aws` runs in-process by long-polling the same queues: one
//! implementation, so the local AWS mode exercises exactly the deployed code.

pub mod deadlines;
pub mod refunds;
