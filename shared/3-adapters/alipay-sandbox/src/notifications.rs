//! Payment notifications: the "pay" operation records a trade and delivers its signed notification to
//! the QR code's `notify_url` on Alipay's resend schedule (with the drop / duplicate switches), and
//! `notify_verify` confirms only the sandbox's own, unexpired `notify_id`s. Kept apart from the gateway
//! because this is the sandbox calling the merchant, in the background, rather than answering it.

use std::time::Duration;

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use vendpay_alipay::time::format_gmt8;
use vendpay_alipay::{signed_form, FormFields};
use vendpay_domain::{BuyerId, Money, Timestamp};

use crate::books::{QrInput, Trade};
use crate::{
    lock, Delivery, NotificationFault, PaymentReceipt, Sandbox, SandboxError, RESEND_SCHEDULE_SECS,
};

impl Sandbox {
    pub fn push_notification_fault(&self, fault: NotificationFault) {
        lock(&self.inner.faults).notifications.push_back(fault);
    }

    pub fn deliveries(&self) -> Vec<Delivery> {
        lock(&self.inner.deliveries).clone()
    }

    /// A buyer pays `amount` on `qrcode`: the trade is recorded and its signed notification is POSTed
    /// to the code's `notify_url` in the background, resent until the answer is `success`. Call it
    /// inside a Tokio runtime (the delivery is a spawned task).
    pub fn pay(
        &self,
        qrcode: &str,
        amount: Money,
        buyer_id: Option<BuyerId>,
    ) -> Result<PaymentReceipt, SandboxError> {
        let now = self.inner.clock.now();
        let (trade, qr) = {
            let mut books = lock(&self.inner.books);
            let trade = books
                .pay(qrcode, amount, buyer_id.map(String::from), now)
                .map_err(SandboxError::Pay)?;
            let qr = books
                .qr(qrcode)
                .cloned()
                .ok_or(SandboxError::Pay("QRCODE_NOT_EXIST"))?;
            (trade, qr)
        };
        let notify_id = format!("sbxn{}{}", now.millis(), trade.trade_no);
        lock(&self.inner.notify_ids).insert(notify_id.clone(), now);
        let body = self.notification_body(&trade, &qr.input, &notify_id, now)?;
        let fault = lock(&self.inner.faults).notifications.pop_front();
        let receipt = PaymentReceipt {
            trade_no: trade.trade_no.clone(),
            out_trade_no: trade.out_trade_no.clone(),
            notify_id: notify_id.clone(),
        };
        let sandbox = self.clone();
        let url = qr.input.notify_url.clone();
        tokio::spawn(async move {
            sandbox
                .deliver(url, body, trade.trade_no, notify_id, fault)
                .await;
        });
        Ok(receipt)
    }

    fn notification_body(
        &self,
        trade: &Trade,
        qr: &QrInput,
        notify_id: &str,
        now: Timestamp,
    ) -> Result<String, SandboxError> {
        let time = format_gmt8(now);
        let total = trade.amount.to_decimal();
        let mut fields: Vec<(&str, &str)> = vec![
            ("notify_id", notify_id),
            ("notify_time", &time),
            ("notify_type", "trade_status_sync"),
            ("notify_action_type", "payByAccountAction"),
            ("out_trade_no", &trade.out_trade_no),
            ("trade_no", &trade.trade_no),
            ("trade_status", "TRADE_SUCCESS"),
            ("total_fee", &total),
            ("trans_currency", trade.amount.currency().code()),
            ("currency", qr.currency.code()),
            ("subject", &qr.store_name),
            ("gmt_payment", &time),
        ];
        if let Some(b) = &trade.buyer_id {
            fields.push(("buyer_id", b));
        }
        if let Some(p) = &qr.passback {
            fields.push(("passback_parameters", p));
        }
        let signer = self.signer_for(self.inner.config.notify_sign_type);
        let signer = signer.ok_or_else(|| SandboxError::Config("no notification signer".into()))?;
        signed_form(fields, signer).map_err(|e| SandboxError::Config(e.to_string()))
    }

    async fn deliver(
        &self,
        url: String,
        body: String,
        trade_no: String,
        notify_id: String,
        fault: Option<NotificationFault>,
    ) {
        let log = |attempt: u32, answer: Option<String>, dropped: bool| {
            lock(&self.inner.deliveries).push(Delivery {
                trade_no: trade_no.clone(),
                notify_id: notify_id.clone(),
                attempt,
                answer,
                dropped,
            });
        };
        if fault == Some(NotificationFault::Drop) {
            log(0, None, true);
            return;
        }
        let scale = self.inner.config.time_scale;
        let delays = std::iter::once(0).chain(RESEND_SCHEDULE_SECS);
        for (attempt, delay) in (1u32..).zip(delays) {
            tokio::time::sleep(Duration::from_secs_f64(delay as f64 * scale)).await;
            let answer = self.post_notification(&url, &body).await;
            let ok = answer.as_deref() == Some("success");
            log(attempt, answer, false);
            if ok {
                if fault == Some(NotificationFault::Duplicate) {
                    let again = self.post_notification(&url, &body).await;
                    log(attempt + 1, again, false);
                }
                return;
            }
        }
    }

    async fn post_notification(&self, url: &str, body: &str) -> Option<String> {
        let resp = self
            .inner
            .http
            .post(url)
            .header(
                header::CONTENT_TYPE,
                "application/x-www-form-urlencoded; charset=UTF-8",
            )
            .body(body.to_owned())
            .send()
            .await
            .ok()?;
        let status = resp.status();
        let text = resp.text().await.ok()?;
        Some(if status.is_success() {
            text
        } else {
            format!("HTTP {status}")
        })
    }

    pub(crate) fn notify_verify(&self, params: &FormFields) -> Response {
        let now = self.inner.clock.now();
        let ttl = self.inner.config.notify_id_ttl;
        let valid = params
            .get("notify_id")
            .and_then(|id| lock(&self.inner.notify_ids).get(id).copied())
            .is_some_and(|issued| issued.plus(ttl) >= now);
        (StatusCode::OK, if valid { "true" } else { "false" }).into_response()
    }
}
