use lambda_runtime::{service_fn, Error};
use vendpay_lambda::{wiring, Env};

#[tokio::main]
async fn main() -> Result<(), Error> {
    vendpay_lambda::init_logging();
    let sdk = wiring::sdk_config().await;
    let env = Env::from_process(&deadline::settings())?
        .resolve(&sdk)
        .await?;
    let ledger =
        deadline::build(&sdk, &env).inspect_err(|e| tracing::error!(error = %e, "cannot start"))?;
    let ledger = &ledger;
    lambda_runtime::run(service_fn(move |event| {
        deadline::handler::handle(ledger, event)
    }))
    .await
}
