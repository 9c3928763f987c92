//! `POST /alipay/notify/{device_id}`: Alipay's payment notifications.
//!
//! The answer is the body `success` only once the payment is durably recorded (duplicates included);
//! anything else makes Alipay resend for 25 hours. A notification that cannot be trusted — bad or missing
//! signature, another partner, a device that does not match — is refused with a non-`success` body and
//! logged with the reason (never keys or full signatures); a transient failure answers 503 so Alipay
//! comes back. A first-seen payment is confirmed with Alipay (`ALIPAY_NOTIFY_VERIFY`): `notify_verify`,
//! and `overseas.query` under our partner id when that says no or cannot be reached.

use std::sync::Arc;

use bytes::Bytes;
use http::{header, Response, StatusCode};
use vendpay_alipay::time::parse_gmt8;
use vendpay_alipay::{
    verify_notification, AlipayError, NotificationKind, NotifyId, PartnerId, Payment, TradeRef,
    Verifier,
};
use vendpay_app::{AppError, DeviceStore, Ledger};
use vendpay_domain::{DeviceId, IncomingPayment};

use crate::alipay::NotifyCheck;

/// What the notification route needs, built once.
#[derive(Clone)]
pub struct NotifySettings {
    pub verifier: Arc<Verifier>,
    pub partner: PartnerId,
    /// `ALIPAY_NOTIFY_VERIFY`: ask Alipay whether a first-seen payment is genuine (`notify_verify`,
    /// then `overseas.query` when that says no or cannot be reached).
    pub notify_verify: Option<Arc<dyn NotifyCheck>>,
}

/// Why a notification was not acknowledged; the code goes to the log and the response body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub status: u16,
    pub code: &'static str,
    pub reason: String,
}

impl Refusal {
    fn new(status: u16, code: &'static str, reason: impl Into<String>) -> Refusal {
        Refusal {
            status,
            code,
            reason: reason.into(),
        }
    }
}

fn text(status: StatusCode, body: String) -> Response<Bytes> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(Bytes::from(body))
        .unwrap_or_else(|_| Response::new(Bytes::new()))
}

/// Answers one notification: `200 success`, or a refusal (`fail: <code>`) that makes Alipay resend.
pub async fn handle(
    settings: &NotifySettings,
    ledger: &Ledger,
    devices: &dyn DeviceStore,
    device_raw: &str,
    body: &[u8],
) -> Response<Bytes> {
    match acknowledge(settings, ledger, devices, device_raw, body).await {
        Ok(()) => text(StatusCode::OK, "success".into()),
        Err(r) => {
            if r.status >= 500 {
                tracing::warn!(device = %device_raw, code = r.code, reason = %r.reason, "notification not acknowledged (will be resent)");
            } else {
                tracing::warn!(device = %device_raw, code = r.code, reason = %r.reason, "notification refused");
            }
            let status = StatusCode::from_u16(r.status).unwrap_or(StatusCode::BAD_REQUEST);
            text(status, format!("fail: {}", r.code))
        }
    }
}

/// Verifies, identifies and records; `Ok` means the notification may be acknowledged.
pub async fn acknowledge(
    settings: &NotifySettings,
    ledger: &Ledger,
    devices: &dyn DeviceStore,
    device_raw: &str,
    body: &[u8],
) -> Result<(), Refusal> {
    let n = verify_notification(body, &settings.verifier).map_err(|e| {
        let code = match e {
            vendpay_alipay::NotifyError::Signature(_) => "bad_signature",
            _ => "malformed",
        };
        Refusal::new(400, code, e.to_string())
    })?;
    for field in ["partner", "seller_id"] {
        if let Some(p) = n.fields.get(field) {
            if p != settings.partner.as_str() {
                return Err(Refusal::new(
                    400,
                    "wrong_partner",
                    format!("{field} {p:?} is not our partner id"),
                ));
            }
        }
    }
    let device = DeviceId::parse(device_raw)
        .map_err(|e| Refusal::new(404, "unknown_device", e.to_string()))?;
    let record = devices
        .device(&device)
        .await
        .map_err(|e| Refusal::new(503, "unavailable", e.to_string()))?
        .ok_or_else(|| Refusal::new(404, "unknown_device", format!("no device {device}")))?;

    let p = match n.kind {
        NotificationKind::Payment(p) => p,
        NotificationKind::RefundEcho(e) => {
            tracing::info!(device = %device, trade_no = %e.trade_no, status = ?e.status, "refund echo acknowledged");
            return Ok(());
        }
        NotificationKind::Closed(e) => {
            tracing::info!(device = %device, trade_no = %e.trade_no, "trade closed notice acknowledged");
            return Ok(());
        }
        NotificationKind::Other { status, action } => {
            tracing::info!(device = %device, ?status, ?action, "notification without a payment acknowledged");
            return Ok(());
        }
    };

    if let Some(passback) = &p.passback_parameters {
        let named = serde_json::from_str::<serde_json::Value>(passback)
            .ok()
            .and_then(|v| {
                v.get("device_id")
                    .and_then(|d| d.as_str())
                    .map(str::to_owned)
            });
        match named {
            Some(d) if d == device.as_str() => {}
            Some(d) => {
                return Err(Refusal::new(
                    400,
                    "device_mismatch",
                    format!("passback names {d:?}, the path {device}"),
                ))
            }
            None => {
                return Err(Refusal::new(
                    400,
                    "device_mismatch",
                    "passback_parameters do not name a device_id",
                ))
            }
        }
    }

    let seen = ledger
        .store()
        .trade(&p.trade_no)
        .await
        .map_err(|e| Refusal::new(503, "unavailable", e.to_string()))?;
    if seen.is_none() {
        if let Some(check) = &settings.notify_verify {
            confirm_first_seen(check.as_ref(), n.notify_id.as_ref(), &p).await?;
        }
    }

    let now = ledger.now();
    let payment = IncomingPayment {
        trade_no: p.trade_no.clone(),
        merchant_trade_no: p.out_trade_no,
        amount: p.amount,
        buyer_id: p.buyer_id,
        paid_at: p.gmt_payment.as_deref().and_then(parse_gmt8).unwrap_or(now),
    };
    match ledger.payment(&record.device.id, &payment).await {
        Ok(outcome) => {
            tracing::info!(
                device = %device,
                trade_no = %p.trade_no,
                session = %outcome.session,
                disposition = ?outcome.disposition,
                amount = %p.amount,
                "payment recorded"
            );
            Ok(())
        }
        Err(e) if e.is_retryable() => Err(Refusal::new(503, "unavailable", e.to_string())),
        Err(AppError::UnknownDevice(d)) => Err(Refusal::new(
            404,
            "unknown_device",
            format!("no device {d}"),
        )),
        Err(e) => Err(Refusal::new(500, "internal", e.to_string())),
    }
}

