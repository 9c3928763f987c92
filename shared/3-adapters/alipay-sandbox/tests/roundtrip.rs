//! The real client against the sandbox, in process on an ephemeral port: signatures both ways,
//! Alipay's rules, notifications and their resends, and every fault switch.
//!
//! Longer than most files on purpose: each fault switch is tested beside the round trip it breaks,
//! so the file reads as the sandbox's behaviour list; every test starts its own sandbox.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code asserts by panicking

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use axum::Router;
use vendpay_alipay::{
    verify_notification, AlipayConfig, AlipayError, AlipayGateway, ErrorCode, HttpGateway,
    MerchantProfile, Notification, NotificationKind, NotifyId, NotifyUrl, PartnerId, QrCodeCreate,
    QrCodeStatus, RefundRequest, SignatureError, TradeRef, TradeStatus, Verifier,
};
use vendpay_alipay_sandbox::{
    GatewayFault, NotificationFault, RefundFault, RunningSandbox, Sandbox, SandboxConfig,
    TEST_ALIPAY_PRIVATE_KEY, TEST_ALIPAY_PUBLIC_KEY, TEST_MERCHANT_PRIVATE_KEY,
    TEST_MERCHANT_PUBLIC_KEY,
};
use vendpay_domain::{
    BuyerId, Clock, Currency, DeviceId, MerchantTradeNo, Money, RefundId, SystemClock, Timestamp,
    TradeNo,
};
use vendpay_test_kit::fixtures::cny;

const PARTNER: &str = "2088000000000001";

/// Receives notifications like vendpay's notify route: verifies them and answers from a script
/// (then `success`).
#[derive(Clone, Default)]
struct Receiver {
    got: Arc<Mutex<Vec<Notification>>>,
    refused: Arc<Mutex<Vec<String>>>,
    answers: Arc<Mutex<VecDeque<&'static str>>>,
}

async fn receive(State((r, v)): State<(Receiver, Arc<Verifier>)>, body: Bytes) -> &'static str {
    match verify_notification(&body, &v) {
        Ok(n) => {
            r.got.lock().unwrap().push(n);
            r.answers.lock().unwrap().pop_front().unwrap_or("success")
        }
        Err(e) => {
            r.refused.lock().unwrap().push(e.to_string());
            "fail"
        }
    }
}

struct Env {
    sandbox: Sandbox,
    running: RunningSandbox,
    gateway: HttpGateway,
    receiver: Receiver,
    notify_base: String,
}

fn lookup(map: HashMap<&'static str, String>) -> impl Fn(&str) -> Option<String> {
    move |k| map.get(k).cloned()
}

fn client_config(
    gateway_url: &str,
    sign_type: &str,
    private_key: &str,
    public_key: &str,
) -> AlipayConfig {
    AlipayConfig::from_lookup(lookup(HashMap::from([
        ("ALIPAY_GATEWAY_URL", gateway_url.to_owned()),
        ("ALIPAY_PARTNER_ID", PARTNER.to_owned()),
        ("ALIPAY_SIGN_TYPE", sign_type.to_owned()),
        ("ALIPAY_PRIVATE_KEY", private_key.to_owned()),
        ("ALIPAY_PUBLIC_KEY", public_key.to_owned()),
        (
            "ALIPAY_MD5_KEY",
            "md5testkey0000000000000000000000".to_owned(),
        ),
    ])))
    .unwrap()
}

fn gateway_with(config: AlipayConfig, http: reqwest::Client) -> HttpGateway {
    HttpGateway::new(http, Arc::new(config), Arc::new(SystemClock))
}

async fn env_with(tweak: impl FnOnce(&mut SandboxConfig)) -> Env {
    env_on(Arc::new(SystemClock), tweak).await
}

/// The real time, plus however far a test has moved it.
#[derive(Default)]
struct MovedClock(AtomicI64);

