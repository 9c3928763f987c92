//! One stream batch to Firehose: which records carry facts, their rows in batches of at most
//! [`MAX_RECORDS`] records and [`MAX_BYTES`], the records Firehose refuses retried with backoff, and
//! the first stream record not delivered as the batch item failure.
//!
//! Order matters for the answer only: Lambda re-reads the shard from the reported record, so the
//! records after it are sent again anyway; once a batch cannot be delivered the later ones are not
//! sent (they would only be duplicated). Duplicates are harmless — a fact keeps its id — but not free.

use std::time::Duration;

use vendpay_domain::facts::Fact;

use crate::rows;
use crate::sink::Sink;
use crate::stream::{BatchItemFailure, StreamBatchResponse, StreamEvent, StreamRecord};

/// Firehose's limits for one `PutRecordBatch`.
pub const MAX_RECORDS: usize = 500;
pub const MAX_BYTES: usize = 4 * 1024 * 1024;

/// The items whose inserts carry facts (`pk` = `facts#{session}#{version}`, written by the store).
pub const FACTS_PREFIX: &str = "facts#";

/// How often and how patiently refused records are sent again within one invocation.
#[derive(Clone, Copy, Debug)]
pub struct Retry {
    /// Calls per batch, the first included.
    pub attempts: u32,
    pub first_backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for Retry {
    /// Four calls over about 1.4 s: enough for Firehose's throttling to pass, short enough that a
    /// longer outage goes back to Lambda's own retries (the mapping's `MaximumRetryAttempts`).
    fn default() -> Retry {
        Retry {
            attempts: 4,
            first_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(2),
        }
    }
}

pub struct Exporter<S> {
    pub sink: S,
    pub retry: Retry,
}

impl<S: Sink> Exporter<S> {
    pub fn new(sink: S) -> Exporter<S> {
        Exporter {
            sink,
            retry: Retry::default(),
        }
    }
}

/// What one batch came to.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    /// The answer to Lambda.
    pub response: StreamBatchResponse,
    /// Facts delivered (accepted by Firehose).
    pub delivered: usize,
    /// Stream records that are not inserts of facts items.
    pub ignored: usize,
    /// Sequence numbers of the facts items that could not be read (logged, acknowledged).
    pub unreadable: Vec<String>,
}

/// What one stream record holds for this function.
enum Content {
    Ignored(&'static str),
    Facts(Vec<Fact>),
    Unreadable(String),
}

fn content(r: &StreamRecord) -> Content {
    if r.event_name != "INSERT" {
        return Content::Ignored("not an insert");
    }
    if !r.key("pk").is_some_and(|pk| pk.starts_with(FACTS_PREFIX)) {
        return Content::Ignored("not a facts item");
    }
    let Some(image) = &r.dynamodb.new_image else {
        return Content::Unreadable("no NewImage (the stream must be NEW_IMAGE)".to_owned());
    };
    let Some(text) = image.get("facts").and_then(|a| a.s.as_deref()) else {
        return Content::Unreadable("no string attribute `facts`".to_owned());
    };
    match serde_json::from_str::<Vec<Fact>>(text) {
        Ok(facts) => Content::Facts(facts),
        Err(e) => Content::Unreadable(format!("`facts` is not a JSON array of facts: {e}")),
    }
}

/// Exports `event` and answers the first stream record to retry, if any.
pub async fn export<S: Sink>(exporter: &Exporter<S>, event: &StreamEvent) -> Outcome {
    let mut outcome = Outcome::default();
    // (index of the stream record, the Firehose record), in stream order.
    let mut pending: Vec<(usize, Vec<u8>)> = Vec::new();
    for (i, r) in event.records.iter().enumerate() {
        let seq = r.sequence_number();
        let rows = match content(r) {
            Content::Ignored(why) => {
                outcome.ignored += 1;
                tracing::debug!(sequence_number = seq, event_name = %r.event_name, pk = r.key("pk").unwrap_or_default(), why, "ignored (the mapping's filter should have left it out)");
                continue;
            }
            Content::Unreadable(reason) => Err(reason),
            Content::Facts(facts) => facts
                .iter()
                .map(rows::record)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("a fact cannot be written as a row: {e}")),
        };
        match rows {
            Ok(rows) => pending.extend(rows.into_iter().map(|row| (i, row))),
            Err(reason) => {
                // Acknowledged: the item is immutable, so no retry can make it readable; the
                // alarm calls an operator, and the item stays in the table until its TTL.
                tracing::error!(alert = "unreadable_fact", sequence_number = seq, pk = r.key("pk").unwrap_or_default(), %reason, "facts item cannot be read; acknowledged without export");
                outcome.unreadable.push(seq.to_owned());
            }
        }
    }

