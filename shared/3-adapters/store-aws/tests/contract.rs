//! The storage contract suite on `DynamoStore` against moto (each check on a fresh table), its
//! concurrency checks (racing commits and purchases) included.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code asserts by panicking

mod common;

use std::sync::Arc;

use vendpay_store_aws::DynamoStore;

async fn fresh_store(config: &aws_config::SdkConfig) -> Arc<DynamoStore> {
    let store = DynamoStore::new(config, common::unique("vp-contract"));
    store
        .create_table()
        .await
        .expect("create the table from infra/table.json");
    Arc::new(store)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dynamo_store_passes_the_contract_suite() {
    let config = common::sdk_config().await;
    vendpay_app::contract::run(|| fresh_store(&config)).await;
}