/// How long `notify_verify` may take before the query is asked instead.
const NOTIFY_VERIFY_BUDGET: std::time::Duration = std::time::Duration::from_secs(5);
/// How long `overseas.query` may take before the notification is answered 503 (Alipay resends).
const QUERY_BUDGET: std::time::Duration = std::time::Duration::from_secs(10);

/// Asks Alipay whether a first-seen payment is ours and paid: `notify_verify` first; when it says no
/// or cannot be reached, `overseas.query` under our partner id. A notification id expires within
/// minutes, so the resend that follows a failed write (our 503) always meets a `false` here: refusing
/// it would leave a genuine payment neither credited nor refunded.
async fn confirm_first_seen(
    check: &dyn NotifyCheck,
    notify_id: Option<&NotifyId>,
    p: &Payment,
) -> Result<(), Refusal> {
    let notify_id =
        notify_id.ok_or_else(|| Refusal::new(400, "malformed", "missing field notify_id"))?;
    // Each check has its own budget, so a hanging notify_verify still leaves time for the query within
    // the function's timeout (the template gives alipay-notify 28 s).
    let verify = match tokio::time::timeout(NOTIFY_VERIFY_BUDGET, check.genuine(notify_id))
        .await
        .unwrap_or(Err(AlipayError::Timeout))
    {
        Ok(true) => return Ok(()),
        Ok(false) => "notify_verify answered false".to_owned(),
        Err(e) => format!("notify_verify failed ({e})"),
    };
    let trade = TradeRef::Both(p.out_trade_no.clone(), p.trade_no.clone());
    let q = match tokio::time::timeout(QUERY_BUDGET, check.trade(&trade))
        .await
        .unwrap_or(Err(AlipayError::Timeout))
    {
        Ok(q) => q,
        // Alipay's own "no such trade" is an answer. Any other refusal (our signature, our partner id,
        // our privileges) is our configuration, not the notification's: 503 and resend.
        Err(e) if e.code().is_some_and(|c| c.as_str() == "TRADE_NOT_EXIST") => {
            return Err(Refusal::new(
                400,
                "not_genuine",
                format!("{verify}; overseas.query: {e}"),
            ))
        }
        // Unreachable, or an answer we cannot trust (signature, shape): nothing is known yet.
        Err(e) => {
            return Err(Refusal::new(
                503,
                "unavailable",
                format!("{verify}; overseas.query: {e}"),
            ))
        }
    };
    let mismatch = if !q.status.is_paid() {
        Some(format!("trade status {}", q.status.as_str()))
    } else if q.amount != p.amount {
        Some(format!(
            "Alipay holds {} for the trade, not {}",
            q.amount, p.amount
        ))
    } else if q.trade_no.as_ref() != Some(&p.trade_no) {
        Some(format!("answer names trade {:?}", q.trade_no))
    } else if q
        .out_trade_no
        .as_ref()
        .is_some_and(|o| *o != p.out_trade_no)
    {
        Some(format!("answer names out_trade_no {:?}", q.out_trade_no))
    } else {
        None
    };
    match mismatch {
        Some(m) => Err(Refusal::new(
            400,
            "not_genuine",
            format!("{verify}; overseas.query: {m}"),
        )),
        None => {
            tracing::info!(trade_no = %p.trade_no, %verify, "payment confirmed by overseas.query");
            Ok(())
        }
    }
}
