//! Key material read once from configuration text: PEM (PKCS#1, PKCS#8, X.509 SPKI) or bare Base64 DER.
//!
//! Operators paste keys into environment variables and secret stores in every shape — with or without
//! armour, with real or escaped (`\n`) line breaks — so all of them are accepted; anything else is a
//! [`KeyError`] naming the setting it came from.

use base64::Engine as _;

/// A key that could not be read; `setting` is the configuration name (e.g. `ALIPAY_PRIVATE_KEY`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{setting}: {reason}")]
pub struct KeyError {
    pub setting: String,
    pub reason: String,
}

impl KeyError {
    pub(crate) fn new(setting: &str, reason: impl Into<String>) -> KeyError {
        KeyError {
            setting: setting.to_owned(),
            reason: reason.into(),
        }
    }
}

/// What a PEM block said it was, if the text was armoured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Der {
    pub label: Option<String>,
    pub bytes: Vec<u8>,
}

/// Decodes PEM or bare Base64 into DER.
pub(crate) fn der_from_text(setting: &str, text: &str) -> Result<Der, KeyError> {
    // Keys copied into env files often carry literal "\n" sequences instead of line breaks.
    let text = text.replace("\\n", "\n");
    let text = text.trim();
    if text.is_empty() {
        return Err(KeyError::new(setting, "is empty"));
    }
    let (label, body) = match text.strip_prefix("-----BEGIN ") {
        Some(rest) => {
            let (label, rest) = rest
                .split_once("-----")
                .ok_or_else(|| KeyError::new(setting, "PEM header is not closed by '-----'"))?;
            let end = format!("-----END {label}-----");
            let body = rest
                .split_once(end.as_str())
                .map(|(body, _)| body)
                .ok_or_else(|| KeyError::new(setting, format!("PEM block has no '{end}' line")))?;
            (Some(label.to_owned()), body)
        }
        None => (None, text),
    };
    if label.as_deref() == Some("ENCRYPTED PRIVATE KEY") {
        return Err(KeyError::new(
            setting,
            "is an encrypted PKCS#8 key; give the key unencrypted (from a secret store)",
        ));
    }
    let compact: String = body.chars().filter(|c| !c.is_whitespace()).collect();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(compact.as_bytes())
        .map_err(|e| KeyError::new(setting, format!("is neither PEM nor Base64 DER ({e})")))?;
    if bytes.is_empty() {
        return Err(KeyError::new(setting, "holds no key bytes"));
    }
    Ok(Der { label, bytes })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_armour_bare_and_escaped_newlines() {
        let pem = "-----BEGIN PUBLIC KEY-----\nAAEC\nAwQ=\n-----END PUBLIC KEY-----\n";
        let want = vec![0, 1, 2, 3, 4];
        let armoured = der_from_text("K", pem).map(|d| d.bytes);
        assert_eq!(armoured.as_ref(), Ok(&want));
        let escaped = der_from_text("K", &pem.replace('\n', "\\n")).map(|d| d.bytes);
        assert_eq!(escaped.as_ref(), Ok(&want));
        assert_eq!(
            der_from_text("K", " AAECAwQ= ").map(|d| d.bytes).as_ref(),
            Ok(&want)
        );
    }

    #[test]
    fn errors_name_the_setting() {
        for bad in [
            "",
            "not base64 !",
            "-----BEGIN PUBLIC KEY-----\nAAEC",
            "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAEC\n-----END ENCRYPTED PRIVATE KEY-----",
        ] {
            let err = der_from_text("ALIPAY_PUBLIC_KEY", bad).err();
            assert_eq!(
                err.as_ref().map(|e| e.setting.as_str()),
                Some("ALIPAY_PUBLIC_KEY"),
                "{bad:?}"
            );
            assert!(err
                .map(|e| e.to_string())
                .unwrap_or_default()
                .starts_with("ALIPAY_PUBLIC_KEY: "));
        }
    }
}
