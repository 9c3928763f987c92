use lambda_http::{service_fn, Error};
use vendpay_lambda::{wiring, Env};

#[tokio::main]
async fn main() -> Result<(), Error> {
    vendpay_lambda::init_logging();
    let sdk = wiring::sdk_config().await;
    let env = Env::from_process(&qr_provision::settings())?
        .resolve(&sdk)
        .await?;
    let routes = qr_provision::build(&sdk, &env)
        .inspect_err(|e| tracing::error!(error = %e, "cannot start"))?;
    let routes = &routes;
    lambda_http::run(service_fn(move |req| async move {
        Ok::<_, Error>(qr_provision::handler::handle(routes, req).await)
    }))
    .await
}
