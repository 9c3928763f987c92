//! The DynamoDB stream event as Lambda delivers it, only what this function reads of it, and the
//! partial batch answer.
//!
//! Own types rather than `aws_lambda_events`' DynamoDB ones: those need its `dynamodb` feature (chrono
//! and serde_dynamo for every function of the workspace), and only the event name, the sequence number,
//! the string keys and the new image's `facts` string matter here. `Records` and each record's
//! `eventName` and `SequenceNumber` are required, so an event of another kind (an SQS batch, an HTTP
//! request) is refused by the runtime before the handler instead of being acknowledged as empty.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A batch of stream records, oldest first (one shard).
#[derive(Clone, Debug, Deserialize)]
pub struct StreamEvent {
    #[serde(rename = "Records")]
    pub records: Vec<StreamRecord>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct StreamRecord {
    /// `INSERT`, `MODIFY` or `REMOVE` (a TTL expiry is a `REMOVE` too).
    #[serde(rename = "eventName")]
    pub event_name: String,
    pub dynamodb: StreamItem,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct StreamItem {
    /// What a batch item failure names: Lambda resumes the shard from this record.
    pub sequence_number: String,
    #[serde(default)]
    pub keys: BTreeMap<String, Attribute>,
    /// Present with the `NEW_IMAGE` view on inserts and updates.
    #[serde(default)]
    pub new_image: Option<BTreeMap<String, Attribute>>,
}

/// One attribute value; only strings are read (other types leave `s` empty).
#[derive(Clone, Debug, Default, Deserialize)]
pub struct Attribute {
    #[serde(rename = "S", default)]
    pub s: Option<String>,
}

impl StreamRecord {
    /// The string key `name` (`pk`, `sk`).
    pub fn key(&self, name: &str) -> Option<&str> {
        self.dynamodb.keys.get(name)?.s.as_deref()
    }

    pub fn sequence_number(&self) -> &str {
        &self.dynamodb.sequence_number
    }
}

/// `{"batchItemFailures": [{"itemIdentifier": "<SequenceNumber>"}]}`: for a stream, at most the first
/// record not done (Lambda retries the shard from it; the records before it are done).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StreamBatchResponse {
    pub batch_item_failures: Vec<BatchItemFailure>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BatchItemFailure {
    pub item_identifier: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn other_events_are_refused_not_read_as_empty() {
        let sqs = r#"{"Records":[{"messageId":"m","body":"{}","eventSource":"aws:sqs"}]}"#;
        assert!(serde_json::from_str::<StreamEvent>(sqs).is_err());
        assert!(serde_json::from_str::<StreamEvent>(r#"{"unexpected":"event"}"#).is_err());
    }

    #[test]
    fn the_answer_has_lambdas_field_names() {
        let answer = StreamBatchResponse {
            batch_item_failures: vec![BatchItemFailure {
                item_identifier: "42".into(),
            }],
        };
        assert_eq!(
            serde_json::to_value(&answer).ok(),
            Some(serde_json::json!({"batchItemFailures": [{"itemIdentifier": "42"}]}))
        );
    }
}
