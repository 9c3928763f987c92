//! Who may call: machines sign every request with their secret (HMAC-SHA256; see
//! `docs/contract.md`, “Machine authentication”); operators present the admin token (or come through
//! IAM on AWS).
//!
//! A machine's secret is never stored. Registration draws a random salt; the secret is
//! `HMAC-SHA256(device key, "vendpay/device/v1/" + device id + "/" + salt)`, shown to the operator once;
//! the store keeps only `v1:<salt>`. Verifying a request re-derives the secret from the server's device
//! key (configuration, like the Alipay keys), so a copy of the table alone cannot sign for a machine.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use vendpay_domain::facts::AnalyticsKey;
use vendpay_domain::{DeviceId, Timestamp};

type HmacSha256 = Hmac<Sha256>;

/// How far a request's `X-Timestamp` may be from the server's clock.
pub const MAX_SKEW_SECS: i64 = 300;

/// The server's key from which every machine secret is derived.
#[derive(Clone)]
pub struct DeviceKey(Vec<u8>);

impl std::fmt::Debug for DeviceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DeviceKey(..)")
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("{setting} must be at least 32 bytes written as 64+ hex digits")]
    TooShort { setting: &'static str },
    #[error("{setting} is not hex: {reason}")]
    NotHex {
        setting: &'static str,
        reason: String,
    },
    #[error("could not draw random bytes: {0}")]
    Random(String),
}

impl DeviceKey {
    /// Parses the configured key (hex, at least 32 bytes). `setting` names the variable for errors.
    pub fn from_hex(setting: &'static str, hex_key: &str) -> Result<DeviceKey, KeyError> {
        let bytes = hex::decode(hex_key.trim()).map_err(|e| KeyError::NotHex {
            setting,
            reason: e.to_string(),
        })?;
        if bytes.len() < 32 {
            return Err(KeyError::TooShort { setting });
        }
        Ok(DeviceKey(bytes))
    }

    /// A fresh random key (the local server keeps one in a file beside its database when none is
    /// configured).
    pub fn generate() -> Result<DeviceKey, KeyError> {
        Ok(DeviceKey(random_bytes(32)?))
    }

    pub fn to_hex(&self) -> String {
        hex::encode(&self.0)
    }

    /// The key buyer ids are hashed with when `ANALYTICS_KEY` is not set: derived one way from this
    /// key (a buyer key reveals nothing of it), so every process holding the device key writes the same
    /// buyer keys without a second secret to manage.
    pub fn analytics_key(&self) -> AnalyticsKey {
        match HmacSha256::new_from_slice(&self.0) {
            Ok(mut mac) => {
                mac.update(b"vendpay/analytics/v1");
                AnalyticsKey::new(mac.finalize().into_bytes().to_vec())
            }
            // HMAC takes keys of any length; kept total rather than unwrapped.
            Err(_) => AnalyticsKey::new(self.0.clone()),
        }
    }

    /// A new credential for `device`: what to store, and the secret to show once.
    pub fn new_credential(&self, device: &DeviceId) -> Result<(String, String), KeyError> {
        let salt = hex::encode(random_bytes(16)?);
        let credential = format!("v1:{salt}");
        let secret = self
            .secret(device, &credential)
            .ok_or_else(|| KeyError::Random("fresh credential did not derive".into()))?;
        Ok((credential, secret))
    }

    /// The machine's secret (hex), derived from its stored credential; `None` for an unknown format.
    pub fn secret(&self, device: &DeviceId, credential: &str) -> Option<String> {
        let salt = credential.strip_prefix("v1:")?;
        let mut mac = HmacSha256::new_from_slice(&self.0).ok()?;
        mac.update(b"vendpay/device/v1/");
        mac.update(device.as_str().as_bytes());
        mac.update(b"/");
        mac.update(salt.as_bytes());
        Some(hex::encode(mac.finalize().into_bytes()))
    }
}

