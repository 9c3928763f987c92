//! RSA2-2048 signing and verification, and the pre-sign string of a typical notification.
//! Goal on the project's 2-core machine: sign ≤ 250 µs, verify ≤ 20 µs.

// A benchmark: a missing fixture or a failed signature ends it, as a test would.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use vendpay_alipay::{parse_form, presign_string, SignType, Signer, Verifier};

fn fixture(name: &str) -> String {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

const NOTIFICATION: &[(&str, &str)] = &[
    ("notify_time", "2024-01-02 03:05:00"),
    ("notify_type", "trade_status_sync"),
    ("notify_id", "ac05099524730693a8b330c5ecf72da9786"),
    ("notify_action_type", "payByAccountAction"),
    ("sign_type", "RSA2"),
    ("sign", "x"),
    ("out_trade_no", "SBX0000000042"),
    ("trade_no", "2024010222001156789012345678"),
    ("trade_status", "TRADE_SUCCESS"),
    ("total_fee", "12.50"),
    ("currency", "USD"),
    ("trans_currency", "CNY"),
    ("subject", "Vending machine 42"),
    ("gmt_payment", "2024-01-02 03:04:59"),
    ("buyer_id", "2088101122334455"),
    ("passback_parameters", r#"{"device_id":"vm-42"}"#),
];

fn benches(c: &mut Criterion) {
    let signer = Signer::from_setting(
        SignType::Rsa2,
        "ALIPAY_PRIVATE_KEY",
        &fixture("test-merchant-private-key.pem"),
    )
    .expect("test key");
    let verifier = Verifier::new()
        .with_public_key(
            "ALIPAY_PUBLIC_KEY",
            &fixture("test-merchant-public-key.pem"),
        )
        .expect("test key");
    let presign = presign_string(NOTIFICATION.iter().copied());
    let sign = signer.sign(presign.as_bytes()).expect("sign");

    c.bench_function("rsa2_2048_sign", |b| {
        b.iter(|| signer.sign(black_box(presign.as_bytes())))
    });
    c.bench_function("rsa2_2048_verify", |b| {
        b.iter(|| {
            verifier.verify(
                SignType::Rsa2,
                black_box(presign.as_bytes()),
                black_box(&sign),
            )
        })
    });
    c.bench_function("presign_notification", |b| {
        b.iter(|| presign_string(black_box(NOTIFICATION).iter().copied()))
    });
    let body: String = NOTIFICATION
        .iter()
        .map(|(k, v)| {
            format!(
                "{k}={}",
                v.replace(' ', "+")
                    .replace('{', "%7B")
                    .replace('}', "%7D")
                    .replace('"', "%22")
            )
        })
        .collect::<Vec<_>>()
        .join("&");
    c.bench_function("parse_form_and_presign_notification", |b| {
        b.iter(|| parse_form(black_box(body.as_bytes())).map(|f| f.presign()))
    });
}

criterion_group!(signing, benches);
criterion_main!(signing);
