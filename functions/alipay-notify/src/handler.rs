//! One notification: Lambda's HTTP event in, `success` (or a refusal that makes Alipay resend) out.

use lambda_http::{Body, Request, Response};
use tracing::Instrument;
use vendpay_api::NotifyRoute;

pub async fn handle(route: &NotifyRoute, event: Request) -> Response<Body> {
    let path = event.uri().path().to_owned();
    let device = path.rsplit('/').next().unwrap_or_default().to_owned();
    let span = tracing::info_span!("alipay_notify", device = %device);
    async move {
        match vendpay_lambda::http::request(event) {
            Ok(req) => vendpay_lambda::http::response(route.handle(&req).await),
            Err(e) => {
                tracing::warn!(code = e.code, "notification refused before parsing");
                vendpay_lambda::http::response(e.into_response())
            }
        }
    }
    .instrument(span)
    .await
}