/// `ANALYTICS_KEY` (hex, at least 32 bytes, like `DEVICE_KEY`).
pub fn analytics_key_from_hex(
    setting: &'static str,
    hex_key: &str,
) -> Result<AnalyticsKey, KeyError> {
    DeviceKey::from_hex(setting, hex_key).map(|k| AnalyticsKey::new(k.0))
}

fn random_bytes(n: usize) -> Result<Vec<u8>, KeyError> {
    let mut buf = vec![0u8; n];
    getrandom::fill(&mut buf).map_err(|e| KeyError::Random(e.to_string()))?;
    Ok(buf)
}

/// Why a machine's request was refused. `Mismatch` is 403, everything else 401.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("X-Device-Id {header:?} does not match the path's device {path:?}")]
    Mismatch { header: String, path: String },
    #[error("missing header {0}")]
    MissingHeader(&'static str),
    #[error("X-Timestamp must be unix seconds, got {0:?}")]
    BadTimestamp(String),
    #[error(
        "X-Timestamp is {skew} s from the server's clock; at most {MAX_SKEW_SECS} s is allowed"
    )]
    Stale { skew: i64 },
    #[error("X-Signature must be 64 hex digits")]
    MalformedSignature,
    #[error("signature does not match")]
    BadSignature,
    #[error("unknown device")]
    UnknownDevice,
}

impl AuthError {
    pub fn status(&self) -> u16 {
        match self {
            AuthError::Mismatch { .. } => 403,
            _ => 401,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            AuthError::Mismatch { .. } => "device_mismatch",
            AuthError::MissingHeader(_) => "missing_auth_header",
            AuthError::BadTimestamp(_) => "bad_timestamp",
            AuthError::Stale { .. } => "stale_timestamp",
            AuthError::MalformedSignature | AuthError::BadSignature => "bad_signature",
            AuthError::UnknownDevice => "unknown_device",
        }
    }
}

/// The string a machine signs: `METHOD \n PATH \n TIMESTAMP \n hex(SHA-256(body))`.
pub fn canonical(method: &str, path_and_query: &str, timestamp: &str, body: &[u8]) -> String {
    format!(
        "{method}\n{path_and_query}\n{timestamp}\n{}",
        hex::encode(Sha256::digest(body))
    )
}

