//! Configuration errors name the setting: through the library, and through the binary (a clean message
//! and exit code 1, never a panic).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code asserts by panicking

use std::collections::HashMap;
use std::process::Command;

use vendpay::Config;

fn error_of(pairs: &[(&str, &str)]) -> String {
    let map: HashMap<&str, &str> = pairs.iter().copied().collect();
    match Config::from_lookup(|n| map.get(n).map(|v| (*v).to_owned())) {
        Ok(c) => panic!("expected an error for {pairs:?}, got {c:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn every_malformed_setting_is_named() {
    let cases: &[(&str, &str)] = &[
        ("VENDPAY_LISTEN", "not-an-address"),
        ("PAY_FIRST_WINDOW_SECS", "1.5"),
        ("PURCHASE_FIRST_WINDOW_SECS", "0"),
        ("ORDER_PAYMENT_WINDOW_SECS", "ten"),
        ("ADMIN_TOKEN", "abc"),
        ("PUBLIC_BASE_URL", "example.com"),
        ("DEVICE_KEY", "00ff"),
        ("ALIPAY_NOTIFY_VERIFY", "yes please"),
        ("ALIPAY_SETTLEMENT_CURRENCY", "???"),
        ("ALIPAY_GATEWAY_URL", "gopher://alipay"),
    ];
    for (setting, value) in cases {
        let msg = error_of(&[(setting, value)]);
        assert!(
            msg.starts_with(setting),
            "{setting}={value:?}: {msg:?} does not start with the setting's name"
        );
    }
}

#[test]
fn a_gateway_names_the_first_missing_credential() {
    let url = ("ALIPAY_GATEWAY_URL", "https://mapi.alipay.com/gateway.do");
    assert!(error_of(&[url]).contains("ALIPAY_PARTNER_ID"));
    let partner = ("ALIPAY_PARTNER_ID", "2088000000000001");
    assert!(error_of(&[url, partner]).contains("ALIPAY_PRIVATE_KEY"));
    let key = ("ALIPAY_PRIVATE_KEY", "not a key");
    assert!(error_of(&[url, partner, key]).contains("ALIPAY_PRIVATE_KEY"));
}

#[test]
fn the_binary_refuses_to_start_and_names_the_setting() {
    let out = Command::new(env!("CARGO_BIN_EXE_vendpay"))
        .arg("serve")
        .env("PAY_FIRST_WINDOW_SECS", "soon")
        .env("VENDPAY_LISTEN", "127.0.0.1:0")
        .env("VENDPAY_DB", "/nonexistent/never-created.sqlite")
        .output()
        .expect("run vendpay");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
    assert!(stderr.contains("PAY_FIRST_WINDOW_SECS"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn store_aws_without_its_resources_names_the_setting() {
    let out = Command::new(env!("CARGO_BIN_EXE_vendpay"))
        .args(["serve", "--store", "aws"])
        .env("VENDPAY_LISTEN", "127.0.0.1:0")
        .env("VENDPAY_DB", "/nonexistent/never-created.sqlite")
        .env_remove("VENDPAY_AWS_CREATE")
        .env_remove("TABLE_NAME")
        .output()
        .expect("run vendpay");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
    assert!(stderr.contains("TABLE_NAME"), "{stderr}");
    assert!(stderr.contains("--create-missing"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");

    let out = Command::new(env!("CARGO_BIN_EXE_vendpay"))
        .args(["serve", "--store", "dynamo"])
        .output()
        .expect("run vendpay");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
    assert!(stderr.contains("the stores are sqlite and aws"), "{stderr}");
}

#[test]
fn store_aws_never_uses_the_sandbox_unless_asked() {
    // A real table and refund queue driven against a fake Alipay would turn real refunds into
    // failures and overwrite real QR codes.
    let aws = [
        ("VENDPAY_STORE", "aws"),
        ("TABLE_NAME", "vendpay"),
        ("DEADLINE_QUEUE_URL", "http://127.0.0.1:5000/q/deadline"),
        ("REFUND_QUEUE_URL", "http://127.0.0.1:5000/q/refund"),
    ];
    let msg = error_of(&aws);
    assert!(msg.starts_with("ALIPAY_GATEWAY_URL"), "{msg}");
    assert!(msg.contains("--sandbox"), "{msg}");
    let map: HashMap<&str, &str> = aws
        .iter()
        .copied()
        .chain([("VENDPAY_SANDBOX", "true")])
        .collect();
    let config = Config::from_lookup(|n| map.get(n).map(|v| (*v).to_owned()));
    assert!(config.as_ref().is_ok_and(Config::is_sandbox), "{config:?}");
    // Asked for both a gateway and the sandbox: refused, not guessed.
    let msg = error_of(&[
        ("VENDPAY_SANDBOX", "true"),
        ("ALIPAY_GATEWAY_URL", "https://mapi.alipay.com/gateway.do"),
    ]);
    assert!(msg.starts_with("VENDPAY_SANDBOX"), "{msg}");
}