    let mut first_failed: Option<usize> = None;
    for batch in batches(&pending) {
        let failed = send(exporter, batch).await;
        outcome.delivered += batch.len() - failed.len();
        if let Some(&i) = failed.iter().min() {
            first_failed = Some(i);
            break;
        }
    }
    if let Some(r) = first_failed.and_then(|i| event.records.get(i)) {
        tracing::warn!(
            sequence_number = r.sequence_number(),
            "facts not delivered; Lambda retries the shard from this record"
        );
        outcome.response.batch_item_failures.push(BatchItemFailure {
            item_identifier: r.sequence_number().to_owned(),
        });
    }
    tracing::info!(
        records = event.records.len(),
        facts = pending.len(),
        delivered = outcome.delivered,
        ignored = outcome.ignored,
        unreadable = outcome.unreadable.len(),
        retry = outcome.response.batch_item_failures.len(),
        "stream batch exported"
    );
    outcome
}

/// `rows` cut into consecutive batches within Firehose's limits.
fn batches(rows: &[(usize, Vec<u8>)]) -> Vec<&[(usize, Vec<u8>)]> {
    let mut out = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (i, (_, row)) in rows.iter().enumerate() {
        if i > start && (i - start == MAX_RECORDS || bytes + row.len() > MAX_BYTES) {
            out.extend(rows.get(start..i));
            (start, bytes) = (i, 0);
        }
        bytes += row.len();
    }
    if start < rows.len() {
        out.extend(rows.get(start..));
    }
    out
}

