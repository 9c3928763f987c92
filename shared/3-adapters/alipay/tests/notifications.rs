//! Notifications signed by openssl with the test "Alipay" key: accepted, typed, and every kind of
//! forgery refused with its own error.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code asserts by panicking

use vendpay_alipay::{
    parse_form, verify_notification, NotificationKind, NotifyError, SignType, SignatureError,
    TradeStatus, Verifier,
};
use vendpay_domain::{Currency, Money};

fn fixture_bytes(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn fixture(name: &str) -> String {
    String::from_utf8(fixture_bytes(name)).unwrap()
}

/// Percent-encodes every byte but unreserved ones, the way a strict form encoder would.
fn enc(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(b) {
                (*b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn body(fields: &[(&str, &[u8])]) -> Vec<u8> {
    fields
        .iter()
        .map(|(k, v)| format!("{k}={}", enc(v)))
        .collect::<Vec<_>>()
        .join("&")
        .into_bytes()
}

fn alipay() -> Verifier {
    Verifier::new()
        .with_public_key("ALIPAY_PUBLIC_KEY", &fixture("test-alipay-public-key.pem"))
        .unwrap()
}

/// The fields of `vectors/payment-notification.utf8`, in an arbitrary arrival order.
fn payment_fields(sign: &str) -> Vec<(&'static str, Vec<u8>)> {
    let sign = sign.trim().to_owned();
    vec![
        ("notify_time", b"2024-01-02 03:05:00".to_vec()),
        ("sign_type", b"RSA2".to_vec()),
        ("notify_type", b"trade_status_sync".to_vec()),
        ("notify_id", b"abc124".to_vec()),
        ("sign", sign.into_bytes()),
        ("notify_action_type", b"payByAccountAction".to_vec()),
        ("out_trade_no", b"X2".to_vec()),
        ("trade_no", b"2024010222002".to_vec()),
        ("trade_status", b"TRADE_SUCCESS".to_vec()),
        ("total_fee", b"3.50".to_vec()),
        ("currency", b"USD".to_vec()),
        ("trans_currency", b"CNY".to_vec()),
        ("subject", "Cola + chips".as_bytes().to_vec()),
        ("gmt_payment", b"2024-01-02 03:04:59".to_vec()),
        ("buyer_id", b"2088101122334455".to_vec()),
        ("passback_parameters", br#"{"device_id":"vm-1"}"#.to_vec()),
        ("extra_unknown_field", b"kept".to_vec()),
        ("empty_field", b"".to_vec()),
    ]
}

fn as_body(fields: &[(&'static str, Vec<u8>)]) -> Vec<u8> {
    let refs: Vec<(&str, &[u8])> = fields.iter().map(|(k, v)| (*k, v.as_slice())).collect();
    body(&refs)
}

fn good_sign() -> String {
    fixture("vectors/payment-notification.alipay.rsa2.b64")
}

#[test]
fn a_payment_signed_by_alipay_is_accepted_and_typed() {
    let body = as_body(&payment_fields(&good_sign()));
    let n = verify_notification(&body, &alipay()).unwrap();
    assert_eq!(
        n.fields.presign(),
        fixture_bytes("vectors/payment-notification.utf8")
    );
    assert_eq!(n.sign_type, SignType::Rsa2);
    assert_eq!(n.notify_id.as_ref().map(|i| i.as_str()), Some("abc124"));
    assert_eq!(n.fields.get("extra_unknown_field"), Some("kept"));
    let NotificationKind::Payment(p) = n.kind else {
        panic!("not a payment: {:?}", n.kind)
    };
    assert_eq!(p.trade_no.as_str(), "2024010222002");
    assert_eq!(p.out_trade_no.as_str(), "X2");
    // trans_currency wins over the settlement currency.
    assert_eq!(p.amount, Money::new(350, Currency::Cny).unwrap());
    assert_eq!(p.status, TradeStatus::TradeSuccess);
    assert_eq!(
        p.buyer_id.map(|b| b.to_string()).as_deref(),
        Some("2088101122334455")
    );
    assert_eq!(
        p.passback_parameters.as_deref(),
        Some(r#"{"device_id":"vm-1"}"#)
    );
}

#[test]
fn an_unescaped_plus_in_sign_is_repaired() {
    let sign = good_sign();
    assert!(sign.contains('+'), "fixture signature should contain '+'");
    let mut fields = payment_fields(&sign);
    fields.retain(|(k, _)| *k != "sign");
    let mut body = as_body(&fields);
    // A sender that does not escape '+' in the Base64 value.
    body.extend_from_slice(
        format!(
            "&sign={}",
            sign.trim().replace('/', "%2F").replace('=', "%3D")
        )
        .as_bytes(),
    );
    assert!(verify_notification(&body, &alipay()).is_ok());
}

#[test]
fn a_gbk_notification_is_verified_over_its_gbk_bytes() {
    let sign = fixture("vectors/payment-notification-gbk.alipay.rsa2.b64");
    let subject = [0xCA, 0xDB, 0xBB, 0xF5, 0xBB, 0xFA]; // 售货机 in GBK
    let body = body(&[
        ("_input_charset", b"gbk"),
        ("notify_id", b"abc125"),
        ("notify_type", b"trade_status_sync"),
        ("out_trade_no", b"X3"),
        ("trade_no", b"2024010222003"),
        ("trade_status", b"TRADE_SUCCESS"),
        ("total_fee", b"100"),
        ("currency", b"JPY"),
        ("subject", &subject),
        ("sign", sign.trim().as_bytes()),
        ("sign_type", b"RSA2"),
    ]);
    let n = verify_notification(&body, &alipay()).unwrap();
    assert_eq!(n.fields.get("subject"), Some("售货机"));
    let NotificationKind::Payment(p) = n.kind else {
        panic!("not a payment")
    };
    assert_eq!(p.amount, Money::new(100, Currency::Jpy).unwrap());
}

fn replace(fields: &mut [(&'static str, Vec<u8>)], key: &str, value: &[u8]) {
    for (k, v) in fields.iter_mut() {
        if *k == key {
            *v = value.to_vec();
        }
    }
}

#[test]
fn tampered_amount_wrong_key_missing_sign_and_other_sign_type_are_distinct_errors() {
    let verifier = alipay();

    let mut tampered = payment_fields(&good_sign());
    replace(&mut tampered, "total_fee", b"350.00");
    assert_eq!(
        verify_notification(&as_body(&tampered), &verifier).err(),
        Some(NotifyError::Signature(SignatureError::Mismatch))
    );

    // Signed over the same fields, but by the merchant's key instead of Alipay's.
    let merchant = vendpay_alipay::Signer::from_setting(
        SignType::Rsa2,
        "TEST",
        &fixture("test-merchant-private-key.pem"),
    )
    .unwrap();
    let other_sign = merchant
        .sign(&fixture_bytes("vectors/payment-notification.utf8"))
        .unwrap();
    let wrong_key = payment_fields(&other_sign);
    assert_eq!(
        verify_notification(&as_body(&wrong_key), &verifier).err(),
        Some(NotifyError::Signature(SignatureError::WrongKey))
    );

    let mut missing = payment_fields(&good_sign());
    missing.retain(|(k, _)| *k != "sign");
    assert_eq!(
        verify_notification(&as_body(&missing), &verifier).err(),
        Some(NotifyError::Signature(SignatureError::MissingSign))
    );

    let mut md5 = payment_fields("0123456789abcdef0123456789abcdef");
    replace(&mut md5, "sign_type", b"MD5");
    assert_eq!(
        verify_notification(&as_body(&md5), &verifier).err(),
        Some(NotifyError::Signature(SignatureError::SignTypeNotAccepted(
            SignType::Md5
        )))
    );

    let mut downgraded = payment_fields(&good_sign());
    replace(&mut downgraded, "sign_type", b"RSA");
    assert_eq!(
        verify_notification(&as_body(&downgraded), &verifier).err(),
        Some(NotifyError::Signature(SignatureError::WrongAlgorithm {
            claimed: SignType::Rsa,
            actual: "SHA256withRSA"
        }))
    );
}

#[test]
fn a_verified_signature_does_not_cover_a_smuggled_field() {
    // Moving "&total_fee=3.50" into the subject keeps the pre-sign string identical if total_fee is
    // dropped; the parser must refuse it before the signature can vouch for it.
    let mut fields = payment_fields(&good_sign());
    replace(&mut fields, "subject", b"Cola + chips&total_fee=3.50");
    replace(&mut fields, "total_fee", b"");
    assert!(matches!(
        verify_notification(&as_body(&fields), &alipay()),
        Err(NotifyError::Injection { .. })
    ));
    let mut dup = as_body(&payment_fields(&good_sign()));
    dup.extend_from_slice(b"&total_fee=999.00");
    assert_eq!(
        verify_notification(&dup, &alipay()).err(),
        Some(NotifyError::DuplicateKey("total_fee".into()))
    );
}

#[test]
fn a_notify_id_folded_into_the_field_before_it_is_refused() {
    // "notify_action_type" sorts just before "notify_id": carrying "&notify_id=abc124" in its value
    // keeps the openssl-signed pre-sign string byte for byte while notify_id itself disappears, and
    // with it the notify_verify round trip that tells our merchant account's notifications apart.
    let mut fields = payment_fields(&good_sign());
    replace(
        &mut fields,
        "notify_action_type",
        b"payByAccountAction&notify_id=abc124",
    );
    fields.retain(|(k, _)| *k != "notify_id");
    let body = as_body(&fields);
    let presign = vendpay_alipay::parse_form(&body).map(|f| f.presign());
    assert!(
        presign.is_err() || presign == Ok(fixture_bytes("vectors/payment-notification.utf8")),
        "the folded form is meant to share the genuine pre-sign string"
    );
    assert_eq!(
        verify_notification(&body, &alipay()).err(),
        Some(NotifyError::Injection {
            field: "notify_action_type".into(),
            name: "notify_id".into()
        })
    );
}

#[test]
fn any_name_assigned_inside_a_value_is_refused_not_only_received_ones() {
    for value in [
        "x&seller_id=2088000000000001",
        "x&notify_id=1",
        "x&a=1",
        "x&A.b-c_9=",
        "&z=1",
        "ok&fine&partner=2",
    ] {
        let body = format!("subject={}&total_fee=1.00", enc(value.as_bytes()));
        assert!(
            matches!(
                vendpay_alipay::parse_form(body.as_bytes()),
                Err(NotifyError::Injection { ref field, .. }) if field == "subject"
            ),
            "{value:?} was accepted"
        );
    }
    // No name, or a name with no '=', cannot stand for a field.
    for value in ["fish&chips", "a & b = c", "x&=1", "x&", "a&b&c", "1=1&2 =3"] {
        let body = format!("subject={}&total_fee=1.00", enc(value.as_bytes()));
        assert!(
            vendpay_alipay::parse_form(body.as_bytes()).is_ok(),
            "{value:?} was refused"
        );
    }
}

#[test]
fn a_payment_without_notify_id_is_refused() {
    let alipay_key = vendpay_alipay::Signer::from_setting(
        SignType::Rsa2,
        "TEST",
        &fixture("test-alipay-private-key.pem"),
    )
    .unwrap();
    let payment = [
        ("out_trade_no", "X9"),
        ("trade_no", "2024010222009"),
        ("trade_status", "TRADE_SUCCESS"),
        ("total_fee", "3.50"),
        ("currency", "CNY"),
    ];
    let body = vendpay_alipay::signed_form(payment, &alipay_key).unwrap();
    let err = verify_notification(body.as_bytes(), &alipay()).err();
    assert_eq!(err, Some(NotifyError::MissingField("notify_id")));
    assert_eq!(
        err.map(|e| e.to_string()).as_deref(),
        Some("missing field notify_id")
    );
    // A notice that credits nothing (a closed trade) needs no notify_id.
    let closed = vendpay_alipay::signed_form(
        [
            ("trade_no", "2024010222009"),
            ("trade_status", "TRADE_CLOSED"),
        ],
        &alipay_key,
    )
    .unwrap();
    assert!(verify_notification(closed.as_bytes(), &alipay()).is_ok());
}

#[test]
fn a_charset_that_is_not_ascii_compatible_is_refused() {
    // Found by the notify_form fuzzer: in UTF-16LE the escaped `%26bb%3D12` decodes to text without
    // `&`, so the injection check passed, while the pre-sign string (raw bytes) read `&bb=12` — the
    // same string as a form with a field `bb`. A charset in which `&` and `=` are not those bytes
    // cannot be checked, and Alipay sends none.
    let folded = b"_input_charset=utf-16le&a=xy%26bb%3D12";
    let split = b"_input_charset=utf-16le&a=xy&bb=12";
    for form in [&folded[..], &split[..]] {
        let got = parse_form(form);
        assert!(
            matches!(got, Err(NotifyError::UnsupportedCharset(_))),
            "{:?}: {got:?}",
            String::from_utf8_lossy(form)
        );
    }
    assert!(parse_form(b"_input_charset=gbk&a=1").is_ok());
    assert!(parse_form(b"charset=utf-8&a=1").is_ok());
}
