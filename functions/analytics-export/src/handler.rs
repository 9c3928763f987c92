//! The stream batch handed to [`crate::export`]; the answer names the first stream record to retry.

use crate::export::{export, Exporter};
use crate::sink::Sink;
use crate::stream::{StreamBatchResponse, StreamEvent};

pub async fn handle<S: Sink>(exporter: &Exporter<S>, event: &StreamEvent) -> StreamBatchResponse {
    export(exporter, event).await.response
}