/// `hex(HMAC-SHA256(secret, canonical))`: what a machine sends as `X-Signature`. The secret is used as
/// the ASCII bytes of its hex form, exactly as the operator received it.
pub fn sign(
    secret: &str,
    method: &str,
    path_and_query: &str,
    timestamp: &str,
    body: &[u8],
) -> String {
    let mut mac = match HmacSha256::new_from_slice(secret.as_bytes()) {
        Ok(m) => m,
        // HMAC takes keys of any length; this arm cannot be reached.
        Err(_) => return String::new(),
    };
    mac.update(canonical(method, path_and_query, timestamp, body).as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// The header that names the signing machine (header names as sent, lowercase).
pub const DEVICE_ID_HEADER: &str = "x-device-id";
/// The header with the Unix time in seconds the request was signed at.
pub const TIMESTAMP_HEADER: &str = "x-timestamp";
/// The header with [`sign`]'s signature.
pub const SIGNATURE_HEADER: &str = "x-signature";

/// The three headers of a machine's request signed at `unix_secs`: `(name, value)` for the device id,
/// the timestamp and the signature, in that order. The one place a request is signed; machines, the
/// test kit client and the tests all call it.
pub fn signed_headers(
    device_id: &str,
    secret: &str,
    method: &str,
    path_and_query: &str,
    body: &[u8],
    unix_secs: i64,
) -> [(&'static str, String); 3] {
    let timestamp = unix_secs.to_string();
    let signature = sign(secret, method, path_and_query, &timestamp, body);
    [
        (DEVICE_ID_HEADER, device_id.to_owned()),
        (TIMESTAMP_HEADER, timestamp),
        (SIGNATURE_HEADER, signature),
    ]
}

/// The auth headers of one request, as received.
pub struct SignedRequest<'a> {
    pub device_header: Option<&'a str>,
    pub timestamp: Option<&'a str>,
    pub signature: Option<&'a str>,
    pub method: &'a str,
    pub path_and_query: &'a str,
    pub body: &'a [u8],
}

/// Checks the header/path match first (403), then presence, freshness and the signature (401).
/// `secret` is `None` for an unknown device, which is refused only after the cheap checks so the answer
/// does not reveal which ids exist to a caller without a valid timestamp.
pub fn verify(
    path_device: &str,
    req: &SignedRequest<'_>,
    secret: Option<&str>,
    now: Timestamp,
) -> Result<(), AuthError> {
    check_envelope(path_device, req, now)?.check_signature(req, secret)
}

/// A request whose headers, device id, timestamp window and signature shape are in order: what can be
/// checked without the machine's secret. Routes check this before they look the machine up, so a stale,
/// replayed or unsigned request is refused without a storage read. The order of the checks, and so which
/// refusal a request gets, is the same as [`verify`]'s.
#[derive(Debug)]
pub struct Envelope {
    given: Vec<u8>,
    signed_at: Timestamp,
}

/// The first half of [`verify`]: everything but the signature's value.
pub fn check_envelope(
    path_device: &str,
    req: &SignedRequest<'_>,
    now: Timestamp,
) -> Result<Envelope, AuthError> {
    let header = req
        .device_header
        .ok_or(AuthError::MissingHeader("X-Device-Id"))?;
    if header != path_device {
        return Err(AuthError::Mismatch {
            header: header.chars().take(64).collect(),
            path: path_device.chars().take(64).collect(),
        });
    }
    let ts_raw = req
        .timestamp
        .ok_or(AuthError::MissingHeader("X-Timestamp"))?;
    let sig = req
        .signature
        .ok_or(AuthError::MissingHeader("X-Signature"))?;
    let ts: i64 = ts_raw
        .trim()
        .parse()
        .map_err(|_| AuthError::BadTimestamp(ts_raw.chars().take(32).collect()))?;
    // Saturating, and compared unsigned: `i64::MIN` has no `abs()` (a debug panic before
    // authentication; in release it wrapped negative and passed as fresh).
    let skew = ts.saturating_sub(now.secs());
    if skew.unsigned_abs() > MAX_SKEW_SECS.unsigned_abs() {
        return Err(AuthError::Stale { skew });
    }
    let given = hex::decode(sig.trim()).map_err(|_| AuthError::MalformedSignature)?;
    if given.len() != 32 {
        return Err(AuthError::MalformedSignature);
    }
    let signed_at = Timestamp::from_secs(ts).ok_or(AuthError::Stale { skew })?;
    Ok(Envelope { given, signed_at })
}

impl Envelope {
    /// When the machine signed the request (its `X-Timestamp`, within the allowed skew of ours).
    pub fn signed_at(&self) -> Timestamp {
        self.signed_at
    }

    /// The second half of [`verify`]: the signature against the machine's secret (`None`: no such
    /// machine, or no secret for its credential).
    pub fn check_signature(
        &self,
        req: &SignedRequest<'_>,
        secret: Option<&str>,
    ) -> Result<(), AuthError> {
        let secret = secret.ok_or(AuthError::UnknownDevice)?;
        let timestamp = req.timestamp.unwrap_or_default();
        let expected = hex::decode(sign(
            secret,
            req.method,
            req.path_and_query,
            timestamp,
            req.body,
        ))
        .map_err(|_| AuthError::BadSignature)?;
        if bool::from(expected.ct_eq(&self.given)) {
            Ok(())
        } else {
            Err(AuthError::BadSignature)
        }
    }
}

/// Compares an admin bearer token in constant time (length aside).
pub fn admin_token_matches(expected: &str, authorization: Option<&str>) -> bool {
    let Some(given) = authorization.and_then(|h| h.strip_prefix("Bearer ")) else {
        return false;
    };
    !expected.is_empty() && bool::from(expected.as_bytes().ct_eq(given.trim().as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> DeviceKey {
        DeviceKey::from_hex("DEVICE_KEY", &"ab".repeat(32)).unwrap()
    }

    #[test]
    fn known_answer_signature() {
        // printf 'POST\n/devices/vm-1/purchases\n1700000000\n%s' "$(printf '{}' | sha256sum | cut -c1-64)" \
        //   | openssl dgst -sha256 -hmac secret
        let sig = sign(
            "secret",
            "POST",
            "/devices/vm-1/purchases",
            "1700000000",
            b"{}",
        );
        assert_eq!(
            sig,
            "2b91535ebf7a8d8f71c0077724cd1492c607f7340e15e6b8ccedf9f2687df7ff"
        );
    }

    #[test]
    fn secrets_derive_from_the_stored_credential_only_with_the_key() {
        let d = DeviceId::parse("vm-1").unwrap();
        let (cred, secret) = key().new_credential(&d).unwrap();
        assert!(cred.starts_with("v1:"));
        assert!(!cred.contains(&secret));
        assert_eq!(key().secret(&d, &cred), Some(secret.clone()));
        let other = DeviceKey::from_hex("DEVICE_KEY", &"cd".repeat(32)).unwrap();
        assert_ne!(other.secret(&d, &cred), Some(secret.clone()));
        let d2 = DeviceId::parse("vm-2").unwrap();
        assert_ne!(key().secret(&d2, &cred), Some(secret));
        assert_eq!(key().secret(&d, "plain"), None);
    }

    #[test]
    fn keys_are_checked() {
        assert!(matches!(
            DeviceKey::from_hex("DEVICE_KEY", "abcd"),
            Err(KeyError::TooShort {
                setting: "DEVICE_KEY"
            })
        ));
        assert!(matches!(
            DeviceKey::from_hex("DEVICE_KEY", &"zz".repeat(32)),
            Err(KeyError::NotHex { .. })
        ));
    }

    fn req<'a>(ts: &'a str, sig: &'a str) -> SignedRequest<'a> {
        SignedRequest {
            device_header: Some("vm-1"),
            timestamp: Some(ts),
            signature: Some(sig),
            method: "POST",
            path_and_query: "/devices/vm-1/purchases",
            body: b"{\"a\":1}",
        }
    }

    /// The signature [`signed_headers`] gives `req`'s method, path and body at `ts`.
    fn signature_at(secret: &str, ts: i64) -> String {
        let [(_, id), (_, timestamp), (_, signature)] = signed_headers(
            "vm-1",
            secret,
            "POST",
            "/devices/vm-1/purchases",
            b"{\"a\":1}",
            ts,
        );
        assert_eq!((id.as_str(), timestamp), ("vm-1", ts.to_string()));
        signature
    }

    #[test]
    fn signed_headers_name_the_machine_and_verify() {
        let headers = signed_headers(
            "vm-1",
            "secret",
            "POST",
            "/devices/vm-1/purchases",
            b"{}",
            1_700_000_000,
        );
        assert_eq!(
            headers.clone().map(|(name, _)| name),
            [DEVICE_ID_HEADER, TIMESTAMP_HEADER, SIGNATURE_HEADER]
        );
        assert_eq!(headers[1].1, "1700000000");
        assert_eq!(
            headers[2].1,
            "2b91535ebf7a8d8f71c0077724cd1492c607f7340e15e6b8ccedf9f2687df7ff"
        );
        let request = SignedRequest {
            device_header: Some(&headers[0].1),
            timestamp: Some(&headers[1].1),
            signature: Some(&headers[2].1),
            method: "POST",
            path_and_query: "/devices/vm-1/purchases",
            body: b"{}",
        };
        let now = Timestamp::from_millis(1_700_000_000_000);
        assert_eq!(verify("vm-1", &request, Some("secret"), now), Ok(()));
    }

    #[test]
    fn verification_order_and_outcomes() {
        let now = Timestamp::from_millis(1_700_000_000_000);
        let good = signature_at("s3cret", 1_700_000_000);
        assert_eq!(
            verify("vm-1", &req("1700000000", &good), Some("s3cret"), now),
            Ok(())
        );
        assert_eq!(
            verify(
                "vm-1",
                &req("1700000299", &signature_at("s3cret", 1_700_000_299)),
                Some("s3cret"),
                now
            ),
            Ok(())
        );
        let e = verify("vm-2", &req("1700000000", &good), Some("s3cret"), now).unwrap_err();
        assert_eq!(e.status(), 403);
        assert_eq!(
            verify("vm-1", &req("1700000000", &good), Some("other"), now),
            Err(AuthError::BadSignature)
        );
        assert_eq!(
            verify("vm-1", &req("1700000301", &good), Some("s3cret"), now),
            Err(AuthError::Stale { skew: 301 })
        );
        assert_eq!(
            verify("vm-1", &req("1699999699", &good), Some("s3cret"), now),
            Err(AuthError::Stale { skew: -301 })
        );
        assert!(matches!(
            verify("vm-1", &req("soon", &good), Some("s3cret"), now),
            Err(AuthError::BadTimestamp(_))
        ));
        assert_eq!(
            verify("vm-1", &req("1700000000", "xyz"), Some("s3cret"), now),
            Err(AuthError::MalformedSignature)
        );
        assert_eq!(
            verify("vm-1", &req("1700000000", &good), None, now),
            Err(AuthError::UnknownDevice)
        );
        let mut tampered = req("1700000000", &good);
        tampered.body = b"{\"a\":2}";
        assert_eq!(
            verify("vm-1", &tampered, Some("s3cret"), now),
            Err(AuthError::BadSignature)
        );
        let mut missing = req("1700000000", &good);
        missing.signature = None;
        assert_eq!(
            verify("vm-1", &missing, Some("s3cret"), now),
            Err(AuthError::MissingHeader("X-Signature"))
        );
    }

    /// A review found this: `i64::MIN` has no absolute value. The freshness check negated it (a panic in debug
    /// builds, before authentication; in release it wrapped to a negative skew and passed), so a request
    /// signed over `X-Timestamp: -9223372036854775808` was fresh forever.
    #[test]
    fn extreme_timestamps_are_stale_not_a_panic_or_fresh() {
        let now = Timestamp::from_millis(1_700_000_000_000);
        for ts in [
            "-9223372036854775808",
            "-9223372036854775807",
            "9223372036854775807",
        ] {
            let sig = signature_at("s3cret", ts.parse().unwrap());
            let got = verify("vm-1", &req(ts, &sig), Some("s3cret"), now);
            assert!(
                matches!(got, Err(AuthError::Stale { .. })),
                "X-Timestamp {ts}: {got:?}"
            );
        }
        // The clock itself at the far ends must not overflow either.
        for now in [
            Timestamp::from_millis(i64::MIN),
            Timestamp::from_millis(i64::MAX),
        ] {
            for ts in ["-9223372036854775808", "0", "9223372036854775807"] {
                let sig = signature_at("s3cret", ts.parse().unwrap());
                let got = verify("vm-1", &req(ts, &sig), Some("s3cret"), now);
                assert!(
                    matches!(got, Err(AuthError::Stale { .. })),
                    "X-Timestamp {ts} at {now:?}: {got:?}"
                );
            }
        }
    }

    #[test]
    fn admin_tokens() {
        assert!(admin_token_matches("t0k", Some("Bearer t0k")));
        assert!(!admin_token_matches("t0k", Some("Bearer t0")));
        assert!(!admin_token_matches("t0k", Some("t0k")));
        assert!(!admin_token_matches("t0k", None));
        assert!(!admin_token_matches("", Some("Bearer ")));
    }
}
