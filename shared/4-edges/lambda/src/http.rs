//! API Gateway HTTP API (v2) events to and from the `http` types `vendpay-api` answers.
//!
//! The request path is the raw path as sent (the HTTP API's `$default` stage adds no prefix), so a
//! machine's signature over `METHOD\nPATH\n...` verifies exactly as on the local server. When API
//! Gateway authenticated the caller with IAM, the caller's ARN rides along as [`IamCaller`], which the
//! admin routes require on AWS.

use bytes::Bytes;
use lambda_http::aws_lambda_events::apigw::ApiGatewayV2httpResponse;
use lambda_http::{Body, RequestExt};
use vendpay_api::{ApiError, IamCaller};

pub use vendpay_api::MAX_BODY_BYTES;

/// A Lambda HTTP request as the routes take it; a body over [`MAX_BODY_BYTES`] is a 413.
pub fn request(req: lambda_http::Request) -> Result<http::Request<Bytes>, ApiError> {
    let caller = req
        .request_context_ref()
        .and_then(|c| c.authorizer())
        .and_then(|a| a.iam.as_ref())
        .and_then(|iam| iam.user_arn.clone().or_else(|| iam.caller_id.clone()));
    let (parts, body) = req.into_parts();
    let bytes = match body {
        Body::Empty => Bytes::new(),
        Body::Text(t) => Bytes::from(t),
        Body::Binary(b) => Bytes::from(b),
        _ => Bytes::new(),
    };
    if bytes.len() > MAX_BODY_BYTES {
        return Err(ApiError::new(
            413,
            "body_too_large",
            format!("request bodies are at most {MAX_BODY_BYTES} bytes"),
        ));
    }
    let mut out = http::Request::from_parts(parts, bytes);
    out.extensions_mut().remove::<IamCaller>();
    if let Some(arn) = caller {
        out.extensions_mut().insert(IamCaller(arn));
    }
    Ok(out)
}

fn body(bytes: Bytes) -> Body {
    if bytes.is_empty() {
        return Body::Empty;
    }
    match String::from_utf8(bytes.to_vec()) {
        Ok(text) => Body::Text(text),
        Err(e) => Body::Binary(e.into_bytes()),
    }
}

/// The routes' answer as a Lambda HTTP response.
pub fn response(res: http::Response<Bytes>) -> lambda_http::Response<Body> {
    let (parts, bytes) = res.into_parts();
    lambda_http::Response::from_parts(parts, body(bytes))
}

/// The same answer as an API Gateway v2 response object, for a function that also takes other events
/// and so runs on `lambda_runtime` directly.
pub fn apigw_v2_response(res: http::Response<Bytes>) -> ApiGatewayV2httpResponse {
    let (parts, bytes) = res.into_parts();
    let mut out = ApiGatewayV2httpResponse::default();
    out.status_code = i64::from(parts.status.as_u16());
    out.headers = parts.headers;
    match body(bytes) {
        Body::Binary(b) => {
            out.is_base64_encoded = true;
            out.body = Some(Body::Binary(b));
        }
        Body::Empty => out.body = None,
        other => out.body = Some(other),
    }
    out
}

/// Parses an API Gateway HTTP API (v2) event.
pub fn parse_event(value: serde_json::Value) -> Result<lambda_http::Request, String> {
    serde_json::from_value::<lambda_http::request::LambdaRequest>(value)
        .map(lambda_http::Request::from)
        .map_err(|e| format!("not an API Gateway HTTP API event: {e}"))
}
