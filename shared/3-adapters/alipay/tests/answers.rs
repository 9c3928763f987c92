//! Synchronous answers must belong to the request they answer (see `docs/alipay.md`,
//! “Answer verdicts”): only a verified, matching answer is a success; anything we cannot tie to
//! the request is an unknown outcome (retryable), never a success and never a permanent failure.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code asserts by panicking

use std::collections::HashMap;

use vendpay_alipay::response::{
    parse_answer, qrcode_info, qrcode_status_answer, refund_outcome, trade_query,
};
use vendpay_alipay::{
    presign_string, AlipayConfig, AlipayConfigError, AlipayError, ErrorCode, SignType, Signer,
    TradeRef, Verifier,
};
use vendpay_domain::{MerchantTradeNo, RefundId, TradeNo};
use vendpay_test_kit::fixtures::cny;

const MD5_KEY: &str = "10000000000000000000000000000000";

fn verifier() -> Verifier {
    Verifier::new().with_md5_key("K", MD5_KEY).unwrap()
}

/// A correctly signed (MD5) accepted answer whose business node is `<node>` with `fields`.
fn signed(node: &str, fields: &[(&str, &str)]) -> Vec<u8> {
    let signer = Signer::from_setting(SignType::Md5, "K", MD5_KEY).unwrap();
    let sign = signer
        .sign(presign_string(fields.iter().copied()).as_bytes())
        .unwrap();
    let body: String = fields
        .iter()
        .map(|(k, v)| format!("<{k}>{v}</{k}>"))
        .collect();
    format!(
        "<alipay><is_success>T</is_success><response><{node}>{body}</{node}></response><sign>{sign}</sign><sign_type>MD5</sign_type></alipay>"
    )
    .into_bytes()
}

fn refund(body: &[u8]) -> Result<vendpay_alipay::RefundOutcome, AlipayError> {
    refund_outcome(
        parse_answer(body, &verifier())?,
        &RefundId::parse("r1").unwrap(),
        cny(300),
    )
}

fn assert_unknown<T: std::fmt::Debug>(what: &str, got: Result<T, AlipayError>) {
    match got {
        Ok(v) => panic!("{what}: counted as success: {v:?}"),
        Err(e) => assert!(
            e.is_retryable(),
            "{what}: permanent, must be unknown: {e:?}"
        ),
    }
}

#[test]
fn repeated_refundment_request_is_success_only_with_the_same_echoed_amount() {
    let same = refund(&signed(
        "alipay",
        &[
            ("result_code", "FAIL"),
            ("error", "REPEATED_REFUNDMENT_REQUEST"),
            ("partner_refund_id", "r1"),
            ("refund_amount", "3.00"),
            ("currency", "CNY"),
        ],
    ))
    .unwrap();
    assert!(same.repeated);
    assert_eq!(same.amount, cny(300));

    assert_unknown(
        "REPEATED_REFUNDMENT_REQUEST without an amount",
        refund(&signed(
            "alipay",
            &[
                ("result_code", "FAIL"),
                ("error", "REPEATED_REFUNDMENT_REQUEST"),
                ("partner_refund_id", "r1"),
            ],
        )),
    );
    assert_unknown(
        "REPEATED_REFUNDMENT_REQUEST with another amount",
        refund(&signed(
            "alipay",
            &[
                ("result_code", "FAIL"),
                ("error", "REPEATED_REFUNDMENT_REQUEST"),
                ("partner_refund_id", "r1"),
                ("refund_amount", "1.00"),
                ("currency", "CNY"),
            ],
        )),
    );
    assert_unknown(
        "REPEATED_REFUNDMENT_REQUEST with another currency",
        refund(&signed(
            "alipay",
            &[
                ("result_code", "FAIL"),
                ("error", "REPEATED_REFUNDMENT_REQUEST"),
                ("partner_refund_id", "r1"),
                ("refund_amount", "3.00"),
                ("currency", "USD"),
            ],
        )),
    );
}

#[test]
fn a_gateway_refusal_naming_repeated_refundment_request_is_unknown() {
    // Unsigned and without any amount: Alipay has paid under this id, for an amount we cannot see.
    assert_unknown(
        "is_success=F REPEATED_REFUNDMENT_REQUEST",
        refund(b"<alipay><is_success>F</is_success><error>REPEATED_REFUNDMENT_REQUEST</error></alipay>"),
    );
}

