//! Adapters from vendpay's ports to Alipay's mapi gateway (`vendpay-alipay`): refunds for the refund
//! executor, QR codes for provisioning, `notify_verify` and `overseas.query` for the notification
//! route.

use std::sync::Arc;

use async_trait::async_trait;
use vendpay_alipay::{
    AlipayError, AlipayGateway, ErrorCode, HttpGateway, MerchantProfile, NotifyId, NotifyUrl,
    QrCodeCreate, RefundRequest, TradeQuery, TradeRef,
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
        let result = self.gateway.refund(&req).await;
        if let Ok(outcome) = &result {
            tracing::info!(
                refund_id = %order.refund_id,
                repeated = outcome.repeated,
                "Alipay confirmed the refund"
            );
        }
        refund_verdict(result.map(|_| ()))
    }
}

/// What a refund attempt's result lets the ledger record (only a verified answer decides).
/// Success comes only from a verified, echoed answer (the client checks that). `Failed` only from a
/// listed permanent code in a correctly signed answer that echoes this refund — the client reports
/// those, and only those, as `AlipayError::Failed`. Everything else — an unsigned gateway refusal
/// (`is_success=F`), any HTTP status, a code we do not know — leaves the refund pending, to be retried
/// with the same id and amount, because Alipay may have paid it.
pub fn refund_verdict(result: Result<(), AlipayError>) -> RefundVerdict {
    match result {
        Ok(()) => RefundVerdict::Succeeded,
        Err(AlipayError::Failed(code)) => match refusal(&code) {
            Refusal::OfThisRefund => RefundVerdict::Failed(code.as_str().to_owned()),
            Refusal::AlsoIfPaid => RefundVerdict::FailedUnlessPaid(code.as_str().to_owned()),
            Refusal::NotAVerdict => {
                RefundVerdict::Retry(format!("Alipay answered {}", code.as_str()))
            }
        },
        Err(e) => RefundVerdict::Retry(e.to_string()),
    }
}

enum Refusal {
    /// Permanent, and about this refund whatever happened before.
    OfThisRefund,
    /// Permanent, but also what a retry of a refund Alipay already paid can meet (the trade closed by it,
    /// its refundable amount used up by it): decides only a first send.
    AlsoIfPaid,
    /// About our request or configuration (signature, partner, privilege, arguments), not about the
    /// refund: one bad key would otherwise record every refund failed. Retried, then `refund_stuck`.
    NotAVerdict,
}

/// The codes the gateway lists for `spot.refund`, by what they tell about the refund.
fn refusal(code: &ErrorCode) -> Refusal {
    match code {
        ErrorCode::PurchaseTradeNotExist
        | ErrorCode::RefundAmtRestriction
        | ErrorCode::CurrencyNotSame
        | ErrorCode::RefundmentValidDateExceed => Refusal::OfThisRefund,
        ErrorCode::ReturnAmountExceed
        | ErrorCode::RequestAmountExceed
        | ErrorCode::TradeHasClose => Refusal::AlsoIfPaid,
        _ => Refusal::NotAVerdict,
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_listed_code_in_a_verified_answer_fails_a_refund() {
        let failed = |r| matches!(refund_verdict(r), RefundVerdict::Failed(_));
        // A signed answer echoing this refund with a listed code: failed for good.
        assert!(failed(Err(AlipayError::Failed(
            ErrorCode::PurchaseTradeNotExist
        ))));
        // Anything we cannot tie to a verified answer stays pending (Alipay may have paid).
        for unknown in [
            AlipayError::Rejected(ErrorCode::PurchaseTradeNotExist),
            AlipayError::Rejected(ErrorCode::Other(String::new())),
            AlipayError::HttpStatus(403),
            AlipayError::HttpStatus(400),
            AlipayError::Failed(ErrorCode::Other("SOMETHING_NEW".into())),
            AlipayError::Failed(ErrorCode::Other(String::new())),
        ] {
            let shown = format!("{unknown:?}");
            assert!(
                matches!(refund_verdict(Err(unknown)), RefundVerdict::Retry(_)),
                "{shown} must leave the refund pending"
            );
        }
        assert_eq!(refund_verdict(Ok(())), RefundVerdict::Succeeded);
    }

    #[test]
    fn refusals_a_paid_refund_can_also_meet_decide_only_a_first_send() {
        for code in [
            ErrorCode::TradeHasClose,
            ErrorCode::ReturnAmountExceed,
            ErrorCode::RequestAmountExceed,
        ] {
            let shown = format!("{code:?}");
            assert!(
                matches!(
                    refund_verdict(Err(AlipayError::Failed(code))),
                    RefundVerdict::FailedUnlessPaid(_)
                ),
                "{shown}"
            );
        }
    }

    #[test]
    fn refusals_of_our_request_or_keys_are_not_verdicts() {
        for code in [
            ErrorCode::IllegalSign,
            ErrorCode::IllegalPartner,
            ErrorCode::HasNoPrivilege,
            ErrorCode::IllegalArgument,
        ] {
            let shown = format!("{code:?}");
            assert!(
                matches!(
                    refund_verdict(Err(AlipayError::Failed(code))),
                    RefundVerdict::Retry(_)
                ),
                "{shown}: one bad key must not record every refund failed"
            );
        }
    }
}
