//! `alipay-sandbox`: runs the sandbox gateway as a local HTTP server.
//!
//! Settings (environment): `SANDBOX_LISTEN` (127.0.0.1:8091), `SANDBOX_PARTNER_ID` (2088000000000001),
//! `SANDBOX_ALIPAY_PRIVATE_KEY` and `SANDBOX_MERCHANT_PUBLIC_KEY` (the built-in TEST keys by default),
//! `SANDBOX_MD5_KEY` (optional), `SANDBOX_TIME_SCALE` (1.0 = Alipay's real resend schedule).

use std::net::SocketAddr;
use std::process::ExitCode;

use vendpay_alipay::PartnerId;
use vendpay_alipay_sandbox::{Sandbox, SandboxConfig, TEST_ALIPAY_PUBLIC_KEY};

fn setting(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

fn config() -> Result<(SocketAddr, SandboxConfig, bool), String> {
    let listen = setting("SANDBOX_LISTEN").unwrap_or_else(|| "127.0.0.1:8091".into());
    let addr: SocketAddr = listen
        .parse()
        .map_err(|e| format!("SANDBOX_LISTEN: {listen:?} is not host:port ({e})"))?;
    let partner = setting("SANDBOX_PARTNER_ID").unwrap_or_else(|| "2088000000000001".into());
    let partner = PartnerId::parse(partner.trim())
        .map_err(|e| format!("SANDBOX_PARTNER_ID: {}", e.reason))?;
    let mut config = SandboxConfig::with_test_keys(partner);
    let mut test_key = true;
    if let Some(k) = setting("SANDBOX_ALIPAY_PRIVATE_KEY") {
        config.alipay_private_key = k;
        test_key = false;
    }
    if let Some(k) = setting("SANDBOX_MERCHANT_PUBLIC_KEY") {
        config.merchant_public_key = k;
    }
    config.md5_key = setting("SANDBOX_MD5_KEY");
    if let Some(s) = setting("SANDBOX_TIME_SCALE") {
        config.time_scale = s
            .trim()
            .parse()
            .map_err(|_| format!("SANDBOX_TIME_SCALE: {s:?} is not a number"))?;
    }
    Ok((addr, config, test_key))
}

#[tokio::main]
async fn main() -> ExitCode {
    let (addr, config, test_key) = match config() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("alipay-sandbox: {e}");
            return ExitCode::FAILURE;
        }
    };
    let partner = config.partner.clone();
    let sandbox = match Sandbox::new(config) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("alipay-sandbox: {e}");
            return ExitCode::FAILURE;
        }
    };
    let running = match sandbox.serve(addr).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("alipay-sandbox: cannot listen on {addr}: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!(
        "alipay-sandbox: ALIPAY_GATEWAY_URL={} ALIPAY_PARTNER_ID={partner}",
        running.gateway_url()
    );
    if test_key {
        println!("alipay-sandbox: signing with the built-in TEST key; ALIPAY_PUBLIC_KEY is:\n{TEST_ALIPAY_PUBLIC_KEY}");
    }
    match tokio::signal::ctrl_c().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("alipay-sandbox: {e}");
            ExitCode::FAILURE
        }
    }
}
