//! The storage contract suite on `DynamoStore` against moto (each check on a fresh table), its
//! concurrency checks (racing commits and purchases) included.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code asserts by panicking

use std::sync::Arc;

use vendpay_store_aws::DynamoStore;
use vendpay_test_kit::moto;

async fn fresh_store(config: &aws_config::SdkConfig) -> Arc<DynamoStore> {
    let store = DynamoStore::new(config, moto::unique("vp-contract"));
    store
        .create_table()
        .await
        .expect("create the table from infra/table.json");
    Arc::new(store)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dynamo_store_passes_the_contract_suite() {
    let config = moto::sdk().await;
    vendpay_app::contract::run(|| fresh_store(&config)).await;
}
