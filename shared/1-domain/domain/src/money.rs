//! Money: an integer count of minor units in one ISO 4217 currency.
//!
//! Alipay speaks decimal strings in major units (`10.50`, JPY `1050`); those strings are parsed and
//! formatted here and nowhere else. Every arithmetic operation is checked: a currency mix or an overflow
//! is an error, never a wrapped number.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The currencies Alipay's merchant QR code accepts, with their ISO 4217 exponent (see
/// `docs/contract.md`, “Money JSON”).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Currency {
    Aud,
    Cad,
    Chf,
    Cny,
    Dkk,
    Eur,
    Gbp,
    Hkd,
    Jpy,
    Krw,
    Lkr,
    Myr,
    Nok,
    Nzd,
    Sek,
    Sgd,
    Thb,
    Usd,
}

impl Currency {
    pub const ALL: [Currency; 18] = [
        Currency::Aud,
        Currency::Cad,
        Currency::Chf,
        Currency::Cny,
        Currency::Dkk,
        Currency::Eur,
        Currency::Gbp,
        Currency::Hkd,
        Currency::Jpy,
        Currency::Krw,
        Currency::Lkr,
        Currency::Myr,
        Currency::Nok,
        Currency::Nzd,
        Currency::Sek,
        Currency::Sgd,
        Currency::Thb,
        Currency::Usd,
    ];

    pub fn code(self) -> &'static str {
        match self {
            Currency::Aud => "AUD",
            Currency::Cad => "CAD",
            Currency::Chf => "CHF",
            Currency::Cny => "CNY",
            Currency::Dkk => "DKK",
            Currency::Eur => "EUR",
            Currency::Gbp => "GBP",
            Currency::Hkd => "HKD",
            Currency::Jpy => "JPY",
            Currency::Krw => "KRW",
            Currency::Lkr => "LKR",
            Currency::Myr => "MYR",
            Currency::Nok => "NOK",
            Currency::Nzd => "NZD",
            Currency::Sek => "SEK",
            Currency::Sgd => "SGD",
            Currency::Thb => "THB",
            Currency::Usd => "USD",
        }
    }

    /// Number of decimal places of the currency's major unit.
    pub fn exponent(self) -> u32 {
        match self {
            Currency::Jpy | Currency::Krw => 0,
            _ => 2,
        }
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unsupported currency {0:?}: expected an upper-case ISO 4217 code Alipay accepts (CNY, USD, JPY, ...)")]
pub struct UnknownCurrency(pub String);

impl FromStr for Currency {
    type Err = UnknownCurrency;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Currency::ALL
            .iter()
            .copied()
            .find(|c| c.code() == s)
            .ok_or_else(|| UnknownCurrency(s.to_owned()))
    }
}

impl TryFrom<String> for Currency {
    type Error = UnknownCurrency;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<Currency> for String {
    fn from(c: Currency) -> String {
        c.code().to_owned()
    }
}

/// Why a decimal string or an arithmetic operation was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    #[error("amount is empty")]
    Empty,
    #[error("amount {0:?} contains white space")]
    Blank(String),
    #[error("amount {0:?} has a sign; Alipay amounts are unsigned decimals")]
    Signed(String),
    #[error("amount {0:?} uses an exponent; write it as a plain decimal")]
    Exponent(String),
    #[error("amount {0:?} is not a decimal number (digits with at most one '.')")]
    NotDecimal(String),
    #[error("amount {amount:?} has {decimals} decimals but {currency} has {allowed}")]
    TooManyDecimals {
        amount: String,
        currency: Currency,
        decimals: usize,
        allowed: u32,
    },
    #[error("amount {0:?} is too large")]
    Overflow(String),
    #[error("cannot combine {left} with {right}")]
    CurrencyMismatch { left: Currency, right: Currency },
    #[error("arithmetic overflow on {0}")]
    ArithmeticOverflow(Currency),
    #[error("{minuend} minus {subtrahend} would be negative")]
    Negative { minuend: Money, subtrahend: Money },
}

/// A non-negative amount of money: `minor` units of `currency` (cents for CNY, yen for JPY).
///
/// The largest amount is `i64::MAX` minor units so that every store (SQLite integers, DynamoDB numbers)
/// can hold it exactly.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "MoneyRepr", into = "MoneyRepr")]
pub struct Money {
    minor: u64,
    currency: Currency,
}

/// The JSON form of the HTTP contract: `{"minor": 350, "currency": "CNY"}`.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct MoneyRepr {
    // i64, not i128: serde's buffered content (internally tagged enums) cannot carry i128.
    minor: i64,
    currency: Currency,
}

impl TryFrom<MoneyRepr> for Money {
    type Error = String;
    fn try_from(r: MoneyRepr) -> Result<Self, Self::Error> {
        if r.minor < 0 {
            return Err(format!("minor must not be negative, got {}", r.minor));
        }
        u64::try_from(r.minor)
            .ok()
            .and_then(|m| Money::new(m, r.currency))
            .ok_or_else(|| format!("minor {} is out of range", r.minor))
    }
}