/// Sends one batch, re-sending what Firehose refused; answers the stream record indices of the rows
/// still not delivered.
async fn send<S: Sink>(exporter: &Exporter<S>, batch: &[(usize, Vec<u8>)]) -> Vec<usize> {
    let retry = exporter.retry;
    let mut left: Vec<&(usize, Vec<u8>)> = batch.iter().collect();
    let mut backoff = retry.first_backoff;
    for attempt in 1..=retry.attempts.max(1) {
        let data: Vec<&[u8]> = left.iter().map(|(_, row)| row.as_slice()).collect();
        match exporter.sink.put(&data).await {
            Ok(results) => {
                let refused: Vec<&str> = results.iter().flatten().map(String::as_str).collect();
                if !refused.is_empty() {
                    tracing::warn!(
                        attempt,
                        refused = refused.len(),
                        of = left.len(),
                        first_error = refused.first().copied().unwrap_or_default(),
                        "Firehose refused records"
                    );
                }
                left = left
                    .into_iter()
                    .zip(results)
                    .filter_map(|(row, error)| error.map(|_| row))
                    .collect();
            }
            Err(e) => {
                tracing::warn!(attempt, records = left.len(), error = %e, "PutRecordBatch failed");
            }
        }
        if left.is_empty() {
            return Vec::new();
        }
        if attempt < retry.attempts {
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(retry.max_backoff);
        }
    }
    left.iter().map(|(i, _)| *i).collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use std::sync::Mutex;

    use serde_json::{json, Value};

    use super::*;
    use crate::sink::SinkError;

    /// Records every call; `refuse` decides per call number (from 0) and record whether Firehose
    /// refuses it; `fail_calls` fails whole calls.
    struct Fake {
        calls: Mutex<Vec<Vec<Vec<u8>>>>,
        refuse: fn(usize, &[u8]) -> bool,
        fail_calls: fn(usize) -> bool,
    }

    impl Fake {
        fn new(refuse: fn(usize, &[u8]) -> bool, fail_calls: fn(usize) -> bool) -> Fake {
            Fake {
                calls: Mutex::new(Vec::new()),
                refuse,
                fail_calls,
            }
        }
        fn accepting() -> Fake {
            Fake::new(|_, _| false, |_| false)
        }
        fn calls(&self) -> Vec<Vec<Vec<u8>>> {
            self.calls.lock().unwrap().clone()
        }
        /// The fact ids of every call.
        fn ids(&self) -> Vec<Vec<String>> {
            self.calls()
                .iter()
                .map(|c| {
                    c.iter()
                        .map(|r| {
                            let v: Value = serde_json::from_slice(r).unwrap();
                            v["id"].as_str().unwrap().to_owned()
                        })
                        .collect()
                })
                .collect()
        }
    }

    impl Sink for Fake {
        async fn put(&self, records: &[&[u8]]) -> Result<Vec<Option<String>>, SinkError> {
            let n = {
                let mut calls = self.calls.lock().unwrap();
                calls.push(records.iter().map(|r| r.to_vec()).collect());
                calls.len() - 1
            };
            if (self.fail_calls)(n) {
                return Err(SinkError("ServiceUnavailableException".into()));
            }
            Ok(records
                .iter()
                .map(|r| (self.refuse)(n, r).then(|| "ServiceUnavailableException".to_owned()))
                .collect())
        }
    }

    fn exporter(sink: Fake) -> Exporter<Fake> {
        Exporter {
            sink,
            retry: Retry {
                attempts: 3,
                first_backoff: Duration::from_millis(1),
                max_backoff: Duration::from_millis(2),
            },
        }
    }

    fn fact(id: &str) -> Value {
        json!({
            "id": id, "kind": "payment", "at": 1_764_122_400_000_i64, "device": "vm-1",
            "district": "Xuhui", "session": "s-1", "flow": "pay_first", "currency": "CNY",
            "amount": 1000, "trade_no": "2026112622001400010001"
        })
    }

    fn insert(seq: &str, facts: &[Value]) -> Value {
        json!({
            "eventName": "INSERT",
            "dynamodb": {
                "SequenceNumber": seq,
                "Keys": {"pk": {"S": format!("facts#s-1#{seq}")}, "sk": {"S": "facts"}},
                "NewImage": {
                    "pk": {"S": format!("facts#s-1#{seq}")}, "sk": {"S": "facts"},
                    "facts": {"S": Value::Array(facts.to_vec()).to_string()},
                    "expires_at": {"N": "1764727200"}
                }
            }
        })
    }

    fn event(records: Vec<Value>) -> StreamEvent {
        serde_json::from_value(json!({ "Records": records })).unwrap()
    }

    fn failures(o: &Outcome) -> Vec<String> {
        o.response
            .batch_item_failures
            .iter()
            .map(|f| f.item_identifier.clone())
            .collect()
    }

    #[tokio::test]
    async fn only_inserts_of_facts_items_are_exported() {
        let session = json!({"eventName": "MODIFY", "dynamodb": {"SequenceNumber": "2",
            "Keys": {"pk": {"S": "ses#s-1"}, "sk": {"S": "session"}},
            "NewImage": {"pk": {"S": "ses#s-1"}, "facts": {"S": "not read"}}}});
        let expired = json!({"eventName": "REMOVE", "dynamodb": {"SequenceNumber": "3",
            "Keys": {"pk": {"S": "facts#s-1#1"}, "sk": {"S": "facts"}}}});
        let device = json!({"eventName": "INSERT", "dynamodb": {"SequenceNumber": "4",
            "Keys": {"pk": {"S": "dev#vm-1"}, "sk": {"S": "device"}}, "NewImage": {}}});
        let ex = exporter(Fake::accepting());
        let ev = event(vec![
            insert("1", &[fact("payment:a"), fact("payment:b")]),
            session,
            expired,
            device,
            insert("5", &[fact("payment:c")]),
        ]);
        let out = export(&ex, &ev).await;
        assert_eq!(failures(&out), Vec::<String>::new());
        assert_eq!((out.delivered, out.ignored), (3, 3));
        assert_eq!(
            ex.sink.ids(),
            vec![vec!["payment:a", "payment:b", "payment:c"]]
        );
    }

    #[tokio::test]
    async fn an_unreadable_item_is_acknowledged_and_the_others_go_on() {
        let mut bad = insert("2", &[]);
        bad["dynamodb"]["NewImage"]["facts"] = json!({"S": "[{\"id\": 1}"});
        let mut no_image = insert("3", &[]);
        no_image["dynamodb"]
            .as_object_mut()
            .unwrap()
            .remove("NewImage");
        let ex = exporter(Fake::accepting());
        let ev = event(vec![
            insert("1", &[fact("payment:a")]),
            bad,
            no_image,
            insert("4", &[fact("payment:b")]),
        ]);
        let out = export(&ex, &ev).await;
        assert_eq!(failures(&out), Vec::<String>::new());
        assert_eq!(out.unreadable, vec!["2".to_owned(), "3".to_owned()]);
        assert_eq!(ex.sink.ids(), vec![vec!["payment:a", "payment:b"]]);
    }

    #[tokio::test]
    async fn refused_records_alone_are_sent_again() {
        // The first call refuses payment:b; the second carries it alone and it is accepted.
        let ex = exporter(Fake::new(
            |call, r| call == 0 && String::from_utf8_lossy(r).contains("payment:b"),
            |_| false,
        ));
        let ev = event(vec![insert(
            "1",
            &[fact("payment:a"), fact("payment:b"), fact("payment:c")],
        )]);
        let out = export(&ex, &ev).await;
        assert_eq!(failures(&out), Vec::<String>::new());
        assert_eq!(out.delivered, 3);
        assert_eq!(
            ex.sink.ids(),
            vec![
                vec!["payment:a", "payment:b", "payment:c"],
                vec!["payment:b"]
            ]
        );
    }

    #[tokio::test]
    async fn a_record_refused_every_time_fails_its_stream_record_and_the_first_only() {
        // payment:c (stream record "2") and payment:e ("3") are always refused: "2" is reported, so
        // Lambda retries from it; "1" is done.
        let ex = exporter(Fake::new(
            |_, r| {
                let r = String::from_utf8_lossy(r);
                r.contains("payment:c") || r.contains("payment:e")
            },
            |_| false,
        ));
        let ev = event(vec![
            insert("1", &[fact("payment:a"), fact("payment:b")]),
            insert("2", &[fact("payment:c"), fact("payment:d")]),
            insert("3", &[fact("payment:e")]),
        ]);
        let out = export(&ex, &ev).await;
        assert_eq!(failures(&out), vec!["2".to_owned()]);
        assert_eq!(ex.sink.calls().len(), 3, "the configured attempts");
        assert_eq!(
            ex.sink.ids()[1..],
            [
                vec!["payment:c".to_owned(), "payment:e".to_owned()],
                vec!["payment:c".to_owned(), "payment:e".to_owned()]
            ]
        );
    }

    #[tokio::test]
    async fn a_failing_call_is_retried_then_reported() {
        let ex = exporter(Fake::new(|_, _| false, |call| call == 0));
        let ev = event(vec![insert("1", &[fact("payment:a")])]);
        let out = export(&ex, &ev).await;
        assert_eq!(failures(&out), Vec::<String>::new());
        assert_eq!(ex.sink.calls().len(), 2);

        let ex = exporter(Fake::new(|_, _| false, |_| true));
        let ev = event(vec![
            json!({"eventName": "REMOVE", "dynamodb": {"SequenceNumber": "1",
                "Keys": {"pk": {"S": "facts#s-1#1"}}}}),
            insert("2", &[fact("payment:a")]),
        ]);
        let out = export(&ex, &ev).await;
        assert_eq!(failures(&out), vec!["2".to_owned()]);
    }

    #[tokio::test]
    async fn batches_keep_to_firehoses_limits_and_stop_at_the_first_failure() {
        let many: Vec<Value> = (0..1_200).map(|n| fact(&format!("payment:{n}"))).collect();
        let ex = exporter(Fake::accepting());
        let out = export(&ex, &event(vec![insert("1", &many)])).await;
        assert_eq!(failures(&out), Vec::<String>::new());
        let sizes: Vec<usize> = ex.sink.calls().iter().map(Vec::len).collect();
        assert_eq!(sizes, vec![500, 500, 200]);

        // Rows of about 0.9 MiB: four and a bit would pass 4 MiB, so four per call.
        let mut big = fact("payment:big");
        big["product"] = json!("x".repeat(900 * 1024));
        let bigs: Vec<Value> = (0..9)
            .map(|n| {
                let mut f = big.clone();
                f["id"] = json!(format!("payment:big{n}"));
                f
            })
            .collect();
        let ex = exporter(Fake::accepting());
        export(&ex, &event(vec![insert("1", &bigs)])).await;
        let calls = ex.sink.calls();
        assert_eq!(
            calls.iter().map(Vec::len).collect::<Vec<_>>(),
            vec![4, 4, 1]
        );
        assert!(calls
            .iter()
            .all(|c| c.iter().map(Vec::len).sum::<usize>() <= MAX_BYTES));

        // A batch that cannot be delivered: the later ones are not sent.
        let ex = exporter(Fake::new(|_, _| false, |_| true));
        let ev = event(vec![insert("1", &many[..600]), insert("2", &many[600..])]);
        let out = export(&ex, &ev).await;
        assert_eq!(failures(&out), vec!["1".to_owned()]);
        assert!(
            ex.sink.calls().iter().all(|c| c.len() == 500),
            "only the first batch, retried"
        );
    }

    #[tokio::test]
    async fn a_redelivered_batch_sends_the_same_records() {
        let ev = event(vec![insert("1", &[fact("payment:a"), fact("payment:b")])]);
        let ex = exporter(Fake::accepting());
        export(&ex, &ev).await;
        export(&ex, &ev).await;
        let calls = ex.sink.calls();
        assert_eq!(calls.len(), 2);
        assert_eq!(calls[0], calls[1], "byte for byte: no randomness, same ids");
    }
}
