//! The fuzz properties of vendpay's outside inputs, as plain functions `check_*(data: &[u8])` that
//! panic when a property fails.
//!
//! - `fuzz_targets/*.rs` call them under cargo-fuzz (nightly, libFuzzer): `scripts/fuzz`.
//! - `tests/tests/fuzz_corpus.rs` includes this very file with `#[path]` and replays the committed seed
//!   corpus `tests/fuzz/corpus/<target>/` through them on stable, in `scripts/test`.
//!
//! The file is compiled both as a crate root and as a module of that test, so it names no `crate::`
//! path and needs nothing but the crates both builds have (the vendpay crates and serde_json).
//!
//! Input layouts are textual so that seeds can be read and written by hand; each target documents its
//! own.
//!
//! One file on purpose: it is included both by cargo-fuzz (this crate) and by the corpus replay test
//! (`tests/tests/fuzz_corpus.rs`, through `#[path]`), which a module tree would complicate.

use std::sync::OnceLock;

use vendpay_alipay::notify::{parse_form, FormFields};
use vendpay_alipay::response::{
    notify_verify_answer, parse_answer, qrcode_info, refund_outcome, trade_query, Answer,
    BusinessNode,
};
use vendpay_alipay::time::{format_gmt8, parse_gmt8};
use vendpay_alipay::{presign_string, SignType, Signer, TradeRef, Verifier};
use vendpay_api::auth::{self, AuthError, SignedRequest, MAX_SKEW_SECS};
use vendpay_api::{input, QueuedRequest};
use vendpay_domain::{
    Currency, MerchantTradeNo, Money, OrderId, RefundId, RequestId, SessionId, Slot, Timestamp,
    TradeNo,
};

/// A fuzz target's check of one input.
pub type Check = fn(&[u8]);

/// Every target: its name (the `fuzz_targets/<name>.rs` binary and the `corpus/<name>/` directory) and
/// its check.
pub const TARGETS: &[(&str, Check)] = &[
    ("notify_form", check_notify_form),
    ("alipay_xml", check_alipay_xml),
    ("device_body", check_device_body),
    ("device_auth", check_device_auth),
    ("amount", check_amount),
];

/// `data` split at the first `sep`: the part before it, and the rest if there was one.
fn split_once(data: &[u8], sep: u8) -> (&[u8], Option<&[u8]>) {
    match data.iter().position(|b| *b == sep) {
        Some(i) => (&data[..i], Some(&data[i + 1..])),
        None => (data, None),
    }
}

// ---------------------------------------------------------------------------------------------------
// 1. Alipay notification forms (`notify_form`)
// ---------------------------------------------------------------------------------------------------

/// The MD5 key of the known-answer vectors (see `docs/alipay.md`, “Known-answer vectors”); a test
/// key.
const MD5_KEY: &str = "10000000000000000000000000000000";

/// Input: two form bodies separated by the first `\n` (a real notification has none: Alipay
/// percent-encodes it).
///
/// - `parse_form` never panics; an accepted form's pre-sign string is the same after the form is
///   re-encoded canonically (every byte but `[A-Za-z0-9*._-]` percent-encoded), and so are its fields.
/// - The signature covers exactly the fields the parser returns: when two accepted forms share a
///   pre-sign string, they carry the same (key, value) fields once `sign`, `sign_type` and empty
///   values are dropped. Otherwise one signature would vouch for two different notifications. The
///   pairs checked: the two forms of the input, and each form with its own pre-sign string read back
///   as a form (the split an attacker would try), so a single form can show a fold.
pub fn check_notify_form(data: &[u8]) {
    let (first, second) = split_once(data, b'\n');
    let a = parse_form(first);
    let b = second.map(parse_form);
    for f in [Some(&a), b.as_ref()].into_iter().flatten().flatten() {
        check_reencoded(f);
        if let Ok(r) = parse_form(&read_back(f)) {
            same_presign_same_fields(f, &r);
        }
    }
    if let (Ok(f), Some(Ok(g))) = (&a, &b) {
        same_presign_same_fields(f, g);
    }
}

fn same_presign_same_fields(f: &FormFields, g: &FormFields) {
    let presign = f.presign();
    if presign != g.presign() {
        return;
    }
    let (sf, sg) = (signed_fields(f), signed_fields(g));
    assert!(
        sf == sg,
        "two different field sets share the pre-sign string {:?}:\n  {:?} (charset {})\n  {:?} (charset {})",
        String::from_utf8_lossy(&presign),
        sf,
        f.charset(),
        sg,
        g.charset(),
    );
}

