//! Builders for domain values in tests. Every literal they take is a test's own, so a bad one panics.

use std::fmt::Debug;
use std::str::FromStr;

use vendpay_domain::{Currency, IncomingPayment, Money, Timestamp};

/// The clock origin of every test: 2023-11-14T22:13:20Z, in milliseconds.
pub const T0: i64 = 1_700_000_000_000;

/// `secs` seconds after [`T0`].
pub fn at(secs: i64) -> Timestamp {
    Timestamp::from_millis(T0 + secs * 1000)
}

/// `minor` fen.
pub fn cny(minor: u64) -> Money {
    Money::new(minor, Currency::Cny).expect("an amount a test names is valid")
}

/// Any id type of the domain, parsed from a test's literal.
pub fn id<T: FromStr>(s: &str) -> T
where
    T::Err: Debug,
{
    s.parse().expect("an id a test names is valid")
}

/// Alipay trade `trade` (merchant trade `M<trade>`) of `amount`, by `buyer`, paid at `paid_at`.
pub fn payment_of(
    trade: &str,
    amount: Money,
    buyer: Option<&str>,
    paid_at: Timestamp,
) -> IncomingPayment {
    IncomingPayment {
        trade_no: id(trade),
        merchant_trade_no: id(&format!("M{trade}")),
        amount,
        buyer_id: buyer.map(id),
        paid_at,
    }
}

/// Trade `trade` of `minor` fen, anonymous, paid at [`T0`].
pub fn payment(trade: &str, minor: u64) -> IncomingPayment {
    payment_of(trade, cny(minor), None, Timestamp::from_millis(T0))
}
