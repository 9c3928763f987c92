//! Known-answer tests (see `docs/alipay.md`, “Known-answer vectors”): the MD5 vectors, and RSA /
//! RSA2 vectors produced by the openssl command line from the committed test keys
//! (fixtures/README.md).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code asserts by panicking

use vendpay_alipay::{presign_string, KeyError, SignType, SignatureError, Signer, Verifier};

const MD5_KEY: &str = "10000000000000000000000000000000";

fn fixture(name: &str) -> String {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[test]
fn every_md5_vector_of_the_spec() {
    let vectors = [
        ("partner=123&service=test", "bbd13b52823b576291595f472ebcfbc2"),
        ("notify_id=1234", "22fc7e38e5acdfede396aa463870d111"),
        (
            "_input_charset=utf-8&currency=USD&is_sync=Y&partner=1000000000000000&partner_refund_id=301012133000002&partner_trans_id=2010121000000002&refund_amount=0.01&service=alipay.acquire.overseas.spot.refund",
            "397685a0c6b2d71d0d1f374ddba331a0",
        ),
        (
            "_input_charset=utf-8&partner=1000000000000000&partner_trans_id=2010121000000002&service=alipay.acquire.overseas.query",
            "2a7f598bbb13d02f7de819ae689f80ba",
        ),
        (
            "notify_id=abc123&notify_time=2024-01-02 03:05:00&notify_type=trade_status_sync&out_trade_no=X1&total_fee=500&trade_no=2024010222001&trade_status=TRADE_SUCCESS",
            "66979a8915a4e640922246198287b8f9",
        ),
    ];
    let signer = Signer::from_setting(SignType::Md5, "ALIPAY_MD5_KEY", MD5_KEY).unwrap();
    let verifier = Verifier::new()
        .with_md5_key("ALIPAY_MD5_KEY", MD5_KEY)
        .unwrap();
    for (presign, want) in vectors {
        assert_eq!(signer.sign(presign.as_bytes()).unwrap(), want, "{presign}");
        assert_eq!(
            verifier.verify(SignType::Md5, presign.as_bytes(), want),
            Ok(())
        );
        assert_eq!(
            verifier.verify(SignType::Md5, presign.as_bytes(), &want.to_uppercase()),
            Ok(())
        );
        let altered = format!("{presign}x");
        assert_eq!(
            verifier.verify(SignType::Md5, altered.as_bytes(), want),
            Err(SignatureError::Mismatch)
        );
    }
}

#[test]
fn presign_strings_of_the_spec_are_rebuilt_from_fields() {
    // The last vector's pre-sign string, from its fields in arrival order plus sign fields and an empty one.
    let fields = [
        ("trade_status", "TRADE_SUCCESS"),
        ("sign", "x"),
        ("total_fee", "500"),
        ("notify_type", "trade_status_sync"),
        ("out_trade_no", "X1"),
        ("notify_time", "2024-01-02 03:05:00"),
        ("buyer_id", ""),
        ("trade_no", "2024010222001"),
        ("sign_type", "MD5"),
        ("notify_id", "abc123"),
    ];
    assert_eq!(
        presign_string(fields),
        "notify_id=abc123&notify_time=2024-01-02 03:05:00&notify_type=trade_status_sync&out_trade_no=X1&total_fee=500&trade_no=2024010222001&trade_status=TRADE_SUCCESS"
    );
}

const VECTORS: [&str; 4] = ["simple", "refund", "notification", "utf8"];

#[test]
fn rsa2_and_rsa_signatures_equal_openssl_for_pkcs8_and_pkcs1_keys() {
    for key_file in [
        "test-merchant-private-key.pem",
        "test-merchant-private-key-pkcs1.pem",
    ] {
        let pem = fixture(key_file);
        for (sign_type, ext) in [(SignType::Rsa2, "rsa2"), (SignType::Rsa, "rsa")] {
            let signer = Signer::from_setting(sign_type, "ALIPAY_PRIVATE_KEY", &pem).unwrap();
            for name in VECTORS {
                let presign = fixture(&format!("vectors/{name}.txt"));
                let want = fixture(&format!("vectors/{name}.{ext}.b64"));
                assert_eq!(
                    signer.sign(presign.as_bytes()).unwrap(),
                    want.trim(),
                    "{key_file} {sign_type} {name}"
                );
            }
        }
    }
}

#[test]
fn keys_are_accepted_without_armour() {
    let strip = |pem: &str| -> String {
        pem.lines()
            .filter(|l| !l.starts_with("-----"))
            .collect::<String>()
    };
    let private = strip(&fixture("test-merchant-private-key-pkcs1.pem"));
    let signer = Signer::from_setting(SignType::Rsa2, "ALIPAY_PRIVATE_KEY", &private).unwrap();
    let presign = fixture("vectors/simple.txt");
    assert_eq!(
        signer.sign(presign.as_bytes()).unwrap(),
        fixture("vectors/simple.rsa2.b64").trim()
    );
    let public = strip(&fixture("test-merchant-public-key.pem"));
    let verifier = Verifier::new()
        .with_public_key("ALIPAY_PUBLIC_KEY", &public)
        .unwrap();
    assert_eq!(
        verifier.verify(
            SignType::Rsa2,
            presign.as_bytes(),
            fixture("vectors/simple.rsa2.b64").trim()
        ),
        Ok(())
    );
}

#[test]
fn openssl_signatures_verify_and_failures_are_told_apart() {
    let merchant = Verifier::new()
        .with_public_key(
            "ALIPAY_PUBLIC_KEY",
            &fixture("test-merchant-public-key.pem"),
        )
        .unwrap();
    let alipay = Verifier::new()
        .with_public_key("ALIPAY_PUBLIC_KEY", &fixture("test-alipay-public-key.pem"))
        .unwrap();
    for name in VECTORS {
        let presign = fixture(&format!("vectors/{name}.txt"));
        let rsa2 = fixture(&format!("vectors/{name}.rsa2.b64"));
        let rsa = fixture(&format!("vectors/{name}.rsa.b64"));
        let (rsa2, rsa) = (rsa2.trim(), rsa.trim());
        assert_eq!(
            merchant.verify(SignType::Rsa2, presign.as_bytes(), rsa2),
            Ok(())
        );
        assert_eq!(
            merchant.verify(SignType::Rsa, presign.as_bytes(), rsa),
            Ok(())
        );
        let altered = presign.replacen('=', "=1", 1);
        assert_eq!(
            merchant.verify(SignType::Rsa2, altered.as_bytes(), rsa2),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            alipay.verify(SignType::Rsa2, presign.as_bytes(), rsa2),
            Err(SignatureError::WrongKey)
        );
        assert_eq!(
            merchant.verify(SignType::Rsa, presign.as_bytes(), rsa2),
            Err(SignatureError::WrongAlgorithm {
                claimed: SignType::Rsa,
                actual: "SHA256withRSA"
            })
        );
        assert_eq!(
            merchant.verify(SignType::Md5, presign.as_bytes(), rsa2),
            Err(SignatureError::SignTypeNotAccepted(SignType::Md5))
        );
        assert_eq!(
            merchant.verify(SignType::Rsa2, presign.as_bytes(), "not base64!"),
            Err(SignatureError::Malformed("Base64"))
        );
    }
}

#[test]
fn bad_keys_name_their_setting() {
    let public = fixture("test-merchant-public-key.pem");
    let err = Signer::from_setting(SignType::Rsa2, "ALIPAY_PRIVATE_KEY", &public).err();
    assert_eq!(
        err.map(|e: KeyError| e.setting),
        Some("ALIPAY_PRIVATE_KEY".into())
    );
    let err = Signer::from_setting(SignType::Rsa, "ALIPAY_PRIVATE_KEY", "AAAA").err();
    assert_eq!(err.map(|e| e.setting), Some("ALIPAY_PRIVATE_KEY".into()));
    let private = fixture("test-merchant-private-key.pem");
    let err = Verifier::new()
        .with_public_key("ALIPAY_PUBLIC_KEY", &private)
        .err();
    assert_eq!(err.map(|e| e.setting), Some("ALIPAY_PUBLIC_KEY".into()));
    let err = Verifier::new().with_md5_key("ALIPAY_MD5_KEY", " ").err();
    assert_eq!(err.map(|e| e.setting), Some("ALIPAY_MD5_KEY".into()));
}