/// The pre-sign string as a form body: `%` and `+` escaped so that they decode to themselves.
fn read_back(f: &FormFields) -> Vec<u8> {
    let mut out = Vec::new();
    for b in f.presign() {
        match b {
            b'%' => out.extend_from_slice(b"%25"),
            b'+' => out.extend_from_slice(b"%2B"),
            b => out.push(b),
        }
    }
    out
}

/// The fields a signature covers, sorted: all but `sign`, `sign_type` and empty values.
fn signed_fields(f: &FormFields) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = f
        .iter()
        .filter(|(k, v)| !v.is_empty() && *k != "sign" && *k != "sign_type")
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    v.sort();
    v
}

fn form_encode(out: &mut Vec<u8>, bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in bytes {
        if b.is_ascii_alphanumeric() || matches!(b, b'*' | b'.' | b'_' | b'-') {
            out.push(b);
        } else {
            out.extend_from_slice(&[b'%', HEX[usize::from(b >> 4)], HEX[usize::from(b & 0xf)]]);
        }
    }
}

/// An accepted UTF-8 form, encoded again canonically, parses to the same fields and pre-sign string.
/// (Only UTF-8: the decoded text of another charset is not the bytes that were signed.)
fn check_reencoded(f: &FormFields) {
    if f.charset() != "UTF-8" {
        return;
    }
    let mut body = Vec::new();
    for (i, (k, v)) in f.iter().enumerate() {
        if i > 0 {
            body.push(b'&');
        }
        form_encode(&mut body, k.as_bytes());
        body.push(b'=');
        form_encode(&mut body, v.as_bytes());
    }
    match parse_form(&body) {
        Ok(g) => {
            let (fa, ga): (Vec<_>, Vec<_>) = (f.iter().collect(), g.iter().collect());
            assert_eq!(
                fa,
                ga,
                "re-encoded form {:?}",
                String::from_utf8_lossy(&body)
            );
            assert_eq!(f.presign(), g.presign());
        }
        Err(e) => panic!(
            "accepted form refused once re-encoded as {:?}: {e}",
            String::from_utf8_lossy(&body)
        ),
    }
}

// ---------------------------------------------------------------------------------------------------
// 2. Alipay's synchronous XML answers (`alipay_xml`)
// ---------------------------------------------------------------------------------------------------

fn verifier() -> &'static Verifier {
    static V: OnceLock<Option<Verifier>> = OnceLock::new();
    let v = V.get_or_init(|| {
        Verifier::new()
            .with_md5_key("MD5_KEY", MD5_KEY)
            .and_then(|v| {
                v.with_public_key(
                    "ALIPAY_PUBLIC_KEY",
                    include_str!(
                        "../../../shared/3-adapters/alipay/tests/fixtures/test-alipay-public-key.pem"
                    ),
                )
            })
            .ok()
    });
    match v {
        Some(v) => v,
        None => panic!("the test keys do not load"),
    }
}

fn md5_signer() -> Signer {
    match Signer::from_setting(SignType::Md5, "MD5_KEY", MD5_KEY) {
        Ok(s) => s,
        Err(e) => panic!("the test MD5 key does not load: {e}"),
    }
}

/// Input: any bytes, read three ways.
///
/// - As an answer body: `parse_answer` (MD5 and RSA/RSA2 accepted), then every interpreter on an
///   accepted answer, and `notify_verify_answer`: none panics.
/// - As a business node written as lines, the node's name first, then `key=value` per line: the
///   interpreters (`qrcode_info`, `refund_outcome`, `trade_query`) on it never panic, and a refund
///   outcome is always for the refund and amount asked.
/// - That node written as Alipay would (XML, MD5-signed): `parse_answer` accepts it and gives back the
///   very same fields, or refuses it for a duplicated field.
pub fn check_alipay_xml(data: &[u8]) {
    let _ = notify_verify_answer(data);
    if let Ok(answer) = parse_answer(data, verifier()) {
        interpret(&answer);
    }
    let node = node_from_lines(data);
    interpret(&Answer {
        business: Some(node.clone()),
    });
    if let Some(xml) = signed_xml(&node) {
        let keys: Vec<&str> = node.fields.iter().map(|(k, _)| k.as_str()).collect();
        let duplicated = keys.iter().enumerate().any(|(i, k)| keys[..i].contains(k));
        match parse_answer(xml.as_bytes(), verifier()) {
            Ok(answer) => {
                assert!(!duplicated, "a duplicated field was accepted: {xml}");
                assert_eq!(answer.business.as_ref(), Some(&node), "{xml}");
                interpret(&answer);
            }
            Err(e) => assert!(
                duplicated,
                "a well-formed signed answer was refused: {e}\n{xml}"
            ),
        }
    }
}

