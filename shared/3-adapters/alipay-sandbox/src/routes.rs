//! The axum routes: `gateway.do` and the sandbox's own `/sandbox/...` routes (pay, fault switches,
//! deliveries), their JSON bodies, and serving them in a background task. Only HTTP plumbing lives
//! here; every route hands over to the gateway or notification code.

use std::collections::HashMap;
use std::net::SocketAddr;

use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use vendpay_domain::{BuyerId, Currency, Money};

use crate::{
    lock, Delivery, GatewayFault, NotificationFault, RefundFault, RunningSandbox, Sandbox,
};

impl Sandbox {
    /// `gateway.do` plus the sandbox's own routes (`POST /sandbox/pay`, `POST /sandbox/faults`,
    /// `GET /sandbox/deliveries`).
    pub fn router(&self) -> Router {
        Router::new()
            .route("/gateway.do", get(gateway).post(gateway))
            .route("/sandbox/pay", post(pay_route))
            .route("/sandbox/faults", post(faults_route))
            .route("/sandbox/deliveries", get(deliveries_route))
            .with_state(self.clone())
    }

    /// Binds `addr` (port 0 for an ephemeral one) and serves in a background task.
    pub async fn serve(&self, addr: SocketAddr) -> std::io::Result<RunningSandbox> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        *lock(&self.inner.base_url) = format!("http://{addr}");
        let router = self.router();
        let task = tokio::spawn(async move {
            // The server only stops when the task is aborted.
            let _ = axum::serve(listener, router).await;
        });
        Ok(RunningSandbox { addr, task })
    }
}

async fn gateway(State(sb): State<Sandbox>, RawQuery(query): RawQuery, body: Bytes) -> Response {
    sb.handle(query, body).await
}

/// `POST /sandbox/pay` body.
#[derive(Debug, Deserialize)]
pub struct PayRequest {
    pub qrcode: String,
    /// Alipay's decimal form, e.g. `"3.50"`.
    pub amount: String,
    pub currency: String,
    #[serde(default)]
    pub buyer_id: Option<String>,
}

fn bad_request(msg: String) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(serde_json::json!({"error": {"code": "bad_request", "message": msg}})),
    )
        .into_response()
}

async fn pay_route(State(sb): State<Sandbox>, Json(req): Json<PayRequest>) -> Response {
    let currency: Currency = match req.currency.parse() {
        Ok(c) => c,
        Err(e) => return bad_request(format!("{e}")),
    };
    let amount = match Money::parse_decimal(&req.amount, currency) {
        Ok(a) => a,
        Err(e) => return bad_request(e.to_string()),
    };
    let buyer = match req.buyer_id.map(BuyerId::parse).transpose() {
        Ok(b) => b,
        Err(e) => return bad_request(e.to_string()),
    };
    match sb.pay(&req.qrcode, amount, buyer) {
        Ok(receipt) => Json(receipt).into_response(),
        Err(e) => bad_request(e.to_string()),
    }
}

/// `POST /sandbox/faults` body: switches queued in order.
#[derive(Debug, Default, Deserialize)]
pub struct FaultRequest {
    #[serde(default)]
    pub gateway: Vec<GatewayFault>,
    #[serde(default)]
    pub notifications: Vec<NotificationFault>,
    /// Per `partner_refund_id`: a fault to set, or `null` to clear it.
    #[serde(default)]
    pub refunds: HashMap<String, Option<RefundFault>>,
}

async fn faults_route(State(sb): State<Sandbox>, Json(req): Json<FaultRequest>) -> StatusCode {
    for f in req.gateway {
        sb.push_gateway_fault(f);
    }
    for f in req.notifications {
        sb.push_notification_fault(f);
    }
    for (id, f) in req.refunds {
        sb.set_refund_fault(&id, f);
    }
    StatusCode::NO_CONTENT
}

async fn deliveries_route(State(sb): State<Sandbox>) -> Json<Vec<Delivery>> {
    Json(sb.deliveries())
}
