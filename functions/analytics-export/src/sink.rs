//! Where the records go: Firehose `PutRecordBatch`, behind a small trait so the batching and retry
//! rules are tested without AWS.

use std::future::Future;

use aws_sdk_firehose::primitives::Blob;
use aws_sdk_firehose::types::Record;

/// Why a whole call failed (nothing of it is known to be delivered).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SinkError(pub String);

impl std::fmt::Display for SinkError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A Firehose-like batch put.
pub trait Sink: Sync {
    /// Puts `records` (at most 500, 4 MiB) in one call; answers, per record and in order, the error
    /// code of each one that was not accepted (`None`: accepted).
    fn put(
        &self,
        records: &[&[u8]],
    ) -> impl Future<Output = Result<Vec<Option<String>>, SinkError>> + Send;
}

/// The delivery stream of `FIREHOSE_STREAM_NAME`.
pub struct FirehoseSink {
    client: aws_sdk_firehose::Client,
    stream: String,
}

impl FirehoseSink {
    pub fn new(client: aws_sdk_firehose::Client, stream: String) -> FirehoseSink {
        FirehoseSink { client, stream }
    }
}

impl Sink for FirehoseSink {
    async fn put(&self, records: &[&[u8]]) -> Result<Vec<Option<String>>, SinkError> {
        let mut request = self
            .client
            .put_record_batch()
            .delivery_stream_name(&self.stream);
        for data in records {
            let record = Record::builder()
                .data(Blob::new(data.to_vec()))
                .build()
                .map_err(|e| SinkError(format!("record: {e}")))?;
            request = request.records(record);
        }
        let answer = request.send().await.map_err(|e| {
            SinkError(format!(
                "PutRecordBatch to {}: {}",
                self.stream,
                aws_sdk_firehose::error::DisplayErrorContext(&e)
            ))
        })?;
        let results: Vec<Option<String>> = answer
            .request_responses()
            .iter()
            .map(|r| {
                r.error_code()
                    .map(|code| format!("{code}: {}", r.error_message().unwrap_or_default()))
            })
            .collect();
        // One answer per record, in order; anything else cannot be matched to the records, so none
        // of them counts as delivered.
        if results.len() != records.len() {
            return Err(SinkError(format!(
                "PutRecordBatch answered {} results for {} records (FailedPutCount {})",
                results.len(),
                records.len(),
                answer.failed_put_count()
            )));
        }
        Ok(results)
    }
}
