//! Every way a call to Alipay can fail, classified once so callers decide to retry without string
//! matching (see `docs/alipay.md`, “Answer verdicts”).

use std::fmt;

use crate::sign::SignatureError;

/// An Alipay error code (`<error>` of a refused request, or `error` of a failed business answer).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// `UNKNOW` (sic): the outcome is not known yet.
    Unknow,
    SystemError,
    SystemException,
    PurchaseTradeNotExist,
    ReturnAmountExceed,
    RequestAmountExceed,
    RefundAmtRestriction,
    CurrencyNotSame,
    RefundmentValidDateExceed,
    TradeHasClose,
    IllegalSign,
    IllegalArgument,
    IllegalPartner,
    HasNoPrivilege,
    RepeatedRefundmentRequest,
    /// A code this client does not know; permanent until someone looks at it.
    Other(String),
}

const CODES: &[(&str, ErrorCode)] = &[
    ("UNKNOW", ErrorCode::Unknow),
    ("SYSTEM_ERROR", ErrorCode::SystemError),
    ("SYSTEM_EXCEPTION", ErrorCode::SystemException),
    ("PURCHASE_TRADE_NOT_EXIST", ErrorCode::PurchaseTradeNotExist),
    ("RETURN_AMOUNT_EXCEED", ErrorCode::ReturnAmountExceed),
    ("REQUEST_AMOUNT_EXCEED", ErrorCode::RequestAmountExceed),
    ("REFUND_AMT_RESTRICTION", ErrorCode::RefundAmtRestriction),
    ("CURRENCY_NOT_SAME", ErrorCode::CurrencyNotSame),
    (
        "REFUNDMENT_VALID_DATE_EXCEED",
        ErrorCode::RefundmentValidDateExceed,
    ),
    ("TRADE_HAS_CLOSE", ErrorCode::TradeHasClose),
    ("ILLEGAL_SIGN", ErrorCode::IllegalSign),
    ("ILLEGAL_ARGUMENT", ErrorCode::IllegalArgument),
    ("ILLEGAL_PARTNER", ErrorCode::IllegalPartner),
    ("HAS_NO_PRIVILEGE", ErrorCode::HasNoPrivilege),
    (
        "REPEATED_REFUNDMENT_REQUEST",
        ErrorCode::RepeatedRefundmentRequest,
    ),
];

impl ErrorCode {
    pub fn parse(code: &str) -> ErrorCode {
        CODES
            .iter()
            .find(|(s, _)| *s == code)
            .map(|(_, c)| c.clone())
            .unwrap_or_else(|| ErrorCode::Other(code.chars().take(128).collect()))
    }

    pub fn as_str(&self) -> &str {
        match self {
            ErrorCode::Other(s) => s,
            known => CODES
                .iter()
                .find(|(_, c)| c == known)
                .map(|(s, _)| *s)
                .unwrap_or(""),
        }
    }

    /// Only Alipay's own "try again" codes; everything else needs a person before it is retried.
    /// `REPEATED_REFUNDMENT_REQUEST` reaching here came without a verified matching amount (that case
    /// is a success): Alipay paid under the id for an amount we cannot see, so the outcome is unknown
    /// and the same request is safe to send again.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            ErrorCode::Unknow
                | ErrorCode::SystemError
                | ErrorCode::SystemException
                | ErrorCode::RepeatedRefundmentRequest
        )
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A failed call to Alipay.
#[derive(Debug, thiserror::Error)]
pub enum AlipayError {
    #[error("Alipay did not answer in time")]
    Timeout,
    #[error("could not connect to Alipay: {0}")]
    Connect(String),
    #[error("HTTP exchange with Alipay failed: {0}")]
    Transport(String),
    #[error("Alipay answered HTTP {0}")]
    HttpStatus(u16),
    #[error("Alipay answered something that is not its XML (gateway error page?): {0:?}")]
    NotXml(String),
    #[error("Alipay refused the request: {0}")]
    Rejected(ErrorCode),
    #[error("Alipay reported failure: {0}")]
    Failed(ErrorCode),
    #[error("Alipay reported result_code {0:?}: outcome unknown")]
    Unknown(String),
    #[error("Alipay's answer failed signature verification: {0}")]
    AnswerSignature(#[from] SignatureError),
    #[error("Alipay's answer is malformed: {0}")]
    Malformed(String),
    #[error(
        "Alipay's answer cannot be verified as the answer to this request (outcome unknown): {0}"
    )]
    Unverified(String),
    #[error("refund {refund_id} was already made for {recorded}, not the {requested} now asked")]
    RefundAmountMismatch {
        refund_id: String,
        requested: String,
        recorded: String,
    },
    #[error("request could not be built: {0}")]
    Request(String),
}