impl MovedClock {
    fn advance(&self, d: Duration) {
        self.0.fetch_add(d.as_millis() as i64, Ordering::SeqCst);
    }
}

impl Clock for MovedClock {
    fn now(&self) -> Timestamp {
        Timestamp::from_millis(SystemClock.now().millis() + self.0.load(Ordering::SeqCst))
    }
}

async fn env_on(clock: Arc<dyn Clock>, tweak: impl FnOnce(&mut SandboxConfig)) -> Env {
    let mut config = SandboxConfig::with_test_keys(PartnerId::parse(PARTNER).unwrap());
    config.time_scale = 0.0001;
    config.md5_key = Some("md5testkey0000000000000000000000".into());
    tweak(&mut config);
    let sandbox = Sandbox::with_clock(config, clock).unwrap();
    let running = sandbox
        .serve(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .unwrap();

    let receiver = Receiver::default();
    let verifier = Arc::new(
        Verifier::new()
            .with_public_key("ALIPAY_PUBLIC_KEY", TEST_ALIPAY_PUBLIC_KEY)
            .unwrap(),
    );
    let app = Router::new()
        .route("/alipay/notify/{device}", post(receive))
        .with_state((receiver.clone(), verifier));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let notify_base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });

    let gateway = gateway_with(
        client_config(
            &running.gateway_url(),
            "RSA2",
            TEST_MERCHANT_PRIVATE_KEY,
            TEST_ALIPAY_PUBLIC_KEY,
        ),
        vendpay_alipay::http_client().unwrap(),
    );
    Env {
        sandbox,
        running,
        gateway,
        receiver,
        notify_base,
    }
}

async fn env() -> Env {
    env_with(|_| {}).await
}

fn profile() -> MerchantProfile {
    MerchantProfile::from_lookup(lookup(HashMap::from([
        ("ALIPAY_SECONDARY_MERCHANT_ID", "vendco_1".to_owned()),
        ("ALIPAY_SECONDARY_MERCHANT_NAME", "Vend Co".to_owned()),
        ("ALIPAY_MERCHANT_INDUSTRY", "5814".to_owned()),
        ("ALIPAY_SETTLEMENT_CURRENCY", "USD".to_owned()),
    ])))
    .unwrap()
}

impl Env {
    fn create_request(&self, device: &str) -> QrCodeCreate {
        let device = DeviceId::parse(device).unwrap();
        QrCodeCreate {
            notify_url: NotifyUrl::parse(&format!("{}/alipay/notify/{device}", self.notify_base))
                .unwrap(),
            biz: profile().biz_data(&device, "Station", Currency::Cny),
        }
    }

