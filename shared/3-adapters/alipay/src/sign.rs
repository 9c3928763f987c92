//! Signing and verification for the three sign types (see `docs/alipay.md`, “Signing”).
//!
//! RSA2 signing and every RSA verification go through aws-lc-rs (constant time). aws-lc-rs cannot sign
//! with SHA-1, so the legacy `RSA` sign type signs with the `rsa` crate — signing only, and only for
//! merchants still configured with `RSA`; prefer `RSA2`.

use std::fmt;
use std::str::FromStr;

use aws_lc_rs::signature::{self as lc, ParsedPublicKey};
use base64::Engine as _;
use md5::{Digest as _, Md5};
use rsa::pkcs1::DecodeRsaPrivateKey as _;
use rsa::pkcs8::{DecodePrivateKey as _, DecodePublicKey as _};
use rsa::signature::{SignatureEncoding as _, Signer as _};
use rsa::traits::PublicKeyParts as _;

use crate::keys::{der_from_text, KeyError};

/// Alipay's `sign_type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SignType {
    Md5,
    /// SHA1withRSA (legacy).
    Rsa,
    /// SHA256withRSA.
    Rsa2,
}

impl SignType {
    pub fn as_str(self) -> &'static str {
        match self {
            SignType::Md5 => "MD5",
            SignType::Rsa => "RSA",
            SignType::Rsa2 => "RSA2",
        }
    }
}

impl fmt::Display for SignType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SignType {
    type Err = SignatureError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "MD5" => Ok(SignType::Md5),
            "RSA" => Ok(SignType::Rsa),
            "RSA2" => Ok(SignType::Rsa2),
            other => Err(SignatureError::UnknownSignType(
                other.chars().take(32).collect(),
            )),
        }
    }
}

/// Why a signature was refused. Each cause is its own variant so an operator can tell a tampered
/// message from a misconfigured key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("no sign")]
    MissingSign,
    #[error("no sign_type")]
    MissingSignType,
    #[error("unknown sign_type {0:?} (expected MD5, RSA or RSA2)")]
    UnknownSignType(String),
    #[error("sign_type {0} is not accepted: no key for it is configured")]
    SignTypeNotAccepted(SignType),
    #[error("sign is not valid {0}")]
    Malformed(&'static str),
    #[error("signature does not match the content (content altered, or for MD5 a different key)")]
    Mismatch,
    #[error("signature was not made with the configured Alipay key")]
    WrongKey,
    #[error("signature was made with {actual}, not the {claimed} its sign_type says")]
    WrongAlgorithm {
        claimed: SignType,
        actual: &'static str,
    },
}

/// Why signing failed (only a broken key can make it fail).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("signing with {0} failed")]
pub struct SignError(pub SignType);

/// The shared MD5 key; never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Md5Key(String);

impl Md5Key {
    pub fn parse(setting: &str, key: &str) -> Result<Md5Key, KeyError> {
        let key = key.trim();
        if key.is_empty() {
            return Err(KeyError::new(setting, "is empty"));
        }
        if !key.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(KeyError::new(setting, "must be letters and digits only"));
        }
        Ok(Md5Key(key.to_owned()))
    }

    fn digest_hex(&self, presign: &[u8]) -> String {
        let mut h = Md5::new();
        h.update(presign);
        h.update(self.0.as_bytes());
        hex_lower(&h.finalize())
    }
}

impl fmt::Debug for Md5Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Md5Key(..)")
    }
}

fn hex_lower(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(HEX[usize::from(b >> 4)]));
        s.push(char::from(HEX[usize::from(b & 0xf)]));
    }
    s
}

/// Signs pre-sign strings with the merchant's (or, in the sandbox, Alipay's) key.
pub enum Signer {
    Md5(Md5Key),
    Rsa(Box<rsa::pkcs1v15::SigningKey<sha1::Sha1>>),
    Rsa2(Box<aws_lc_rs::rsa::KeyPair>),
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signer({})", self.sign_type())
    }
}