#[test]
fn a_refund_answer_must_echo_our_refund_id_in_a_refund_node() {
    let ok = refund(&signed(
        "alipay",
        &[
            ("result_code", "SUCCESS"),
            ("partner_refund_id", "r1"),
            ("refund_amount", "3.00"),
            ("currency", "CNY"),
        ],
    ))
    .unwrap();
    assert_eq!((ok.amount, ok.repeated), (cny(300), false));

    assert_unknown(
        "no partner_refund_id echo",
        refund(&signed("alipay", &[("result_code", "SUCCESS")])),
    );
    assert_unknown(
        "another refund's echo",
        refund(&signed(
            "alipay",
            &[("result_code", "SUCCESS"), ("partner_refund_id", "r2")],
        )),
    );
    // A signed node of another service, replayed: every refund field is there, the node is not.
    assert_unknown(
        "a <qrcodeinfo> node",
        refund(&signed(
            "qrcodeinfo",
            &[
                ("result_code", "SUCCESS"),
                ("partner_refund_id", "r1"),
                ("refund_amount", "3.00"),
                ("currency", "CNY"),
            ],
        )),
    );
    // Even a permanent-looking code counts only from the refund's own answer.
    assert_unknown(
        "RETURN_AMOUNT_EXCEED without the echo",
        refund(&signed(
            "alipay",
            &[("result_code", "FAIL"), ("error", "RETURN_AMOUNT_EXCEED")],
        )),
    );
}

#[test]
fn qrcode_and_query_answers_must_come_in_their_own_node() {
    let qr = [("qrcode", "https://qr.alipay.com/abc")];
    assert!(qrcode_info(parse_answer(&signed("qrcodeinfo", &qr), &verifier()).unwrap()).is_ok());
    assert!(qrcode_info(parse_answer(&signed("alipay", &qr), &verifier()).unwrap()).is_err());

    let query = [
        ("result_code", "SUCCESS"),
        ("alipay_trans_status", "TRADE_SUCCESS"),
        ("trans_amount", "5.00"),
        ("currency", "CNY"),
        ("out_trade_no", "VP1"),
        ("alipay_trans_id", "T1"),
    ];
    assert!(query_for(&both("VP1", "T1"), &signed("alipay", &query)).is_ok());
    assert!(query_for(&both("VP1", "T1"), &signed("qrcodeinfo", &query)).is_err());
}

fn both(out_trade_no: &str, trade_no: &str) -> TradeRef {
    TradeRef::Both(
        MerchantTradeNo::parse(out_trade_no).unwrap(),
        TradeNo::parse(trade_no).unwrap(),
    )
}

fn query_for(trade: &TradeRef, body: &[u8]) -> Result<vendpay_alipay::TradeQuery, AlipayError> {
    trade_query(parse_answer(body, &verifier())?, trade)
}

/// A paid trade's query answer with `echo` as its trade ids.
fn paid_query(echo: &[(&'static str, &'static str)]) -> Vec<u8> {
    let mut fields = vec![
        ("result_code", "SUCCESS"),
        ("alipay_trans_status", "TRADE_SUCCESS"),
        ("trans_amount", "5.00"),
        ("currency", "CNY"),
    ];
    fields.extend_from_slice(echo);
    signed("alipay", &fields)
}

fn assert_unverified<T: std::fmt::Debug>(what: &str, got: Result<T, AlipayError>) {
    match got {
        Err(AlipayError::Unverified(_)) => {}
        other => panic!("{what}: must be an unverifiable answer, is {other:?}"),
    }
}