impl From<Money> for MoneyRepr {
    fn from(m: Money) -> Self {
        MoneyRepr {
            // MAX_MINOR is i64::MAX, so this never saturates.
            minor: i64::try_from(m.minor).unwrap_or(i64::MAX),
            currency: m.currency,
        }
    }
}

impl Money {
    pub const MAX_MINOR: u64 = i64::MAX as u64;

    /// `None` when `minor` exceeds [`Money::MAX_MINOR`].
    pub fn new(minor: u64, currency: Currency) -> Option<Money> {
        (minor <= Self::MAX_MINOR).then_some(Money { minor, currency })
    }

    pub fn zero(currency: Currency) -> Money {
        Money { minor: 0, currency }
    }

    pub fn minor(self) -> u64 {
        self.minor
    }

    pub fn currency(self) -> Currency {
        self.currency
    }

    pub fn is_zero(self) -> bool {
        self.minor == 0
    }

    /// Parses Alipay's decimal major-unit form: digits, optionally `.` and at most as many decimals as the
    /// currency has. Nothing else is accepted: no sign, exponent, blank, grouping or trailing dot.
    pub fn parse_decimal(s: &str, currency: Currency) -> Result<Money, MoneyError> {
        if s.is_empty() {
            return Err(MoneyError::Empty);
        }
        if s.chars().any(char::is_whitespace) {
            return Err(MoneyError::Blank(s.to_owned()));
        }
        if s.starts_with(['+', '-']) {
            return Err(MoneyError::Signed(s.to_owned()));
        }
        if s.contains(['e', 'E']) {
            return Err(MoneyError::Exponent(s.to_owned()));
        }
        let (int, frac) = match s.split_once('.') {
            Some((int, frac)) => (int, Some(frac)),
            None => (s, None),
        };
        let all_digits = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
        if !all_digits(int) || !frac.is_none_or(all_digits) {
            return Err(MoneyError::NotDecimal(s.to_owned()));
        }
        let frac = frac.unwrap_or("");
        let allowed = currency.exponent();
        if frac.len() > allowed as usize {
            return Err(MoneyError::TooManyDecimals {
                amount: s.to_owned(),
                currency,
                decimals: frac.len(),
                allowed,
            });
        }
        let overflow = || MoneyError::Overflow(s.to_owned());
        let mut minor: u64 = 0;
        for b in int.bytes().chain(frac.bytes()) {
            minor = minor
                .checked_mul(10)
                .and_then(|m| m.checked_add(u64::from(b - b'0')))
                .ok_or_else(overflow)?;
        }
        // Scale up when fewer decimals were written than the currency has ("10.5" CNY = 1050).
        for _ in frac.len()..allowed as usize {
            minor = minor.checked_mul(10).ok_or_else(overflow)?;
        }
        Money::new(minor, currency).ok_or_else(overflow)
    }

    /// Alipay's form: `10.50` for two-decimal currencies, `1050` for JPY/KRW.
    pub fn to_decimal(self) -> String {
        let exp = self.currency.exponent();
        if exp == 0 {
            return self.minor.to_string();
        }
        let scale = 10u64.pow(exp);
        format!(
            "{}.{:0width$}",
            self.minor / scale,
            self.minor % scale,
            width = exp as usize
        )
    }

    fn same_currency(self, other: Money) -> Result<(), MoneyError> {
        if self.currency == other.currency {
            Ok(())
        } else {
            Err(MoneyError::CurrencyMismatch {
                left: self.currency,
                right: other.currency,
            })
        }
    }

    pub fn checked_add(self, other: Money) -> Result<Money, MoneyError> {
        self.same_currency(other)?;
        self.minor
            .checked_add(other.minor)
            .and_then(|m| Money::new(m, self.currency))
            .ok_or(MoneyError::ArithmeticOverflow(self.currency))
    }

    /// Subtraction that refuses to go below zero.
    pub fn checked_sub(self, other: Money) -> Result<Money, MoneyError> {
        self.same_currency(other)?;
        self.minor
            .checked_sub(other.minor)
            .map(|minor| Money {
                minor,
                currency: self.currency,
            })
            .ok_or(MoneyError::Negative {
                minuend: self,
                subtrahend: other,
            })
    }

    /// The smaller of two amounts of the same currency.
    pub fn min(self, other: Money) -> Result<Money, MoneyError> {
        self.same_currency(other)?;
        Ok(if other.minor < self.minor {
            other
        } else {
            self
        })
    }

    /// Sum of amounts in `currency`; an item in another currency is an error.
    pub fn sum<I: IntoIterator<Item = Money>>(
        currency: Currency,
        items: I,
    ) -> Result<Money, MoneyError> {
        items
            .into_iter()
            .try_fold(Money::zero(currency), |acc, m| acc.checked_add(m))
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.to_decimal(), self.currency)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cny(s: &str) -> Result<Money, MoneyError> {
        Money::parse_decimal(s, Currency::Cny)
    }