fn interpret(answer: &Answer) {
    let _ = qrcode_info(answer.clone());
    let (Ok(out), Ok(trade)) = (MerchantTradeNo::parse("VP1"), TradeNo::parse("T1")) else {
        panic!("constants");
    };
    if let Ok(q) = trade_query(answer.clone(), &TradeRef::Both(out.clone(), trade.clone())) {
        assert!(q.out_trade_no.is_none_or(|o| o == out) && q.trade_no.is_none_or(|t| t == trade));
    }
    let (Ok(id), Some(asked)) = (RefundId::parse("R1"), Money::new(500, Currency::Cny)) else {
        panic!("constants");
    };
    if let Ok(outcome) = refund_outcome(answer.clone(), &id, asked) {
        assert_eq!(outcome.partner_refund_id, id);
        assert_eq!(outcome.amount, asked);
    }
}

fn node_from_lines(data: &[u8]) -> BusinessNode {
    let text = String::from_utf8_lossy(data);
    let mut lines = text.split('\n');
    let name = lines.next().unwrap_or_default().to_owned();
    let fields = lines
        .map(|l| match l.split_once('=') {
            Some((k, v)) => (k.to_owned(), v.to_owned()),
            None => (l.to_owned(), String::new()),
        })
        .collect();
    BusinessNode { name, fields }
}

fn xml_name(s: &str) -> bool {
    let mut bytes = s.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

/// Text XML 1.0 can carry unchanged (line ends other than `\n` are normalised by every parser).
fn xml_text(s: &str) -> Option<String> {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\t' | '\n' => out.push(c),
            '\u{FFFE}' | '\u{FFFF}' => return None,
            c if c.is_control() => return None,
            c => out.push(c),
        }
    }
    Some(out)
}

/// The node as Alipay would answer it, MD5-signed; `None` when its names or text are not plain XML.
fn signed_xml(node: &BusinessNode) -> Option<String> {
    if !xml_name(&node.name) || node.name.len() > 64 {
        return None;
    }
    let mut inner = String::new();
    for (k, v) in &node.fields {
        if !xml_name(k) || k.len() > 64 {
            return None;
        }
        inner.push_str(&format!("<{k}>{}</{k}>", xml_text(v)?));
    }
    let presign = presign_string(node.fields.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    let sign = md5_signer().sign(presign.as_bytes()).ok()?;
    let name = &node.name;
    Some(format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<alipay><is_success>T</is_success>\
         <response><{name}>{inner}</{name}></response><sign>{sign}</sign><sign_type>MD5</sign_type></alipay>"
    ))
}

// ---------------------------------------------------------------------------------------------------
// 3. Machines' JSON bodies (`device_body`)
// ---------------------------------------------------------------------------------------------------

