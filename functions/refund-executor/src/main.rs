use aws_lambda_events::event::sqs::SqsEvent;
use lambda_runtime::{service_fn, Error, LambdaEvent};
use vendpay_lambda::{wiring, Env};

#[tokio::main]
async fn main() -> Result<(), Error> {
    vendpay_lambda::init_logging();
    let sdk = wiring::sdk_config().await;
    let env = Env::from_process(&refund_executor::settings())?
        .resolve(&sdk)
        .await?;
    let executor = refund_executor::build(&sdk, &env)
        .inspect_err(|e| tracing::error!(error = %e, "cannot start"))?;
    let executor = &executor;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<SqsEvent>| async move {
        Ok::<_, Error>(refund_executor::handler::handle(executor, &event.payload).await)
    }))
    .await
}