    #[test]
    fn parses_alipay_amounts() {
        assert_eq!(cny("10.50").map(Money::minor), Ok(1050));
        assert_eq!(cny("10.5").map(Money::minor), Ok(1050));
        assert_eq!(cny("10").map(Money::minor), Ok(1000));
        assert_eq!(cny("0.01").map(Money::minor), Ok(1));
        assert_eq!(cny("007.00").map(Money::minor), Ok(700));
        assert_eq!(
            Money::parse_decimal("1050", Currency::Jpy).map(Money::minor),
            Ok(1050)
        );
    }

    #[test]
    fn refuses_everything_else_precisely() {
        assert_eq!(cny(""), Err(MoneyError::Empty));
        assert!(matches!(cny(" 1.00"), Err(MoneyError::Blank(_))));
        assert!(matches!(cny("1.00\n"), Err(MoneyError::Blank(_))));
        assert!(matches!(cny("-1.00"), Err(MoneyError::Signed(_))));
        assert!(matches!(cny("+1.00"), Err(MoneyError::Signed(_))));
        assert!(matches!(cny("1e3"), Err(MoneyError::Exponent(_))));
        assert!(matches!(cny("1.5E2"), Err(MoneyError::Exponent(_))));
        for bad in ["1.", ".5", "1.2.3", "1,00", "abc", "１", "0x10", "1_000"] {
            assert!(
                matches!(cny(bad), Err(MoneyError::NotDecimal(_))),
                "{bad:?} gave {:?}",
                cny(bad)
            );
        }
        assert!(matches!(
            cny("100.999"),
            Err(MoneyError::TooManyDecimals {
                decimals: 3,
                allowed: 2,
                ..
            })
        ));
        assert!(matches!(
            Money::parse_decimal("1050.0", Currency::Jpy),
            Err(MoneyError::TooManyDecimals {
                decimals: 1,
                allowed: 0,
                ..
            })
        ));
        assert!(matches!(
            cny("99999999999999999999"),
            Err(MoneyError::Overflow(_))
        ));
        // Fits in u64 but not in i64 once scaled.
        assert!(matches!(
            cny("92233720368547758.08"),
            Err(MoneyError::Overflow(_))
        ));
        assert_eq!(
            cny("92233720368547758.07").map(Money::minor),
            Ok(Money::MAX_MINOR)
        );
    }

    #[test]
    fn formats_alipay_form() {
        let m = |minor, c| Money::new(minor, c).map(Money::to_decimal);
        assert_eq!(m(1050, Currency::Cny).as_deref(), Some("10.50"));
        assert_eq!(m(1, Currency::Usd).as_deref(), Some("0.01"));
        assert_eq!(m(0, Currency::Eur).as_deref(), Some("0.00"));
        assert_eq!(m(1050, Currency::Jpy).as_deref(), Some("1050"));
        assert_eq!(m(7, Currency::Krw).as_deref(), Some("7"));
    }

    #[test]
    fn arithmetic_is_checked() {
        let a = Money::new(5, Currency::Cny).ok_or("a").unwrap();
        let b = Money::new(7, Currency::Cny).ok_or("b").unwrap();
        let y = Money::new(7, Currency::Jpy).ok_or("y").unwrap();
        let max = Money::new(Money::MAX_MINOR, Currency::Cny)
            .ok_or("max")
            .unwrap();
        assert_eq!(a.checked_add(b).map(Money::minor), Ok(12));
        assert!(matches!(a.checked_sub(b), Err(MoneyError::Negative { .. })));
        assert!(matches!(
            a.checked_add(y),
            Err(MoneyError::CurrencyMismatch { .. })
        ));
        assert_eq!(
            max.checked_add(a),
            Err(MoneyError::ArithmeticOverflow(Currency::Cny))
        );
        assert_eq!(Money::new(Money::MAX_MINOR + 1, Currency::Cny), None);
    }

    #[test]
    fn json_shape_is_the_contract() {
        let m = Money::new(350, Currency::Cny).ok_or("m").unwrap();
        assert_eq!(
            serde_json::to_string(&m).unwrap(),
            r#"{"minor":350,"currency":"CNY"}"#
        );
        let back: Money = serde_json::from_str(r#"{"minor":350,"currency":"CNY"}"#).unwrap();
        assert_eq!(back, m);
        for bad in [
            r#"{"minor":-1,"currency":"CNY"}"#,
            r#"{"minor":1.5,"currency":"CNY"}"#,
            r#"{"minor":1,"currency":"cny"}"#,
            r#"{"minor":1,"currency":"XXX"}"#,
            r#"{"minor":"1","currency":"CNY"}"#,
            r#"{"minor":9223372036854775808,"currency":"CNY"}"#,
            r#"{"minor":1}"#,
            r#"{"minor":1,"currency":"CNY","x":1}"#,
        ] {
            assert!(serde_json::from_str::<Money>(bad).is_err(), "{bad} parsed");
        }
    }
}
