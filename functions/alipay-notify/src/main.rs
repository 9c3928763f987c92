use lambda_http::{service_fn, Error};
use vendpay_lambda::{wiring, Env};

#[tokio::main]
async fn main() -> Result<(), Error> {
    vendpay_lambda::init_logging();
    let sdk = wiring::sdk_config().await;
    let env = Env::from_process(&alipay_notify::settings())?
        .resolve(&sdk)
        .await?;
    let route = alipay_notify::build(&sdk, &env)
        .inspect_err(|e| tracing::error!(error = %e, "cannot start"))?;
    let route = &route;
    lambda_http::run(service_fn(move |req| async move {
        Ok::<_, Error>(alipay_notify::handler::handle(route, req).await)
    }))
    .await
}
