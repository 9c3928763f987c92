//! vendpay's Alipay "mapi" client (see `docs/alipay.md`): everything vendpay says to and hears from
//! Alipay's cross-border gateway.
//!
//! - [`presign`]: the pre-sign string; [`sign`]: MD5 / RSA / RSA2 signing and verification;
//!   [`keys`]: key text (PEM or Base64, PKCS#1 / PKCS#8 / SPKI) read once.
//! - [`request`]: the services' parameters; [`response`]: XML answers and their typed results;
//!   [`error`]: every failure, classified retryable or permanent.
//! - [`notify`]: payment notifications, parsed strictly and verified over every received field.
//! - [`client`]: configuration, the shared HTTP client and [`AlipayGateway`], the port later code uses.
//! - [`time`]: Alipay's GMT+8 timestamps.
//!
//! Crypto: RSA2 signing and all RSA verification use aws-lc-rs (constant time). aws-lc-rs cannot sign
//! with SHA-1, so the legacy `RSA` sign type signs with the `rsa` crate, whose RUSTSEC-2023-0071 timing
//! side channel affects exactly that operation: use `RSA2` unless an old account forces `RSA`.

pub mod client;
pub mod error;
pub mod keys;
pub mod notify;
pub mod presign;
pub mod request;
pub mod response;
pub mod sign;
pub mod time;

pub use client::{
    http_client, AlipayConfig, AlipayConfigError, AlipayGateway, HttpGateway, MerchantProfile,
};
pub use error::{AlipayError, ErrorCode};
pub use keys::KeyError;
pub use notify::{
    parse_form, signed_form, verify_notification, FormFields, Notification, NotificationKind,
    NotifyError, Payment, TradeEvent,
};
pub use presign::{presign_bytes, presign_string};
pub use request::{
    NotifyId, NotifyUrl, PartnerId, QrBizData, QrCode, QrCodeCreate, QrCodeModify, QrCodeStatus,
    RefundRequest, TradeRef,
};
pub use response::{QrCodeInfo, RefundOutcome, TradeQuery, TradeStatus};
pub use sign::{Md5Key, SignType, SignatureError, Signer, Verifier};
