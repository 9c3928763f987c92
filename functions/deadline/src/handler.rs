//! The deadline function's events: an SQS batch from the deadline queue, or the once-a-minute sweep.
//! Both are carried out by `vendpay_lambda::consumers::deadlines`, which `vendpay serve --store aws`
//! runs too; this module only tells them apart and maps the answer back.

use aws_lambda_events::event::sqs::SqsEvent;
use lambda_runtime::LambdaEvent;
use serde_json::{json, Value};
use vendpay_app::Ledger;
use vendpay_lambda::consumers::deadlines::{queue, sweep};
use vendpay_lambda::InvocationError;

pub enum Incoming {
    Queue(SqsEvent),
    Sweep,
}

/// An SQS batch, or a sweep: EventBridge Scheduler's input `{"action": "sweep", ...}`, or an
/// EventBridge rule's `"detail-type": "Scheduled Event"`.
pub fn classify(value: Value) -> Result<Incoming, String> {
    if value.get("Records").is_some() {
        return serde_json::from_value(value)
            .map(Incoming::Queue)
            .map_err(|e| format!("not an SQS event: {e}"));
    }
    let sweep = value.get("action").and_then(Value::as_str) == Some("sweep")
        || value.get("detail-type").and_then(Value::as_str) == Some("Scheduled Event");
    if sweep {
        Ok(Incoming::Sweep)
    } else {
        Err("unrecognised event: neither SQS records nor {\"action\": \"sweep\"}".to_owned())
    }
}

pub async fn handle(ledger: &Ledger, event: LambdaEvent<Value>) -> Result<Value, InvocationError> {
    match classify(event.payload).map_err(InvocationError::UnrecognisedEvent)? {
        Incoming::Queue(batch) => Ok(serde_json::to_value(queue(ledger, &batch).await)?),
        Incoming::Sweep => {
            let report = sweep(ledger).await?;
            Ok(json!(report))
        }
    }
}
