//! Identifiers, parsed once at the edge and trusted everywhere after.
//!
//! Every identifier is restricted to ASCII letters, digits, `-` and `_` (plus `.` and `:` where Alipay
//! or our own composite ids need them), so it can be embedded in URLs, storage keys and Alipay's
//! pre-sign strings without escaping and can never smuggle a `&name=` into a signed string.

use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("{kind} is empty")]
    Empty { kind: &'static str },
    #[error("{kind} is {len} characters long; at most {max} are allowed")]
    TooLong {
        kind: &'static str,
        len: usize,
        max: usize,
    },
    #[error("{kind} {value:?} contains {bad:?}; allowed are {allowed}")]
    BadChar {
        kind: &'static str,
        value: String,
        bad: char,
        allowed: &'static str,
    },
}

fn check(
    kind: &'static str,
    s: &str,
    max: usize,
    extra: &[char],
    allowed: &'static str,
) -> Result<(), IdError> {
    if s.is_empty() {
        return Err(IdError::Empty { kind });
    }
    if let Some(bad) = s
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_' || extra.contains(c)))
    {
        // A buyer id is personal data and the error reaches logs: only its length is told.
        let value = if kind == "buyer_id" {
            format!("<{} characters>", s.chars().count())
        } else {
            s.chars().take(80).collect()
        };
        return Err(IdError::BadChar {
            kind,
            value,
            bad,
            allowed,
        });
    }
    if s.len() > max {
        return Err(IdError::TooLong {
            kind,
            len: s.len(),
            max,
        });
    }
    Ok(())
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $kind:literal, $max:expr, [$($extra:literal),*], $allowed:literal) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            pub const MAX_LEN: usize = $max;

            pub fn parse(s: impl Into<String>) -> Result<Self, IdError> {
                let s = s.into();
                check($kind, &s, $max, &[$($extra),*], $allowed)?;
                Ok($name(s))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(s: String) -> Result<Self, IdError> {
                Self::parse(s)
            }
        }

        impl std::str::FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                Self::parse(s)
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

id_type!(
    /// A vending machine; also its Alipay `store_id` (1–32 of letters, digits, `-`, `_`).
    DeviceId, "device id", 32, [], "letters, digits, '-' and '_'"
);
id_type!(
    /// Alipay's `trade_no` of a payment.
    TradeNo, "trade_no", 64, [], "letters, digits, '-' and '_'"
);
id_type!(
    /// The merchant-side trade number Alipay reports as `out_trade_no` (refunds name it as
    /// `partner_trans_id`).
    MerchantTradeNo, "out_trade_no", 64, [], "letters, digits, '-' and '_'"
);
id_type!(
    /// A session or order on a machine; derived from what opened it, so opening is idempotent.
    SessionId, "session id", 128, [':'], "letters, digits, '-', '_' and ':'"
);
id_type!(
    /// A purchase-first order, chosen by the machine.
    OrderId, "order_id", 64, [], "letters, digits, '-' and '_'"
);
id_type!(
    /// A machine's purchase request, chosen by the machine; the idempotency key of the purchase.
    RequestId, "request_id", 64, [], "letters, digits, '-' and '_'"
);
id_type!(
    /// Alipay's `partner_refund_id`: the same for every retry of one refund.
    RefundId, "partner_refund_id", 64, [], "letters, digits, '-' and '_'"
);
id_type!(
    /// A vending slot (the item's position in the machine).
    Slot, "slot", 32, ['.', ':'], "letters, digits, '-', '_', '.' and ':'"
);
id_type!(
    /// A product of the catalogue (1–64 of letters, digits, `.`, `-`, `_`).
    Sku, "sku", 64, ['.'], "letters, digits, '-', '_' and '.'"
);
id_type!(
    /// Alipay's buyer identity (`buyer_id`), when the notification carries one.
    BuyerId, "buyer_id", 64, ['.', '@', '*'], "letters, digits, '-', '_', '.', '@' and '*'"
);

impl SessionId {
    /// A pay-first session is named after the payment that opened it.
    pub fn for_payment(trade: &TradeNo) -> SessionId {
        SessionId(format!("s:{}", trade.as_str()))
    }

