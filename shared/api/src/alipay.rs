//! Adapters from vendpay's ports to Alipay's mapi gateway (`vendpay-alipay`): refunds for the refund
//! executor, QR codes for provisioning, `notify_verify` and `overseas.query` for the notification
//! route.

use std::sync::Arc;

use async_trait::async_trait;
use vendpay_alipay::{
    AlipayError, AlipayGateway, HttpGateway, MerchantProfile, NotifyId, NotifyUrl, QrCodeCreate,
    RefundRequest, TradeQuery, TradeRef,
};
use vendpay_app::{DeviceRecord, QrCode, RefundGateway, RefundOrder, RefundVerdict};

use crate::{ProvisionError, QrProvisioner};

/// The gateway plus the merchant fields every QR code carries (`None` in functions that never create
/// QR codes: the notification route and the refund executor do not need them).
#[derive(Clone)]
pub struct Alipay {
    pub gateway: HttpGateway,
    pub merchant: Option<Arc<MerchantProfile>>,
}

#[async_trait]
impl RefundGateway for Alipay {
    async fn refund(&self, order: &RefundOrder) -> RefundVerdict {
        let req = RefundRequest {
            partner_trans_id: order.merchant_trade_no.clone(),
            alipay_trans_id: Some(order.trade_no.clone()),
            partner_refund_id: order.refund_id.clone(),
            amount: order.amount,
            reason: Some("vending balance returned".into()),
            notify_url: None,
        };
        match self.gateway.refund(&req).await {
            Ok(outcome) => {
                tracing::info!(
                    refund_id = %order.refund_id,
                    repeated = outcome.repeated,
                    "Alipay confirmed the refund"
                );
                RefundVerdict::Succeeded
            }
            Err(e) if e.is_retryable() => RefundVerdict::Retry(e.to_string()),
            Err(e) => RefundVerdict::Failed(failure_code(&e)),
        }
    }
}

fn failure_code(e: &AlipayError) -> String {
    e.code()
        .map(|c| c.as_str().to_owned())
        .unwrap_or_else(|| e.to_string())
}

#[async_trait]
impl QrProvisioner for Alipay {
    async fn create(
        &self,
        device: &DeviceRecord,
        notify_url: &str,
    ) -> Result<QrCode, ProvisionError> {
        let permanent = |message: String| ProvisionError {
            retryable: false,
            message,
        };
        let notify_url = NotifyUrl::parse(notify_url).map_err(|e| permanent(e.to_string()))?;
        let merchant = self.merchant.as_ref().ok_or_else(|| {
            permanent("the merchant fields of qrcode.create (ALIPAY_SECONDARY_MERCHANT_ID, ...) are not configured here".into())
        })?;
        let req = QrCodeCreate {
            notify_url,
            biz: merchant.biz_data(&device.device.id, &device.name, device.device.currency),
        };
        let info = self
            .gateway
            .qrcode_create(&req)
            .await
            .map_err(|e| ProvisionError {
                retryable: e.is_retryable(),
                message: e.to_string(),
            })?;
        Ok(QrCode {
            qrcode: info.qrcode.as_str().to_owned(),
            qrcode_img_url: info.qrcode_img_url.unwrap_or_default(),
        })
    }
}

/// The second check on a first-seen notification (`ALIPAY_NOTIFY_VERIFY`).
#[async_trait]
pub trait NotifyCheck: Send + Sync {
    /// `notify_verify`: did Alipay send this notification id to our partner id (and is it still
    /// fresh)? It expires within minutes while Alipay resends for 25 hours.
    async fn genuine(&self, notify_id: &NotifyId) -> Result<bool, AlipayError>;

    /// `alipay.acquire.overseas.query` under our partner id: what Alipay's books hold for the trade.
    /// It does not expire, so it decides when `genuine` says no or cannot be reached.
    async fn trade(&self, trade: &TradeRef) -> Result<TradeQuery, AlipayError>;
}

#[async_trait]
impl NotifyCheck for Alipay {
    async fn genuine(&self, notify_id: &NotifyId) -> Result<bool, AlipayError> {
        self.gateway.notify_verify(notify_id).await
    }

    async fn trade(&self, trade: &TradeRef) -> Result<TradeQuery, AlipayError> {
        self.gateway.query(trade).await
    }
}