impl Signer {
    /// Reads the key for `sign_type` from the setting `setting` (PEM or Base64 for RSA, text for MD5).
    pub fn from_setting(
        sign_type: SignType,
        setting: &str,
        text: &str,
    ) -> Result<Signer, KeyError> {
        match sign_type {
            SignType::Md5 => Md5Key::parse(setting, text).map(Signer::Md5),
            SignType::Rsa => {
                let der = der_from_text(setting, text)?;
                let key = rsa::RsaPrivateKey::from_pkcs8_der(&der.bytes)
                    .or_else(|_| rsa::RsaPrivateKey::from_pkcs1_der(&der.bytes))
                    .map_err(|_| KeyError::new(setting, not_private_key(&der.label)))?;
                Ok(Signer::Rsa(Box::new(rsa::pkcs1v15::SigningKey::new(key))))
            }
            SignType::Rsa2 => {
                let der = der_from_text(setting, text)?;
                let key = aws_lc_rs::rsa::KeyPair::from_pkcs8(&der.bytes)
                    .or_else(|_| aws_lc_rs::rsa::KeyPair::from_der(&der.bytes))
                    .map_err(|e| {
                        KeyError::new(setting, format!("{} ({e})", not_private_key(&der.label)))
                    })?;
                Ok(Signer::Rsa2(Box::new(key)))
            }
        }
    }

    pub fn sign_type(&self) -> SignType {
        match self {
            Signer::Md5(_) => SignType::Md5,
            Signer::Rsa(_) => SignType::Rsa,
            Signer::Rsa2(_) => SignType::Rsa2,
        }
    }

    /// The `sign` value for a pre-sign string.
    pub fn sign(&self, presign: &[u8]) -> Result<String, SignError> {
        match self {
            Signer::Md5(key) => Ok(key.digest_hex(presign)),
            Signer::Rsa(key) => {
                let sig = key
                    .try_sign(presign)
                    .map_err(|_| SignError(SignType::Rsa))?;
                Ok(base64::engine::general_purpose::STANDARD.encode(sig.to_bytes()))
            }
            Signer::Rsa2(key) => {
                let mut sig = vec![0u8; key.public_modulus_len()];
                let rng = aws_lc_rs::rand::SystemRandom::new();
                key.sign(&lc::RSA_PKCS1_SHA256, &rng, presign, &mut sig)
                    .map_err(|_| SignError(SignType::Rsa2))?;
                Ok(base64::engine::general_purpose::STANDARD.encode(sig))
            }
        }
    }
}

fn not_private_key(label: &Option<String>) -> String {
    match label {
        Some(l) => format!(
            "the '{l}' block is not an RSA private key (PKCS#1 or PKCS#8) of at least 2048 bits"
        ),
        None => "is not an RSA private key (PKCS#1 or PKCS#8 DER) of at least 2048 bits".to_owned(),
    }
}

/// Alipay's RSA public key, parsed once for both hashes.
struct RsaPublic {
    sha1: ParsedPublicKey,
    sha256: ParsedPublicKey,
    /// Kept only to explain a failed verification (wrong key vs altered content); public data.
    parts: rsa::RsaPublicKey,
}

/// Checks signatures made by Alipay (or, in the sandbox, by the merchant).
#[derive(Default)]
pub struct Verifier {
    rsa: Option<RsaPublic>,
    md5: Option<Md5Key>,
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verifier")
            .field("rsa", &self.rsa.is_some())
            .field("md5", &self.md5.is_some())
            .finish()
    }
}

impl Verifier {
    pub fn new() -> Verifier {
        Verifier::default()
    }

    /// Adds the X.509 SubjectPublicKeyInfo RSA key (PEM or Base64), accepting `RSA` and `RSA2`.
    pub fn with_public_key(mut self, setting: &str, text: &str) -> Result<Verifier, KeyError> {
        let der = der_from_text(setting, text)?;
        let bad = |e: String| {
            KeyError::new(
                setting,
                format!("is not an X.509 SubjectPublicKeyInfo RSA public key ({e})"),
            )
        };
        let parts =
            rsa::RsaPublicKey::from_public_key_der(&der.bytes).map_err(|e| bad(e.to_string()))?;
        let sha1 = ParsedPublicKey::new(
            &lc::RSA_PKCS1_1024_8192_SHA1_FOR_LEGACY_USE_ONLY,
            &der.bytes,
        )
        .map_err(|e| bad(e.to_string()))?;
        let sha256 = ParsedPublicKey::new(&lc::RSA_PKCS1_2048_8192_SHA256, &der.bytes)
            .map_err(|e| bad(e.to_string()))?;
        self.rsa = Some(RsaPublic {
            sha1,
            sha256,
            parts,
        });
        Ok(self)
    }

    /// Adds the MD5 key, accepting `MD5`.
    pub fn with_md5_key(mut self, setting: &str, key: &str) -> Result<Verifier, KeyError> {
        self.md5 = Some(Md5Key::parse(setting, key)?);
        Ok(self)
    }

