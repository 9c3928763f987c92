//! Alipay as the notification route sees it, for route tests: notification ids that expire on the
//! harness clock, the trades of OUR merchant account (what `alipay.acquire.overseas.query` under our
//! partner id finds), the trades of another merchant account whose notifications Alipay signs with the
//! very same key, and switches that make either call unreachable. The real client against the sandbox
//! is covered in shared/3-adapters/alipay-sandbox/tests.
#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use vendpay_alipay::{AlipayError, ErrorCode, NotifyId, TradeQuery, TradeRef, TradeStatus};
use vendpay_api::alipay::NotifyCheck;
use vendpay_app::contract::ManualClock;
use vendpay_domain::{Clock, Currency, MerchantTradeNo, Money, Timestamp, TradeNo};

use super::alipay_form;

/// How long a notification id passes `notify_verify` (Alipay: "within about a minute").
pub const NOTIFY_ID_TTL: Duration = Duration::from_secs(60);

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FakeTrade {
    pub trade_no: String,
    pub out_trade_no: String,
    pub amount: Money,
    pub notify_id: String,
}

impl FakeTrade {
    /// The signed notification Alipay POSTs for this trade.
    pub fn notification(&self, passback: Option<&str>) -> String {
        let fields = self.fields(passback);
        let fields: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
        alipay_form(&fields)
    }

    pub fn fields<'a>(&'a self, passback: Option<&'a str>) -> Vec<(&'a str, String)> {
        let mut f = vec![
            ("notify_id", self.notify_id.clone()),
            ("notify_time", "2023-11-15 06:13:20".to_owned()),
            ("notify_type", "trade_status_sync".to_owned()),
            ("notify_action_type", "payByAccountAction".to_owned()),
            ("out_trade_no", self.out_trade_no.clone()),
            ("trade_no", self.trade_no.clone()),
            ("trade_status", "TRADE_SUCCESS".to_owned()),
            ("total_fee", self.amount.to_decimal()),
            ("trans_currency", self.amount.currency().code().to_owned()),
            ("currency", "USD".to_owned()),
            ("gmt_payment", "2023-11-15 06:13:19".to_owned()),
        ];
        if let Some(p) = passback {
            f.push(("passback_parameters", p.to_owned()));
        }
        f
    }

    /// The same notification with `notify_id` folded into `notify_action_type`, the field sorted just
    /// before it: the pre-sign string, and so Alipay's signature, stay the same.
    pub fn folded_notification(&self) -> String {
        let fields = self.fields(None);
        let presign = vendpay_alipay::presign_string(fields.iter().map(|(k, v)| (*k, v.as_str())));
        let signer = vendpay_alipay::Signer::from_setting(
            vendpay_alipay::SignType::Rsa2,
            "test",
            super::ALIPAY_PRIVATE_KEY,
        )
        .expect("test key");
        let sign = signer.sign(presign.as_bytes()).expect("sign");
        let mut ser: Vec<(String, String)> = Vec::new();
        for (k, v) in &fields {
            match *k {
                "notify_id" => {}
                "notify_action_type" => {
                    ser.push((k.to_string(), format!("{v}&notify_id={}", self.notify_id)))
                }
                _ => ser.push((k.to_string(), v.clone())),
            }
        }
        ser.push(("sign".into(), sign));
        ser.push(("sign_type".into(), "RSA2".into()));
        encode(&ser)
    }
}

/// Strict form encoding: every byte but unreserved ones escaped.
pub fn encode(fields: &[(String, String)]) -> String {
    let enc = |s: &str| -> String {
        s.bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect()
    };
    fields
        .iter()
        .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
        .collect::<Vec<_>>()
        .join("&")
}

#[derive(Default)]
struct Books {
    /// notify_id → when Alipay issued it, for every notification Alipay sent (any merchant).
    issued: HashMap<String, Timestamp>,
    /// Trades of our merchant account, by trade_no.
    ours: HashMap<String, FakeTrade>,
    seq: u64,
}

pub struct FakeAlipay {
    clock: Arc<ManualClock>,
    books: Mutex<Books>,
    /// The next N `notify_verify` calls fail as a timeout would.
    pub verify_down: AtomicUsize,
    /// The next N `overseas.query` calls fail as a timeout would.
    pub query_down: AtomicUsize,
    /// The next N `notify_verify` calls hang for a minute before answering (a gateway that accepts
    /// the connection and never answers in time).
    pub verify_hangs: AtomicUsize,
    pub verify_calls: AtomicUsize,
    pub query_calls: AtomicUsize,
}

