use analytics_export::stream::StreamEvent;
use lambda_runtime::{service_fn, Error, LambdaEvent};
use vendpay_lambda::{wiring, Env};

#[tokio::main]
async fn main() -> Result<(), Error> {
    vendpay_lambda::init_logging();
    let sdk = wiring::sdk_config().await;
    let env = Env::from_process(&analytics_export::settings())?
        .resolve(&sdk)
        .await?;
    let exporter = analytics_export::build(&sdk, &env)
        .inspect_err(|e| tracing::error!(error = %e, "cannot start"))?;
    let exporter = &exporter;
    lambda_runtime::run(service_fn(
        move |event: LambdaEvent<StreamEvent>| async move {
            Ok::<_, Error>(analytics_export::handler::handle(exporter, &event.payload).await)
        },
    ))
    .await
}
