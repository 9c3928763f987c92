//! vendpay's AWS adapters: the storage ports on one DynamoDB table, the deadline scheduler on SQS delays
//! (EventBridge Scheduler beyond 15 minutes) and the refund queue on SQS.
//!
//! - [`dynamo`]: [`DynamoStore`], `DeviceStore` + `SessionStore` + `InventoryStore`; the key design
//!   and every access pattern are in its header.
//! - [`table`]: the table's one definition, `infra/table.json` (compiled in), and [`create_table`].
//! - [`queues`]: [`SqsDeadlineScheduler`], [`SqsRefundQueue`].
//! - [`error`]: how AWS answers map onto `StoreError` (conflict / retry / permanent).
//!
//! The caller builds one `aws_config::SdkConfig` (region, credentials, `AWS_ENDPOINT_URL` for moto) and
//! hands it to each adapter. The tests run against moto's server started by `scripts/with-moto`.

pub mod dynamo;
pub mod error;
pub mod queues;
pub mod table;

pub use dynamo::DynamoStore;
pub use queues::{LongDeadlines, SqsDeadlineScheduler, SqsRefundQueue};
pub use table::{create_table, table_definition, TableDefinition, TABLE_JSON};