impl FakeAlipay {
    pub fn new(clock: Arc<ManualClock>) -> Arc<FakeAlipay> {
        Arc::new(FakeAlipay {
            clock,
            books: Mutex::new(Books::default()),
            verify_down: AtomicUsize::new(0),
            query_down: AtomicUsize::new(0),
            verify_hangs: AtomicUsize::new(0),
            verify_calls: AtomicUsize::new(0),
            query_calls: AtomicUsize::new(0),
        })
    }

    fn trade(&self, ours: bool, minor: u64) -> FakeTrade {
        let mut b = self.books.lock().expect("books");
        b.seq += 1;
        let n = b.seq;
        let prefix = if ours { "M" } else { "F" };
        let t = FakeTrade {
            trade_no: format!("2023{}{n:010}", if ours { 1 } else { 9 }),
            out_trade_no: format!("{prefix}{n:08}"),
            amount: Money::new(minor, Currency::Cny).expect("amount"),
            notify_id: format!("nid-{prefix}-{n}"),
        };
        b.issued.insert(t.notify_id.clone(), self.clock.now());
        if ours {
            b.ours.insert(t.trade_no.clone(), t.clone());
        }
        t
    }

    /// A buyer pays `minor` fen to our merchant account; its notification id is issued now.
    pub fn pay(&self, minor: u64) -> FakeTrade {
        self.trade(true, minor)
    }

    /// A buyer pays another merchant account: Alipay signs the notification with the same key, but
    /// our partner id neither verifies its notify_id nor finds the trade.
    pub fn pay_elsewhere(&self, minor: u64) -> FakeTrade {
        self.trade(false, minor)
    }

    fn take(counter: &AtomicUsize) -> bool {
        counter
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
    }

    pub fn notify_verify(&self, notify_id: &str) -> Result<bool, AlipayError> {
        self.verify_calls.fetch_add(1, Ordering::SeqCst);
        if Self::take(&self.verify_down) {
            return Err(AlipayError::Timeout);
        }
        let now = self.clock.now();
        let b = self.books.lock().expect("books");
        // A foreign merchant's id is not ours to verify: Alipay answers false under our partner id.
        let ours = b.ours.values().any(|t| t.notify_id == notify_id);
        Ok(ours
            && b.issued
                .get(notify_id)
                .is_some_and(|at| at.plus(NOTIFY_ID_TTL) >= now))
    }

    pub fn query(&self, trade: &TradeRef) -> Result<TradeQuery, AlipayError> {
        self.query_calls.fetch_add(1, Ordering::SeqCst);
        if Self::take(&self.query_down) {
            return Err(AlipayError::Timeout);
        }
        let b = self.books.lock().expect("books");
        let found = match trade {
            TradeRef::Alipay(t) => b.ours.get(t.as_str()),
            TradeRef::Merchant(m) => b.ours.values().find(|t| t.out_trade_no == m.as_str()),
            TradeRef::Both(m, t) => b
                .ours
                .get(t.as_str())
                .filter(|f| f.out_trade_no == m.as_str()),
        };
        let t =
            found.ok_or_else(|| AlipayError::Failed(ErrorCode::Other("TRADE_NOT_EXIST".into())))?;
        Ok(TradeQuery {
            status: TradeStatus::TradeSuccess,
            amount: t.amount,
            out_trade_no: Some(MerchantTradeNo::parse(t.out_trade_no.clone()).expect("out")),
            trade_no: Some(TradeNo::parse(t.trade_no.clone()).expect("trade")),
            buyer_id: None,
            pay_time: None,
        })
    }
}

#[async_trait]
impl NotifyCheck for FakeAlipay {
    async fn genuine(&self, notify_id: &NotifyId) -> Result<bool, AlipayError> {
        if Self::take(&self.verify_hangs) {
            tokio::time::sleep(std::time::Duration::from_secs(60)).await;
        }
        self.notify_verify(notify_id.as_str())
    }

    async fn trade(&self, trade: &TradeRef) -> Result<TradeQuery, AlipayError> {
        self.query(trade)
    }
}
