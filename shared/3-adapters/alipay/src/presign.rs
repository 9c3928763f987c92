//! The pre-sign string (see `docs/alipay.md`, “Signing”): every parameter but `sign`/`sign_type`
//! and empty values, sorted byte-wise by key, joined raw as `key=value` with `&`.

/// Builds the pre-sign string of text parameters (requests, answers, UTF-8 notifications).
pub fn presign_string<'a, I>(params: I) -> String
where
    I: IntoIterator<Item = (&'a str, &'a str)>,
{
    let bytes = presign_bytes(
        params
            .into_iter()
            .map(|(k, v)| (k.as_bytes(), v.as_bytes())),
    );
    // Joining UTF-8 pieces with ASCII separators cannot produce invalid UTF-8.
    String::from_utf8(bytes).unwrap_or_default()
}

/// The same over raw bytes, so a GBK notification is verified over exactly the bytes Alipay signed.
pub fn presign_bytes<'a, I>(params: I) -> Vec<u8>
where
    I: IntoIterator<Item = (&'a [u8], &'a [u8])>,
{
    let mut kept: Vec<(&[u8], &[u8])> = params
        .into_iter()
        .filter(|(k, v)| !v.is_empty() && *k != b"sign" && *k != b"sign_type")
        .collect();
    kept.sort_unstable_by(|a, b| a.0.cmp(b.0));
    let len = kept.iter().map(|(k, v)| k.len() + v.len() + 2).sum();
    let mut out = Vec::with_capacity(len);
    for (i, (k, v)) in kept.into_iter().enumerate() {
        if i > 0 {
            out.push(b'&');
        }
        out.extend_from_slice(k);
        out.push(b'=');
        out.extend_from_slice(v);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drops_sign_fields_and_empty_values_and_sorts_bytewise() {
        let s = presign_string([
            ("service", "test"),
            ("sign", "abc"),
            ("sign_type", "MD5"),
            ("empty", ""),
            ("partner", "123"),
            ("_input_charset", "UTF-8"),
            ("Zeta", "upper sorts before lower"),
        ]);
        assert_eq!(
            s,
            "Zeta=upper sorts before lower&_input_charset=UTF-8&partner=123&service=test"
        );
    }

    #[test]
    fn values_are_raw() {
        assert_eq!(
            presign_string([("biz_data", r#"{"a":"b c&d"}"#)]),
            r#"biz_data={"a":"b c&d"}"#
        );
        assert_eq!(presign_string([]), "");
    }
}
