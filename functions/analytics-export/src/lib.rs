//! `analytics-export`: the sales facts of the table's stream, to Firehose (S3, Parquet, Athena).
//!
//! The store writes each money decision's facts as one item (`pk` = `facts#{session}#{version}`,
//! `sk` = `facts`, `facts` = a JSON array of `vendpay_domain::facts::Fact`, TTL 7 days) in the same
//! transaction as the decision. The table's stream (`NEW_IMAGE`) brings the inserts here, filtered by
//! the event source mapping to INSERTs of `facts#` items; anything else that arrives anyway is ignored.
//! Each fact becomes one newline-terminated JSON record whose fields are exactly the Glue table's
//! columns (`docs/sales.md`), sent with `PutRecordBatch`; Firehose converts them to Parquet under
//! `facts/dt=<delivery day>/` and Athena's named queries read them.
//!
//! Delivery is at least once: a redelivered stream record sends the same records again, with the same
//! fact ids, and the queries count each id once. An item whose facts cannot be read is logged with
//! `alert = "unreadable_fact"` and acknowledged (a retry cannot make it readable); records Firehose
//! refuses are retried with backoff, then the first stream record not delivered is reported as the
//! batch item failure, and Lambda resumes the shard from there.
//!
//! Modules: [`stream`] (the event and the answer), [`rows`] (a fact as a Glue row), [`sink`] (the
//! Firehose call), [`export`] (batching, retries, the outcome), [`handler`].

pub mod export;
pub mod handler;
pub mod rows;
pub mod sink;
pub mod stream;

use aws_config::SdkConfig;
use vendpay_lambda::{Env, StartError};

pub use export::{Exporter, Outcome, Retry};
pub use sink::{FirehoseSink, Sink, SinkError};

/// The delivery stream the facts go to (the template's `AnalyticsDeliveryStream`).
pub const FIREHOSE_STREAM_NAME: &str = "FIREHOSE_STREAM_NAME";

/// Every setting this function reads; the SAM template sets exactly these (infra/function-env.json).
pub fn settings() -> Vec<&'static str> {
    vec![FIREHOSE_STREAM_NAME]
}

pub fn build(sdk: &SdkConfig, env: &Env) -> Result<Exporter<FirehoseSink>, StartError> {
    let stream = env.required(FIREHOSE_STREAM_NAME)?;
    Ok(Exporter::new(FirehoseSink::new(
        aws_sdk_firehose::Client::new(sdk),
        stream,
    )))
}