    /// The holder of a refused payment (machine busy, wrong currency, no order, ...).
    pub fn for_refused(trade: &TradeNo) -> SessionId {
        SessionId(format!("r:{}", trade.as_str()))
    }

    /// A purchase-first order is named after the machine and the machine's order id.
    pub fn for_order(device: &DeviceId, order: &OrderId) -> SessionId {
        SessionId(format!("o:{}:{}", device.as_str(), order.as_str()))
    }
}

impl RequestId {
    /// In purchase first the order id serves as the request id of its vend report.
    pub fn for_order(order: &OrderId) -> RequestId {
        RequestId(order.as_str().to_owned())
    }
}

impl RefundId {
    /// The `seq`-th refund (1-based) of a trade. Deterministic, so every retry of the same decision names
    /// the same refund. Short trade numbers stay readable; long ones are hashed to fit 64 characters.
    pub fn for_trade(trade: &TradeNo, seq: u32) -> RefundId {
        let suffix = format!("-r{seq}");
        if trade.as_str().len() + suffix.len() <= Self::MAX_LEN {
            return RefundId(format!("{}{suffix}", trade.as_str()));
        }
        let digest = Sha256::digest(trade.as_str().as_bytes());
        let hex: String = digest.iter().take(20).map(|b| format!("{b:02x}")).collect();
        RefundId(format!("h{hex}{suffix}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_id_follows_store_id_rules() {
        assert!(DeviceId::parse("vm-001_A").is_ok());
        assert_eq!(
            DeviceId::parse(""),
            Err(IdError::Empty { kind: "device id" })
        );
        assert!(matches!(
            DeviceId::parse("a".repeat(33)),
            Err(IdError::TooLong {
                len: 33,
                max: 32,
                ..
            })
        ));
        assert!(DeviceId::parse("a".repeat(32)).is_ok());
        for bad in ["vm 1", "vm/1", "vm&x=1", "vm.1", "é"] {
            assert!(
                matches!(DeviceId::parse(bad), Err(IdError::BadChar { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn a_malformed_buyer_id_is_never_repeated_in_the_error() {
        // Buyer ids are personal data: the error (which reaches logs) names the bad character only.
        let e = BuyerId::parse("2088 0000 1234 5678").unwrap_err();
        assert!(!e.to_string().contains("2088"), "{e}");
        assert!(e.to_string().contains("buyer_id"), "{e}");
        let e = DeviceId::parse("vm 1").unwrap_err();
        assert!(
            e.to_string().contains("\"vm 1\""),
            "other ids are quoted: {e}"
        );
    }

    #[test]
    fn refund_ids_are_deterministic_and_short() {
        let t = TradeNo::parse("2024010222001").unwrap();
        assert_eq!(RefundId::for_trade(&t, 1).as_str(), "2024010222001-r1");
        assert_eq!(RefundId::for_trade(&t, 1), RefundId::for_trade(&t, 1));
        assert_ne!(RefundId::for_trade(&t, 1), RefundId::for_trade(&t, 2));
        let long = TradeNo::parse("9".repeat(64)).unwrap();
        let long2 = TradeNo::parse(format!("{}8", "9".repeat(63))).unwrap();
        let id = RefundId::for_trade(&long, 12);
        assert!(id.as_str().len() <= 64);
        assert!(RefundId::parse(id.as_str()).is_ok());
        assert_ne!(id, RefundId::for_trade(&long2, 12));
        assert_eq!(id, RefundId::for_trade(&long, 12));
    }

    #[test]
    fn derived_ids_are_valid_ids() {
        let t = TradeNo::parse("9".repeat(64)).unwrap();
        let d = DeviceId::parse("d".repeat(32)).unwrap();
        let o = OrderId::parse("o".repeat(64)).unwrap();
        for s in [
            SessionId::for_payment(&t),
            SessionId::for_refused(&t),
            SessionId::for_order(&d, &o),
        ] {
            assert_eq!(SessionId::parse(s.as_str()), Ok(s.clone()));
        }
    }
}