/// Input: a request body, read as every device route's body (purchase, vend result, order, end
/// session), and as a queued request envelope.
///
/// - Nothing panics.
/// - What a route accepts is what the body says: each accepted field equals the JSON value it came
///   from, ids parse back to themselves, prices are positive and in the currency asked, and the
///   accepted request written back as JSON parses to the same request.
pub fn check_device_body(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(q) = QueuedRequest::parse(text) {
            let _ = q.into_request();
        }
    }
    let Ok(body) = input::object(data) else {
        return;
    };
    let mut currencies = vec![Currency::Cny];
    if let Some(c) = body
        .get("price")
        .and_then(|p| p.get("currency"))
        .and_then(|c| c.as_str())
        .and_then(|c| c.parse::<Currency>().ok())
    {
        currencies.push(c);
    }
    for currency in currencies {
        if let Some(purchase) = purchase(&body, currency) {
            let again = input::object(purchase_json(&purchase).as_bytes())
                .ok()
                .and_then(|b| self::purchase(&b, currency));
            assert_eq!(again.as_ref(), Some(&purchase), "purchase written back");
        }
        if let Some(order) = order(&body, currency) {
            let again = input::object(order_json(&order).as_bytes())
                .ok()
                .and_then(|b| self::order(&b, currency));
            assert_eq!(again.as_ref(), Some(&order), "order written back");
        }
    }
    if let Ok(delivered) = input::boolean(&body, "delivered") {
        assert_eq!(
            body.get("delivered").and_then(|v| v.as_bool()),
            Some(delivered)
        );
    }
    if let Ok(session) = input::optional_parsed::<SessionId>(&body, "session_id") {
        same_id(&body, "session_id", session.as_ref().map(|s| s.as_str()));
        if let Some(s) = &session {
            assert_eq!(SessionId::parse(s.as_str()).as_ref(), Ok(s));
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
struct Purchase {
    request_id: RequestId,
    slot: Slot,
    price: Money,
    session: Option<SessionId>,
}

#[derive(Debug, PartialEq, Eq)]
struct Order {
    order_id: OrderId,
    slot: Slot,
    price: Money,
}

type Body = serde_json::Map<String, serde_json::Value>;

/// As the purchase route reads it; checks what it accepted against the JSON.
fn purchase(body: &Body, currency: Currency) -> Option<Purchase> {
    let p = Purchase {
        request_id: input::parsed(body, "request_id").ok()?,
        slot: input::parsed(body, "slot").ok()?,
        price: input::price(body, "price", currency).ok()?,
        session: input::optional_parsed(body, "session_id").ok()?,
    };
    same_id(body, "request_id", Some(p.request_id.as_str()));
    same_id(body, "slot", Some(p.slot.as_str()));
    same_id(body, "session_id", p.session.as_ref().map(|s| s.as_str()));
    assert_eq!(
        RequestId::parse(p.request_id.as_str()).as_ref(),
        Ok(&p.request_id)
    );
    assert_eq!(Slot::parse(p.slot.as_str()).as_ref(), Ok(&p.slot));
    same_price(body, p.price, currency);
    Some(p)
}

/// As the order route reads it.
fn order(body: &Body, currency: Currency) -> Option<Order> {
    let o = Order {
        order_id: input::parsed(body, "order_id").ok()?,
        slot: input::parsed(body, "slot").ok()?,
        price: input::price(body, "price", currency).ok()?,
    };
    same_id(body, "order_id", Some(o.order_id.as_str()));
    same_id(body, "slot", Some(o.slot.as_str()));
    assert_eq!(
        OrderId::parse(o.order_id.as_str()).as_ref(),
        Ok(&o.order_id)
    );
    same_price(body, o.price, currency);
    Some(o)
}

fn same_id(body: &Body, field: &str, accepted: Option<&str>) {
    let given = body.get(field).and_then(|v| v.as_str());
    assert_eq!(given, accepted, "{field} accepted as something else");
}

fn same_price(body: &Body, price: Money, currency: Currency) {
    assert!(!price.is_zero(), "a zero price was accepted");
    assert_eq!(price.currency(), currency);
    let given = body.get("price");
    assert_eq!(
        given.and_then(|p| p.get("minor")).and_then(|m| m.as_u64()),
        Some(price.minor())
    );
    assert_eq!(
        given
            .and_then(|p| p.get("currency"))
            .and_then(|c| c.as_str()),
        Some(currency.code())
    );
    // The domain's own JSON form of the amount is the one the route reads.
    let json = serde_json::to_value(price).ok();
    let back = json.as_ref().and_then(|j| j.as_object()).and_then(|j| {
        let mut m = Body::new();
        m.insert("price".into(), serde_json::Value::Object(j.clone()));
        input::price(&m, "price", currency).ok()
    });
    assert_eq!(back, Some(price), "{json:?}");
}

fn money_json(m: Money) -> serde_json::Value {
    serde_json::json!({"minor": m.minor(), "currency": m.currency().code()})
}

fn purchase_json(p: &Purchase) -> String {
    let mut v = serde_json::json!({
        "request_id": p.request_id.as_str(),
        "slot": p.slot.as_str(),
        "price": money_json(p.price),
    });
    if let (Some(s), Some(obj)) = (&p.session, v.as_object_mut()) {
        obj.insert("session_id".into(), s.as_str().into());
    }
    v.to_string()
}

fn order_json(o: &Order) -> String {
    serde_json::json!({
        "order_id": o.order_id.as_str(),
        "slot": o.slot.as_str(),
        "price": money_json(o.price),
    })
    .to_string()
}

// ---------------------------------------------------------------------------------------------------
// 4. Machines' auth headers (`device_auth`)
// ---------------------------------------------------------------------------------------------------

const SECRET: &str = "s3cret";

/// Input: lines `now_millis`, `X-Timestamp`, `X-Signature`, `X-Device-Id`, the path's device id,
/// method, path, then the body (the rest). A missing line is a missing header. A `now` that is not an
/// integer is 2023-11-14T22:13:20Z; an `X-Signature` of `*` is the right signature for the request.
///
/// - Nothing panics, whatever the timestamp or the clock (e.g. `-9223372036854775808`, once a panic).
/// - `verify` answers what `docs/contract.md` (“Machine authentication”) says, in its order: 403
///   for another device id, then missing
///   headers, a timestamp that is not an integer, one more than 300 s away from the server's clock
///   (computed here without overflow), a signature that is not 32 bytes of hex, and a wrong signature;
///   a right signature on a fresh request is accepted.
/// - `verify` is `check_envelope` followed by `check_signature`, and an unknown machine (no secret)
///   is refused for the envelope's reason or as unknown, never accepted.
pub fn check_device_auth(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let mut lines = text.splitn(8, '\n');
    let now = lines
        .next()
        .and_then(|l| l.trim().parse::<i64>().ok())
        .unwrap_or(1_700_000_000_000);
    let now = Timestamp::from_millis(now);
    let timestamp = lines.next();
    let signature = lines.next();
    let device_header = lines.next();
    let path_device = lines.next().unwrap_or("vm-1");
    let method = lines.next().unwrap_or("POST");
    let path = lines.next().unwrap_or("/devices/vm-1/purchases");
    let body = lines.next().unwrap_or("").as_bytes();
    let right = auth::sign(SECRET, method, path, timestamp.unwrap_or(""), body);
    let signature = match signature {
        Some("*") => Some(right.as_str()),
        other => other,
    };
    let req = SignedRequest {
        device_header,
        timestamp,
        signature,
        method,
        path_and_query: path,
        body,
    };
    let got = auth::verify(path_device, &req, Some(SECRET), now);
    let envelope = auth::check_envelope(path_device, &req, now);
    let split = match &envelope {
        Ok(e) => e.check_signature(&req, Some(SECRET)),
        Err(e) => Err(e.clone()),
    };
    assert_eq!(
        got, split,
        "verify differs from check_envelope + check_signature"
    );
    match auth::verify(path_device, &req, None, now) {
        Ok(()) => panic!("a request without a secret was accepted"),
        Err(AuthError::UnknownDevice) => assert!(envelope.is_ok()),
        Err(e) => assert_eq!(envelope.as_ref().err(), Some(&e)),
    }

    // The documented answer (docs/contract.md#machine-authentication), computed independently.
    let want: Result<(), &str> = (|| {
        let header = device_header.ok_or("missing X-Device-Id")?;
        if header != path_device {
            return Err("mismatch");
        }
        let ts = timestamp.ok_or("missing X-Timestamp")?;
        let sig = signature.ok_or("missing X-Signature")?;
        let ts: i64 = ts.trim().parse().map_err(|_| "bad timestamp")?;
        let skew = i128::from(ts) - i128::from(now.millis().div_euclid(1000));
        if skew.abs() > i128::from(MAX_SKEW_SECS) {
            return Err(if skew > 0 { "stale+" } else { "stale-" });
        }
        let sig = sig.trim();
        if sig.len() != 64 || !sig.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err("malformed signature");
        }
        if !sig.eq_ignore_ascii_case(&right) {
            return Err("bad signature");
        }
        Ok(())
    })();
    let kind = got.as_ref().map_err(|e| match e {
        AuthError::MissingHeader("X-Device-Id") => "missing X-Device-Id",
        AuthError::MissingHeader("X-Timestamp") => "missing X-Timestamp",
        AuthError::MissingHeader("X-Signature") => "missing X-Signature",
        AuthError::MissingHeader(_) => "missing other",
        AuthError::Mismatch { .. } => "mismatch",
        AuthError::BadTimestamp(_) => "bad timestamp",
        AuthError::Stale { skew } if *skew > 0 => "stale+",
        AuthError::Stale { .. } => "stale-",
        AuthError::MalformedSignature => "malformed signature",
        AuthError::BadSignature => "bad signature",
        AuthError::UnknownDevice => "unknown device",
    });
    assert_eq!(
        kind.copied(),
        want,
        "X-Timestamp {timestamp:?} at {now:?}: {got:?}"
    );
    if let Err(e) = &got {
        assert!(matches!(e.status(), 401 | 403));
        let _ = (e.code(), e.to_string());
    }
    let _ = auth::admin_token_matches("t0k", device_header);
}

// ---------------------------------------------------------------------------------------------------
// 5. Alipay's amounts (and GMT+8 times) (`amount`)
// ---------------------------------------------------------------------------------------------------

/// Input: `CUR:amount` (e.g. `CNY:10.50`; without a known code, the first byte picks the currency and
/// the rest is the amount).
///
/// - `Money::parse_decimal` accepts exactly the plain decimals with at most the currency's decimals
///   that fit `Money::MAX_MINOR` (checked against a separate reading in u128), with their value.
/// - Every accepted amount, and every `Money` (the amount's first 8 bytes as a u64), formats to a
///   string that parses back to it: `parse(format(m)) == m`; that string is canonical, so formatting
///   the parsed canonical string gives it back. The JSON form round-trips too.
/// - The same text read as Alipay's GMT+8 time: `parse_gmt8` never panics, and an accepted time
///   formats back to the same text.
pub fn check_amount(data: &[u8]) {
    let (currency, rest) = match data.get(..4).and_then(|h| {
        let code = std::str::from_utf8(&h[..3]).ok()?;
        (h[3] == b':').then_some(code.parse::<Currency>().ok()?)
    }) {
        Some(c) => (c, &data[4..]),
        None => match data.split_first() {
            Some((b, rest)) => (Currency::ALL[usize::from(*b) % Currency::ALL.len()], rest),
            None => return,
        },
    };
    if let Some(bytes) = rest.get(..8).and_then(|b| <[u8; 8]>::try_from(b).ok()) {
        let minor = u64::from_le_bytes(bytes);
        match Money::new(minor, currency) {
            Some(m) => round_trips(m),
            None => assert!(minor > Money::MAX_MINOR),
        }
    }
    let Ok(s) = std::str::from_utf8(rest) else {
        return;
    };
    let got = Money::parse_decimal(s, currency);
    let want = reference_minor(s, currency.exponent());
    assert_eq!(
        got.as_ref().ok().map(|m| m.minor()),
        want,
        "{s:?} in {currency}: {got:?}"
    );
    if let Ok(m) = got {
        assert_eq!(m.currency(), currency);
        round_trips(m);
    }
    if let Some(ts) = parse_gmt8(s) {
        assert_eq!(format_gmt8(ts), s, "GMT+8 time {s:?} read as {ts:?}");
    }
}

fn round_trips(m: Money) {
    let text = m.to_decimal();
    assert_eq!(
        Money::parse_decimal(&text, m.currency()),
        Ok(m),
        "{m:?} formatted as {text:?}"
    );
    assert_eq!(
        Money::parse_decimal(&text, m.currency()).map(Money::to_decimal),
        Ok(text.clone())
    );
    let exp = m.currency().exponent() as usize;
    let canonical = match text.split_once('.') {
        Some((int, frac)) => frac.len() == exp && (int == "0" || !int.starts_with('0')),
        None => exp == 0 && (text == "0" || !text.starts_with('0')),
    };
    assert!(canonical, "{m:?} formatted as {text:?}");
    let json = serde_json::to_string(&m).unwrap_or_default();
    assert_eq!(serde_json::from_str::<Money>(&json).ok(), Some(m), "{json}");
}

/// The minor units `s` stands for when it is a plain decimal (`digits[.digits]`) with at most `exp`
/// decimals that fits `Money::MAX_MINOR`.
fn reference_minor(s: &str, exp: u32) -> Option<u64> {
    let (int, frac) = match s.split_once('.') {
        Some((i, f)) => (i, f),
        None => (s, ""),
    };
    let digits = |p: &str| p.bytes().all(|b| b.is_ascii_digit());
    if int.is_empty() || !digits(int) || !digits(frac) || s.ends_with('.') {
        return None;
    }
    if frac.len() > exp as usize {
        return None;
    }
    let mut v: u128 = 0;
    for b in int.bytes().chain(frac.bytes()) {
        v = v.checked_mul(10)?.checked_add(u128::from(b - b'0'))?;
    }
    for _ in frac.len()..exp as usize {
        v = v.checked_mul(10)?;
    }
    u64::try_from(v).ok().filter(|v| *v <= Money::MAX_MINOR)
}