#[test]
fn a_query_answer_must_echo_the_trade_asked_about() {
    let asked = both("VP1", "T1");
    let ok = query_for(
        &asked,
        &paid_query(&[("out_trade_no", "VP1"), ("alipay_trans_id", "T1")]),
    )
    .unwrap();
    assert_eq!(
        ok.out_trade_no,
        Some(MerchantTradeNo::parse("VP1").unwrap())
    );
    assert_eq!(ok.trade_no, Some(TradeNo::parse("T1").unwrap()));
    // The documentation's other name for our trade number is checked the same way.
    assert!(query_for(
        &asked,
        &paid_query(&[("partner_trans_id", "VP1"), ("alipay_trans_id", "T1")])
    )
    .is_ok());
    // One id is enough to tie the answer to the request, if it is one we asked about.
    assert!(query_for(&asked, &paid_query(&[("alipay_trans_id", "T1")])).is_ok());
    let by_trade_no = TradeRef::Alipay(TradeNo::parse("T1").unwrap());
    assert!(query_for(
        &by_trade_no,
        &paid_query(&[("out_trade_no", "VP9"), ("alipay_trans_id", "T1")])
    )
    .is_ok());

    assert_unverified(
        "another trade's trade_no",
        query_for(
            &asked,
            &paid_query(&[("out_trade_no", "VP1"), ("alipay_trans_id", "T2")]),
        ),
    );
    assert_unverified(
        "another trade's out_trade_no",
        query_for(
            &asked,
            &paid_query(&[("out_trade_no", "VP2"), ("alipay_trans_id", "T1")]),
        ),
    );
    assert_unverified(
        "another trade's partner_trans_id",
        query_for(&asked, &paid_query(&[("partner_trans_id", "VP2")])),
    );
    assert_unverified(
        "out_trade_no and partner_trans_id disagree",
        query_for(
            &asked,
            &paid_query(&[("out_trade_no", "VP1"), ("partner_trans_id", "VP2")]),
        ),
    );
    assert_unverified("no echo at all", query_for(&asked, &paid_query(&[])));
    let by_out = TradeRef::Merchant(MerchantTradeNo::parse("VP1").unwrap());
    assert_unverified(
        "only an id we did not ask about",
        query_for(&by_out, &paid_query(&[("alipay_trans_id", "T1")])),
    );
    assert!(query_for(&by_out, &paid_query(&[("out_trade_no", "VP1")])).is_ok());

    // Alipay's "no such trade" names no trade: it stays Alipay's answer (a permanent refusal).
    match query_for(
        &asked,
        &signed(
            "alipay",
            &[("result_code", "FAIL"), ("error", "TRADE_NOT_EXIST")],
        ),
    ) {
        Err(AlipayError::Failed(ErrorCode::Other(code))) => assert_eq!(code, "TRADE_NOT_EXIST"),
        other => panic!("TRADE_NOT_EXIST: {other:?}"),
    }
}

#[test]
fn a_qrcode_status_answer_must_come_in_a_qrcode_node() {
    let fields = [("qrcode", "https://qr.alipay.com/abc"), ("status", "STOP")];
    let status = |body: &[u8]| qrcode_status_answer(parse_answer(body, &verifier())?);
    assert!(status(&signed("qrcodeinfo", &fields)).is_ok());
    // A correctly signed node of another service (a refund's, a query's), replayed.
    assert_unverified(
        "an <alipay> node",
        status(&signed("alipay", &[("result_code", "SUCCESS")])),
    );
    assert_unverified("a <refund> node", status(&signed("refund", &fields)));
    // Accepted without any signed node at all: nothing ties it to our request.
    assert!(status(b"<alipay><is_success>T</is_success></alipay>").is_err());
}

fn config_with_gateway(url: &str) -> Result<AlipayConfig, AlipayConfigError> {
    let map = HashMap::from([
        ("ALIPAY_GATEWAY_URL", url.to_owned()),
        ("ALIPAY_PARTNER_ID", "2088000000000001".to_owned()),
        ("ALIPAY_SIGN_TYPE", "MD5".to_owned()),
        ("ALIPAY_MD5_KEY", MD5_KEY.to_owned()),
    ]);
    AlipayConfig::from_lookup(move |k| map.get(k).cloned())
}

#[test]
fn the_gateway_must_be_https_unless_it_is_on_this_host() {
    for ok in [
        "https://globalmapi.alipay.com/gateway.do",
        "https://mapi.alipaydev.com/gateway.do?x=1",
        "http://127.0.0.1:8080/gateway.do",
        "http://localhost/gateway.do",
        "http://LOCALHOST:9/gateway.do",
        "http://[::1]:9/gateway.do",
    ] {
        assert!(config_with_gateway(ok).is_ok(), "{ok} refused");
    }
    for bad in [
        "http://globalmapi.alipay.com/gateway.do",
        "http://127.0.0.1.evil.example/gateway.do",
        "http://localhost.evil.example/gateway.do",
        "http://127.0.0.1@evil.example/gateway.do",
        "http://10.0.0.1/gateway.do",
        "ftp://globalmapi.alipay.com/gateway.do",
        "https://",
        "globalmapi.alipay.com/gateway.do",
    ] {
        match config_with_gateway(bad) {
            Err(e @ AlipayConfigError::Invalid { .. }) => {
                assert!(e.to_string().contains("ALIPAY_GATEWAY_URL"), "{bad}: {e}")
            }
            other => panic!("{bad} accepted or wrongly refused: {other:?}"),
        }
    }
}
