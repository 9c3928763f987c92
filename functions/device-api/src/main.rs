use lambda_runtime::{service_fn, Error};
use vendpay_lambda::{wiring, Env};

#[tokio::main]
async fn main() -> Result<(), Error> {
    vendpay_lambda::init_logging();
    let sdk = wiring::sdk_config().await;
    let env = Env::from_process(&device_api::settings())?
        .resolve(&sdk)
        .await?;
    let api = device_api::build(&sdk, &env)
        .inspect_err(|e| tracing::error!(error = %e, "cannot start"))?;
    let api = &api;
    lambda_runtime::run(service_fn(move |event| {
        device_api::handler::handle(api, event)
    }))
    .await
}
