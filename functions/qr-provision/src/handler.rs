//! One operator request: Lambda's HTTP event in, the admin route's answer out.

use lambda_http::{Body, Request, Response};
use tracing::Instrument;
use vendpay_api::AdminRoutes;

pub async fn handle(routes: &AdminRoutes, event: Request) -> Response<Body> {
    let span =
        tracing::info_span!("admin_request", method = %event.method(), path = %event.uri().path());
    async move {
        let res = match vendpay_lambda::http::request(event) {
            Ok(req) => routes.handle(&req).await,
            Err(e) => e.into_response(),
        };
        vendpay_lambda::http::response(res)
    }
    .instrument(span)
    .await
}