    pub fn accepts(&self, sign_type: SignType) -> bool {
        match sign_type {
            SignType::Md5 => self.md5.is_some(),
            SignType::Rsa | SignType::Rsa2 => self.rsa.is_some(),
        }
    }

    /// Verifies `sign` over `presign` with the algorithm named by the received `sign_type` text.
    pub fn verify_str(
        &self,
        sign_type: Option<&str>,
        presign: &[u8],
        sign: Option<&str>,
    ) -> Result<SignType, SignatureError> {
        let sign = sign
            .filter(|s| !s.is_empty())
            .ok_or(SignatureError::MissingSign)?;
        let sign_type: SignType = sign_type
            .filter(|s| !s.is_empty())
            .ok_or(SignatureError::MissingSignType)?
            .parse()?;
        self.verify(sign_type, presign, sign)?;
        Ok(sign_type)
    }

    pub fn verify(
        &self,
        sign_type: SignType,
        presign: &[u8],
        sign: &str,
    ) -> Result<(), SignatureError> {
        match sign_type {
            SignType::Md5 => {
                let key = self
                    .md5
                    .as_ref()
                    .ok_or(SignatureError::SignTypeNotAccepted(sign_type))?;
                if sign.len() != 32 || !sign.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(SignatureError::Malformed("MD5 hex"));
                }
                let want = key.digest_hex(presign);
                aws_lc_rs::constant_time::verify_slices_are_equal(
                    want.as_bytes(),
                    sign.to_ascii_lowercase().as_bytes(),
                )
                .map_err(|_| SignatureError::Mismatch)
            }
            SignType::Rsa | SignType::Rsa2 => {
                let key = self
                    .rsa
                    .as_ref()
                    .ok_or(SignatureError::SignTypeNotAccepted(sign_type))?;
                let sig = base64::engine::general_purpose::STANDARD
                    .decode(sign.as_bytes())
                    .map_err(|_| SignatureError::Malformed("Base64"))?;
                let parsed = if sign_type == SignType::Rsa {
                    &key.sha1
                } else {
                    &key.sha256
                };
                match parsed.verify_sig(presign, &sig) {
                    Ok(()) => Ok(()),
                    Err(_) => Err(diagnose(&key.parts, sign_type, &sig)),
                }
            }
        }
    }
}

const SHA1_DIGEST_INFO: &[u8] = &[
    0x30, 0x21, 0x30, 0x09, 0x06, 0x05, 0x2b, 0x0e, 0x03, 0x02, 0x1a, 0x05, 0x00, 0x04, 0x14,
];
const SHA256_DIGEST_INFO: &[u8] = &[
    0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05,
    0x00, 0x04, 0x20,
];

/// Explains a signature aws-lc-rs refused. Opening it with the public key (public data, so timing does
/// not matter) shows whether it was made by our key at all and with which hash: a well-formed PKCS#1
/// block under our key means the content changed; garbage means another key signed it.
fn diagnose(key: &rsa::RsaPublicKey, claimed: SignType, sig: &[u8]) -> SignatureError {
    let k = key.size();
    let s = rsa::BigUint::from_bytes_be(sig);
    if sig.len() != k || &s >= key.n() {
        return SignatureError::WrongKey;
    }
    let m = s.modpow(key.e(), key.n()).to_bytes_be();
    if m.len() + 1 != k {
        return SignatureError::WrongKey;
    }
    // m has no leading 0x00 (to_bytes_be drops it): 0x01, ≥ 8 × 0xFF, 0x00, DigestInfo.
    let Some(rest) = m.strip_prefix(&[0x01]) else {
        return SignatureError::WrongKey;
    };
    let pad = rest.iter().take_while(|b| **b == 0xff).count();
    let Some(t) = rest.get(pad..).and_then(|r| r.strip_prefix(&[0x00])) else {
        return SignatureError::WrongKey;
    };
    if pad < 8 {
        return SignatureError::WrongKey;
    }
    let actual = if t.len() == SHA1_DIGEST_INFO.len() + 20 && t.starts_with(SHA1_DIGEST_INFO) {
        SignType::Rsa
    } else if t.len() == SHA256_DIGEST_INFO.len() + 32 && t.starts_with(SHA256_DIGEST_INFO) {
        SignType::Rsa2
    } else {
        return SignatureError::WrongKey;
    };
    if actual == claimed {
        SignatureError::Mismatch
    } else {
        SignatureError::WrongAlgorithm {
            claimed,
            actual: if actual == SignType::Rsa {
                "SHA1withRSA"
            } else {
                "SHA256withRSA"
            },
        }
    }
}