    async fn wait_for(&self, n: usize) -> Vec<Notification> {
        for _ in 0..400 {
            let got = self.receiver.got.lock().unwrap().clone();
            if got.len() >= n {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!(
            "expected {n} notifications, got {:?}; refused {:?}; deliveries {:?}",
            self.receiver.got.lock().unwrap().len(),
            self.receiver.refused.lock().unwrap(),
            self.sandbox.deliveries()
        );
    }
}

#[tokio::test]
async fn qr_codes_are_idempotent_per_store_and_can_be_stopped() {
    let env = env().await;
    let a = env
        .gateway
        .qrcode_create(&env.create_request("vm-1"))
        .await
        .unwrap();
    let again = env
        .gateway
        .qrcode_create(&env.create_request("vm-1"))
        .await
        .unwrap();
    assert_eq!(a.qrcode, again.qrcode);
    assert!(a.qrcode_img_url.is_some());
    let b = env
        .gateway
        .qrcode_create(&env.create_request("vm-2"))
        .await
        .unwrap();
    assert_ne!(a.qrcode, b.qrcode);

    env.gateway
        .qrcode_modify_status(&a.qrcode, QrCodeStatus::Stop)
        .await
        .unwrap();
    assert!(env.sandbox.pay(a.qrcode.as_str(), cny(100), None).is_err());
    env.gateway
        .qrcode_modify_status(&a.qrcode, QrCodeStatus::Restart)
        .await
        .unwrap();
    assert!(env.sandbox.pay(a.qrcode.as_str(), cny(100), None).is_ok());

    let unknown = vendpay_alipay::QrCode::parse("https://qr.alipay.com/none").unwrap();
    let err = env
        .gateway
        .qrcode_modify_status(&unknown, QrCodeStatus::Stop)
        .await
        .unwrap_err();
    assert!(
        matches!(err, AlipayError::Rejected(ErrorCode::Other(ref c)) if c == "QRCODE_NOT_EXIST"),
        "{err:?}"
    );
    assert!(!err.is_retryable());
}

#[tokio::test]
async fn a_payment_is_notified_verified_refunded_and_queried() {
    let env = env().await;
    let qr = env
        .gateway
        .qrcode_create(&env.create_request("vm-1"))
        .await
        .unwrap();
    let buyer = BuyerId::parse("2088101122334455").unwrap();
    let receipt = env
        .sandbox
        .pay(qr.qrcode.as_str(), cny(500), Some(buyer.clone()))
        .unwrap();

    let got = env.wait_for(1).await;
    let NotificationKind::Payment(p) = &got[0].kind else {
        panic!("not a payment: {:?}", got[0].kind)
    };
    assert_eq!(p.amount, cny(500));
    assert_eq!(p.trade_no.as_str(), receipt.trade_no);
    assert_eq!(p.out_trade_no.as_str(), receipt.out_trade_no);
    assert_eq!(p.buyer_id.as_ref(), Some(&buyer));
    assert_eq!(
        p.passback_parameters.as_deref(),
        Some(r#"{"device_id":"vm-1"}"#)
    );
    assert_eq!(got[0].fields.get("currency"), Some("USD"));

    let notify_id = got[0].notify_id.clone().unwrap();
    assert!(env.gateway.notify_verify(&notify_id).await.unwrap());
    assert!(!env
        .gateway
        .notify_verify(&NotifyId::parse("forged").unwrap())
        .await
        .unwrap());

    let refund = |id: &str, minor: u64| RefundRequest {
        partner_trans_id: p.out_trade_no.clone(),
        alipay_trans_id: Some(p.trade_no.clone()),
        partner_refund_id: RefundId::parse(id).unwrap(),
        amount: cny(minor),
        reason: Some("change".into()),
        notify_url: None,
    };
    let first = env.gateway.refund(&refund("r1", 300)).await.unwrap();
    assert_eq!((first.amount, first.repeated), (cny(300), false));
    // A retry of the same refund is the same refund, not a second one.
    let retry = env.gateway.refund(&refund("r1", 300)).await.unwrap();
    assert_eq!(retry.amount, cny(300));
    let reused = env.gateway.refund(&refund("r1", 100)).await.unwrap_err();
    assert!(
        matches!(reused, AlipayError::RefundAmountMismatch { .. }),
        "{reused:?}"
    );
    // Alipay may have paid under this id: unknown (pending, then `refund_stuck`), never "failed".
    assert!(reused.is_retryable());
    let exceed = env.gateway.refund(&refund("r2", 201)).await.unwrap_err();
    assert_eq!(exceed.code(), Some(&ErrorCode::ReturnAmountExceed));
    assert!(!exceed.is_retryable());
    env.gateway.refund(&refund("r2", 200)).await.unwrap();
    let empty = env.gateway.refund(&refund("r3", 1)).await.unwrap_err();
    assert_eq!(empty.code(), Some(&ErrorCode::ReturnAmountExceed));

    let usd = RefundRequest {
        amount: Money::new(1, Currency::Usd).unwrap(),
        ..refund("r4", 1)
    };
    let err = env.gateway.refund(&usd).await.unwrap_err();
    assert_eq!(err.code(), Some(&ErrorCode::CurrencyNotSame));

    let q = env
        .gateway
        .query(&TradeRef::Merchant(p.out_trade_no.clone()))
        .await
        .unwrap();
    assert_eq!(q.status, TradeStatus::TradeSuccess);
    assert_eq!(q.amount, cny(500));
    assert_eq!(q.trade_no.as_ref(), Some(&p.trade_no));
    assert_eq!(q.buyer_id.as_ref(), Some(&buyer));
    let missing = env
        .gateway
        .query(&TradeRef::Alipay(TradeNo::parse("nope").unwrap()))
        .await
        .unwrap_err();
    assert!(
        matches!(missing, AlipayError::Failed(ErrorCode::Other(ref c)) if c == "TRADE_NOT_EXIST")
    );

    let ghost = RefundRequest {
        partner_trans_id: MerchantTradeNo::parse("ghost").unwrap(),
        alipay_trans_id: None,
        ..refund("r5", 1)
    };
    let err = env.gateway.refund(&ghost).await.unwrap_err();
    assert_eq!(err.code(), Some(&ErrorCode::PurchaseTradeNotExist));
}

#[tokio::test]
async fn faults_are_classified_retryable_and_a_retry_is_safe() {
    let env = env_with(|c| c.timeout_delay = Duration::from_secs(2)).await;
    let qr = env
        .gateway
        .qrcode_create(&env.create_request("vm-1"))
        .await
        .unwrap();
    let receipt = env.sandbox.pay(qr.qrcode.as_str(), cny(500), None).unwrap();
    let refund = RefundRequest {
        partner_trans_id: MerchantTradeNo::parse(&receipt.out_trade_no).unwrap(),
        alipay_trans_id: Some(TradeNo::parse(&receipt.trade_no).unwrap()),
        partner_refund_id: RefundId::parse("r1").unwrap(),
        amount: cny(500),
        reason: None,
        notify_url: None,
    };

    env.sandbox.push_gateway_fault(GatewayFault::Unknow);
    let err = env.gateway.refund(&refund).await.unwrap_err();
    assert!(
        matches!(err, AlipayError::Unknown(ref c) if c == "UNKNOW"),
        "{err:?}"
    );
    assert!(err.is_retryable());
    // The UNKNOW refund did go through; the retry under the same id must not refund twice.
    let ok = env.gateway.refund(&refund).await.unwrap();
    assert_eq!(ok.amount, cny(500));

    env.sandbox.push_gateway_fault(GatewayFault::Html);
    let err = env
        .gateway
        .query(&TradeRef::Merchant(refund.partner_trans_id.clone()))
        .await
        .unwrap_err();
    assert!(matches!(err, AlipayError::NotXml(_)), "{err:?}");
    assert!(err.is_retryable());

    env.sandbox.push_gateway_fault(GatewayFault::Unknow);
    let err = env
        .gateway
        .qrcode_create(&env.create_request("vm-1"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(&ErrorCode::Unknow));
    assert!(err.is_retryable());

    // A client with a shorter total timeout than the sandbox's stall.
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let slow = gateway_with(
        client_config(
            &env.running.gateway_url(),
            "RSA2",
            TEST_MERCHANT_PRIVATE_KEY,
            TEST_ALIPAY_PUBLIC_KEY,
        ),
        impatient,
    );
    env.sandbox.push_gateway_fault(GatewayFault::Timeout);
    let err = slow
        .query(&TradeRef::Merchant(refund.partner_trans_id.clone()))
        .await
        .unwrap_err();
    assert!(matches!(err, AlipayError::Timeout), "{err:?}");
    assert!(err.is_retryable());

    // Nobody listening at all.
    let closed = gateway_with(
        client_config(
            "http://127.0.0.1:9/gateway.do",
            "RSA2",
            TEST_MERCHANT_PRIVATE_KEY,
            TEST_ALIPAY_PUBLIC_KEY,
        ),
        vendpay_alipay::http_client().unwrap(),
    );
    let err = closed
        .query(&TradeRef::Merchant(refund.partner_trans_id))
        .await
        .unwrap_err();
    assert!(matches!(err, AlipayError::Connect(_)), "{err:?}");
    assert!(err.is_retryable());
}

#[tokio::test]
async fn wrong_keys_are_permanent_failures_on_both_sides() {
    let env = env().await;
    // The merchant signs with a key the sandbox does not know.
    let impostor = gateway_with(
        client_config(
            &env.running.gateway_url(),
            "RSA2",
            TEST_ALIPAY_PRIVATE_KEY,
            TEST_ALIPAY_PUBLIC_KEY,
        ),
        vendpay_alipay::http_client().unwrap(),
    );
    let err = impostor
        .qrcode_create(&env.create_request("vm-1"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(&ErrorCode::IllegalSign));
    assert!(!err.is_retryable());
    // The merchant trusts the wrong Alipay key: the answer's signature fails.
    let misconfigured = gateway_with(
        client_config(
            &env.running.gateway_url(),
            "RSA2",
            TEST_MERCHANT_PRIVATE_KEY,
            TEST_MERCHANT_PUBLIC_KEY,
        ),
        vendpay_alipay::http_client().unwrap(),
    );
    let err = misconfigured
        .qrcode_create(&env.create_request("vm-1"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, AlipayError::AnswerSignature(SignatureError::WrongKey)),
        "{err:?}"
    );
    assert!(!err.is_retryable());
}

#[tokio::test]
async fn legacy_rsa_and_md5_merchants_work_too() {
    let env = env().await;
    for sign_type in ["RSA", "MD5"] {
        let gw = gateway_with(
            client_config(
                &env.running.gateway_url(),
                sign_type,
                TEST_MERCHANT_PRIVATE_KEY,
                TEST_ALIPAY_PUBLIC_KEY,
            ),
            vendpay_alipay::http_client().unwrap(),
        );
        let qr = gw.qrcode_create(&env.create_request("vm-9")).await.unwrap();
        assert!(qr.qrcode.as_str().starts_with("https://"), "{sign_type}");
    }
}

#[tokio::test]
async fn repeated_refundment_request_with_the_same_amount_is_success() {
    let env = env_with(|c| c.repeated_refund_as_error = true).await;
    let qr = env
        .gateway
        .qrcode_create(&env.create_request("vm-1"))
        .await
        .unwrap();
    let receipt = env.sandbox.pay(qr.qrcode.as_str(), cny(500), None).unwrap();
    let refund = |minor| RefundRequest {
        partner_trans_id: MerchantTradeNo::parse(&receipt.out_trade_no).unwrap(),
        alipay_trans_id: None,
        partner_refund_id: RefundId::parse("r1").unwrap(),
        amount: cny(minor),
        reason: None,
        notify_url: None,
    };
    assert!(!env.gateway.refund(&refund(200)).await.unwrap().repeated);
    let again = env.gateway.refund(&refund(200)).await.unwrap();
    assert!(again.repeated);
    assert_eq!(again.amount, cny(200));
    let other = env.gateway.refund(&refund(300)).await.unwrap_err();
    assert!(
        matches!(other, AlipayError::RefundAmountMismatch { .. }),
        "{other:?}"
    );
}

#[tokio::test]
async fn spoiled_refund_answers_are_unknown_and_the_same_retry_is_safe() {
    let env = env().await;
    let qr = env
        .gateway
        .qrcode_create(&env.create_request("vm-1"))
        .await
        .unwrap();
    let receipt = env.sandbox.pay(qr.qrcode.as_str(), cny(500), None).unwrap();
    let refund = |id: &str| RefundRequest {
        partner_trans_id: MerchantTradeNo::parse(&receipt.out_trade_no).unwrap(),
        alipay_trans_id: Some(TradeNo::parse(&receipt.trade_no).unwrap()),
        partner_refund_id: RefundId::parse(id).unwrap(),
        amount: cny(100),
        reason: None,
        notify_url: None,
    };
    let faults = [
        ("sig", RefundFault::BadSignature),
        ("node", RefundFault::UnexpectedNode),
        ("408", RefundFault::RequestTimeout),
        ("repeat", RefundFault::RepeatedWithoutAmount),
    ];
    for (n, (id, fault)) in (1u64..).zip(faults) {
        env.sandbox.set_refund_fault(id, Some(fault));
        match env.gateway.refund(&refund(id)).await {
            Ok(o) => panic!("{fault:?}: counted as success: {o:?}"),
            Err(e) => assert!(e.is_retryable(), "{fault:?}: permanent: {e:?}"),
        }
        // The switch stays on: a retry is still unknown, and still refunds only once.
        let again = env.gateway.refund(&refund(id)).await;
        assert!(
            again.as_ref().is_err_and(|e| e.is_retryable()),
            "{fault:?}: {again:?}"
        );
        assert_eq!(env.sandbox.refunded(&receipt.trade_no), Some(cny(100 * n)));

        env.sandbox.set_refund_fault(id, None);
        let done = env.gateway.refund(&refund(id)).await.unwrap();
        assert_eq!(done.amount, cny(100), "{fault:?}");
        assert_eq!(env.sandbox.refunded(&receipt.trade_no), Some(cny(100 * n)));
    }
}

#[tokio::test]
async fn notifications_are_resent_until_success_and_faults_drop_or_duplicate_them() {
    let env = env().await;
    let qr = env
        .gateway
        .qrcode_create(&env.create_request("vm-1"))
        .await
        .unwrap();

    env.receiver
        .answers
        .lock()
        .unwrap()
        .extend(["fail", "busy"]);
    let first = env.sandbox.pay(qr.qrcode.as_str(), cny(100), None).unwrap();
    let got = env.wait_for(3).await;
    assert!(got
        .iter()
        .all(|n| n.notify_id.as_ref().map(|i| i.as_str()) == Some(first.notify_id.as_str())));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let attempts: Vec<_> = env
        .sandbox
        .deliveries()
        .into_iter()
        .filter(|d| d.trade_no == first.trade_no)
        .map(|d| (d.attempt, d.answer))
        .collect();
    assert_eq!(
        attempts,
        vec![
            (1, Some("fail".to_owned())),
            (2, Some("busy".to_owned())),
            (3, Some("success".to_owned()))
        ]
    );

    env.sandbox.push_notification_fault(NotificationFault::Drop);
    let dropped = env.sandbox.pay(qr.qrcode.as_str(), cny(200), None).unwrap();
    env.sandbox
        .push_notification_fault(NotificationFault::Duplicate);
    let duplicated = env.sandbox.pay(qr.qrcode.as_str(), cny(300), None).unwrap();
    let got = env.wait_for(5).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let count = |trade: &str| {
        got.iter()
            .filter(|n| n.fields.get("trade_no") == Some(trade))
            .count()
    };
    assert_eq!(count(&dropped.trade_no), 0);
    assert_eq!(count(&duplicated.trade_no), 2);
    assert!(env
        .sandbox
        .deliveries()
        .iter()
        .any(|d| d.trade_no == dropped.trade_no && d.dropped));
}

#[tokio::test]
async fn the_http_routes_pay_and_switch_faults() {
    let env = env().await;
    let qr = env
        .gateway
        .qrcode_create(&env.create_request("vm-1"))
        .await
        .unwrap();
    let http = reqwest::Client::new();
    let base = format!("http://{}", env.running.addr);
    let resp = http
        .post(format!("{base}/sandbox/faults"))
        .json(&serde_json::json!({"gateway": ["html"]}))
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success());
    let err = env
        .gateway
        .qrcode_create(&env.create_request("vm-1"))
        .await
        .unwrap_err();
    assert!(matches!(err, AlipayError::NotXml(_)));

    let resp = http
        .post(format!("{base}/sandbox/pay"))
        .json(
            &serde_json::json!({"qrcode": qr.qrcode.as_str(), "amount": "12.5", "currency": "CNY"}),
        )
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success());
    let got = env.wait_for(1).await;
    let NotificationKind::Payment(p) = &got[0].kind else {
        panic!("not a payment")
    };
    assert_eq!(p.amount, cny(1250));
    assert_eq!(p.buyer_id, None);

    let bad = http
        .post(format!("{base}/sandbox/pay"))
        .json(&serde_json::json!({"qrcode": qr.qrcode.as_str(), "amount": "1.005", "currency": "CNY"}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), reqwest::StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn notify_ids_expire_and_overseas_query_confirms_only_our_own_trades() {
    let clock = Arc::new(MovedClock::default());
    let env = env_on(clock.clone(), |c| c.notify_id_ttl = Duration::from_secs(60)).await;
    let qr = env
        .gateway
        .qrcode_create(&env.create_request("vm-1"))
        .await
        .unwrap();
    let a = env.sandbox.pay(qr.qrcode.as_str(), cny(350), None).unwrap();
    let b = env.sandbox.pay(qr.qrcode.as_str(), cny(120), None).unwrap();
    env.wait_for(2).await;
    let id = NotifyId::parse(&a.notify_id).unwrap();
    assert!(env.gateway.notify_verify(&id).await.unwrap());

    // Alipay resends for 25 hours, but a notification id answers true for about a minute only.
    clock.advance(Duration::from_secs(59));
    assert!(env.gateway.notify_verify(&id).await.unwrap());
    clock.advance(Duration::from_secs(2));
    assert!(!env.gateway.notify_verify(&id).await.unwrap());

    // overseas.query does not expire: a signed answer about the trade, under our partner id.
    let out = MerchantTradeNo::parse(a.out_trade_no.clone()).unwrap();
    let trade = TradeNo::parse(a.trade_no.clone()).unwrap();
    let q = env
        .gateway
        .query(&TradeRef::Both(out.clone(), trade.clone()))
        .await
        .unwrap();
    assert_eq!(q.status, TradeStatus::TradeSuccess);
    assert_eq!(q.amount, cny(350));
    assert_eq!(q.out_trade_no.as_ref(), Some(&out));
    assert_eq!(q.trade_no.as_ref(), Some(&trade));

    // Two ids of two different trades name no trade.
    let other = TradeNo::parse(b.trade_no.clone()).unwrap();
    let mixed = env
        .gateway
        .query(&TradeRef::Both(out.clone(), other))
        .await
        .unwrap_err();
    assert!(
        matches!(mixed, AlipayError::Failed(ErrorCode::Other(ref c)) if c == "TRADE_NOT_EXIST"),
        "{mixed:?}"
    );
    assert!(!mixed.is_retryable());

    // Another merchant account asking about our trade is refused.
    let stranger = AlipayConfig::from_lookup(lookup(HashMap::from([
        ("ALIPAY_GATEWAY_URL", env.running.gateway_url()),
        ("ALIPAY_PARTNER_ID", "2088999999999999".to_owned()),
        ("ALIPAY_SIGN_TYPE", "RSA2".to_owned()),
        ("ALIPAY_PRIVATE_KEY", TEST_MERCHANT_PRIVATE_KEY.to_owned()),
        ("ALIPAY_PUBLIC_KEY", TEST_ALIPAY_PUBLIC_KEY.to_owned()),
    ])))
    .unwrap();
    let stranger = gateway_with(stranger, vendpay_alipay::http_client().unwrap());
    let refused = stranger
        .query(&TradeRef::Both(out, trade))
        .await
        .unwrap_err();
    assert!(
        matches!(refused, AlipayError::Rejected(ErrorCode::IllegalPartner)),
        "{refused:?}"
    );
}
