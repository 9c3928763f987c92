//! Settings shared by the local server and the Lambda functions (see `docs/contract.md`,
//! “Configuration”), parsed from a lookup so tests pass a map and production passes the
//! environment. Every error names its setting.

use std::time::Duration;

use vendpay_domain::Windows;

/// The longest window accepted: a week. Longer ones are almost certainly a unit mistake (ms for s).
pub const MAX_WINDOW_SECS: u64 = 7 * 24 * 3600;
/// A configured admin token shorter than this is refused: it guards every operator route.
pub const MIN_ADMIN_TOKEN_LEN: usize = 16;

/// A setting that stops start-up; the message starts with the setting's name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{setting}: {reason}")]
pub struct SettingError {
    pub setting: &'static str,
    pub reason: String,
}

pub fn invalid(setting: &'static str, reason: impl Into<String>) -> SettingError {
    SettingError {
        setting,
        reason: reason.into(),
    }
}

/// A lookup where empty or blank values count as absent.
pub fn present(get: &impl Fn(&str) -> Option<String>, name: &str) -> Option<String> {
    get(name)
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
}

/// `PAY_FIRST_WINDOW_SECS`, `PURCHASE_FIRST_WINDOW_SECS`, `ORDER_PAYMENT_WINDOW_SECS`: whole seconds,
/// 1 to a week; the documented defaults (300, 25 and 120 s) when absent.
pub fn windows(get: &impl Fn(&str) -> Option<String>) -> Result<Windows, SettingError> {
    let window = |setting: &'static str, default: Duration| -> Result<Duration, SettingError> {
        let Some(raw) = present(get, setting) else {
            return Ok(default);
        };
        match raw.parse::<u64>() {
            Ok(secs) if (1..=MAX_WINDOW_SECS).contains(&secs) => Ok(Duration::from_secs(secs)),
            _ => Err(invalid(
                setting,
                format!("{raw:?} is not a whole number of seconds from 1 to {MAX_WINDOW_SECS}"),
            )),
        }
    };
    let defaults = Windows::default();
    Ok(Windows {
        pay_first: window("PAY_FIRST_WINDOW_SECS", defaults.pay_first)?,
        purchase_first: window("PURCHASE_FIRST_WINDOW_SECS", defaults.purchase_first)?,
        order_payment: window("ORDER_PAYMENT_WINDOW_SECS", defaults.order_payment)?,
    })
}

/// `ADMIN_TOKEN`, when set: at least [`MIN_ADMIN_TOKEN_LEN`] visible ASCII characters.
pub fn admin_token(get: &impl Fn(&str) -> Option<String>) -> Result<Option<String>, SettingError> {
    match present(get, "ADMIN_TOKEN") {
        None => Ok(None),
        Some(t) if t.len() < MIN_ADMIN_TOKEN_LEN => Err(invalid(
            "ADMIN_TOKEN",
            format!("must be at least {MIN_ADMIN_TOKEN_LEN} characters"),
        )),
        // It travels in `Authorization: Bearer <token>`: visible ASCII only.
        Some(t) if !t.bytes().all(|b| b.is_ascii_graphic()) => Err(invalid(
            "ADMIN_TOKEN",
            "must be printable ASCII without spaces",
        )),
        Some(t) => Ok(Some(t)),
    }
}

/// `ALIPAY_NOTIFY_VERIFY`: `true` (default) or `false`.
pub fn notify_verify(get: &impl Fn(&str) -> Option<String>) -> Result<bool, SettingError> {
    match present(get, "ALIPAY_NOTIFY_VERIFY") {
        None => Ok(true),
        Some(v) if v.eq_ignore_ascii_case("true") => Ok(true),
        Some(v) if v.eq_ignore_ascii_case("false") => {
            // Alipay signs every merchant's notifications with one key: without asking Alipay under
            // our partner id, a notification of another merchant's account cannot be told from ours.
            tracing::warn!(
                "ALIPAY_NOTIFY_VERIFY=false: first-seen payments are not confirmed with Alipay under our partner id; use only against a sandbox"
            );
            Ok(false)
        }
        Some(v) => Err(invalid(
            "ALIPAY_NOTIFY_VERIFY",
            format!("{v:?} is neither true nor false"),
        )),
    }
}

/// `PUBLIC_BASE_URL`: an http(s) URL with a host; a trailing `/` is dropped (notify URLs append paths).
pub fn base_url(raw: &str) -> Result<String, SettingError> {
    let rest = raw
        .strip_prefix("https://")
        .or_else(|| raw.strip_prefix("http://"))
        .ok_or_else(|| {
            invalid(
                "PUBLIC_BASE_URL",
                format!("{raw:?} is not an http:// or https:// URL"),
            )
        })?;
    let host = rest.split('/').next().unwrap_or_default();
    if host.is_empty() || raw.contains(|c: char| c.is_whitespace() || c == '?' || c == '#') {
        return Err(invalid(
            "PUBLIC_BASE_URL",
            format!("{raw:?} must be a base URL such as https://pay.example.com"),
        ));
    }
    Ok(raw.trim_end_matches('/').to_owned())
}