impl AlipayError {
    /// True when the same request (same `partner_refund_id`, same amount) may simply be sent again.
    pub fn is_retryable(&self) -> bool {
        match self {
            AlipayError::Timeout
            | AlipayError::Connect(_)
            | AlipayError::Transport(_)
            | AlipayError::NotXml(_)
            | AlipayError::Unknown(_)
            | AlipayError::Unverified(_) => true,
            // An id used before with another amount: Alipay may have paid under it, so only a person
            // (through reconciliation) can settle it; "failed" would invite a refund by hand.
            AlipayError::RefundAmountMismatch { .. } => true,
            AlipayError::HttpStatus(s) => *s >= 500 || *s == 429 || *s == 408,
            AlipayError::Rejected(code) | AlipayError::Failed(code) => code.is_retryable(),
            AlipayError::AnswerSignature(_)
            | AlipayError::Malformed(_)
            | AlipayError::Request(_) => false,
        }
    }

    /// The Alipay error code, when Alipay gave one.
    pub fn code(&self) -> Option<&ErrorCode> {
        match self {
            AlipayError::Rejected(c) | AlipayError::Failed(c) => Some(c),
            _ => None,
        }
    }

    pub(crate) fn from_reqwest(e: &reqwest::Error) -> AlipayError {
        if e.is_timeout() {
            AlipayError::Timeout
        } else if e.is_connect() {
            AlipayError::Connect(e.to_string())
        } else {
            AlipayError::Transport(e.to_string())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_classify_per_spec() {
        for (s, c) in CODES {
            assert_eq!(ErrorCode::parse(s), *c);
            assert_eq!(c.as_str(), *s);
        }
        for s in ["UNKNOW", "SYSTEM_ERROR", "SYSTEM_EXCEPTION"] {
            assert!(ErrorCode::parse(s).is_retryable(), "{s}");
            assert!(AlipayError::Failed(ErrorCode::parse(s)).is_retryable());
        }
        for s in [
            "PURCHASE_TRADE_NOT_EXIST",
            "RETURN_AMOUNT_EXCEED",
            "REQUEST_AMOUNT_EXCEED",
            "REFUND_AMT_RESTRICTION",
            "CURRENCY_NOT_SAME",
            "REFUNDMENT_VALID_DATE_EXCEED",
            "TRADE_HAS_CLOSE",
            "ILLEGAL_SIGN",
            "ILLEGAL_ARGUMENT",
            "ILLEGAL_PARTNER",
            "HAS_NO_PRIVILEGE",
            "SOMETHING_NEW",
        ] {
            assert!(!ErrorCode::parse(s).is_retryable(), "{s}");
            assert!(!AlipayError::Rejected(ErrorCode::parse(s)).is_retryable());
        }
        assert_eq!(
            ErrorCode::parse("SOMETHING_NEW"),
            ErrorCode::Other("SOMETHING_NEW".into())
        );
    }

    #[test]
    fn transport_failures_are_retryable_client_errors_are_not() {
        assert!(AlipayError::Timeout.is_retryable());
        assert!(AlipayError::Connect("refused".into()).is_retryable());
        assert!(AlipayError::NotXml("<html>".into()).is_retryable());
        assert!(AlipayError::HttpStatus(502).is_retryable());
        assert!(AlipayError::Unknown("UNKNOW".into()).is_retryable());
        assert!(AlipayError::HttpStatus(408).is_retryable());
        assert!(AlipayError::Unverified("no echo".into()).is_retryable());
        assert!(AlipayError::RefundAmountMismatch {
            refund_id: "r1".into(),
            requested: "1.00 CNY".into(),
            recorded: "2.00 CNY".into(),
        }
        .is_retryable());
        assert!(!AlipayError::HttpStatus(404).is_retryable());
        assert!(!AlipayError::AnswerSignature(SignatureError::Mismatch).is_retryable());
        assert!(!AlipayError::Malformed("x".into()).is_retryable());
    }
}
