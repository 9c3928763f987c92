//! Property tests: Alipay amount strings round-trip, and refunds split across payments newest first.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code asserts by panicking

mod common;

use common::*;
use proptest::prelude::*;
use vendpay_domain::*;

fn currency() -> impl Strategy<Value = Currency> {
    proptest::sample::select(Currency::ALL.to_vec())
}

proptest! {
    #[test]
    fn formatting_then_parsing_gives_the_same_money(minor in 0u64..=Money::MAX_MINOR, c in currency()) {
        let m = Money::new(minor, c).expect("in range");
        let s = m.to_decimal();
        prop_assert_eq!(Money::parse_decimal(&s, c), Ok(m));
        // Alipay's form: exactly the currency's number of decimals.
        let decimals = s.split_once('.').map_or(0, |(_, f)| f.len());
        prop_assert_eq!(decimals as u32, c.exponent());
    }

    #[test]
    fn parsing_then_formatting_is_canonical(int in 0u64..10_000_000, frac in 0u64..100, c in currency()) {
        let s = if c.exponent() == 0 { int.to_string() } else { format!("{int}.{frac:02}") };
        let m = Money::parse_decimal(&s, c).expect("valid");
        prop_assert_eq!(m.to_decimal(), s);
    }

    #[test]
    fn anything_with_an_extra_character_is_refused(minor in 0u64..1_000_000, c in currency(), extra in "[ +\\-eE,x_]") {
        let s = Money::new(minor, c).expect("small").to_decimal();
        let before = format!("{extra}{s}");
        let after = format!("{s}{extra}");
        prop_assert!(Money::parse_decimal(&before, c).is_err(), "{} parsed", before);
        prop_assert!(Money::parse_decimal(&after, c).is_err(), "{} parsed", after);
    }

    #[test]
    fn too_many_decimals_are_refused(minor in 0u64..1_000_000, c in currency(), digit in 0u8..10) {
        let s = Money::new(minor, c).expect("small").to_decimal();
        let longer = if c.exponent() == 0 { format!("{s}.{digit}") } else { format!("{s}{digit}") };
        let refused = matches!(
            Money::parse_decimal(&longer, c),
            Err(MoneyError::TooManyDecimals { .. })
        );
        prop_assert!(refused, "{} parsed", longer);
    }

    #[test]
    fn refunds_split_newest_first(
        amounts in proptest::collection::vec(1u64..5_000, 1..6),
        spend_permille in 0u64..=1000,
    ) {
        let mut m = TestMachine::new(Mode::PayFirst);
        let mut session = None;
        for (i, a) in amounts.iter().enumerate() {
            let t = m.pay(&payment(&format!("T{i}"), cny(*a), None, i as i64), i as i64);
            session = Some(outcome(&t).session);
        }
        let session = session.expect("paid");
        let total: u64 = amounts.iter().sum();
        let spend = total * spend_permille / 1000;
        if spend > 0 {
            prop_assert!(purchase(&m.buy("r1", spend, 10)).approved());
            m.vend(&session, "r1", true, 11);
        }
        let left = total - spend;
        let t = m.end(12);
        let parts = refunds(&t);
        prop_assert_eq!(parts.iter().map(|(_, a)| a).sum::<u64>(), left);

        // Expected: walk the payments from the newest, each giving at most its own amount.
        let mut want = Vec::new();
        let mut rest = left;
        for (i, a) in amounts.iter().enumerate().rev() {
            if rest == 0 { break; }
            let part = rest.min(*a);
            want.push((format!("T{i}"), part));
            rest -= part;
        }
        prop_assert_eq!(parts, want);
        for r in &m.session(&session).refunds {
            let paid = amounts[r.trade_no.as_str()[1..].parse::<usize>().expect("index")];
            prop_assert!(r.amount.minor() <= paid);
            prop_assert!(r.amount.minor() > 0);
        }
    }

    #[test]
    fn refunds_of_one_trade_never_exceed_it(
        amount in 2u64..5_000,
        holds in proptest::collection::vec((1u64..500, any::<bool>()), 0..5),
    ) {
        // End early, then let held purchases fail one by one: each failure refunds its hold from the
        // same trade under a new id; the sum never exceeds the payment.
        let mut m = TestMachine::new(Mode::PayFirst);
        let s = outcome(&m.pay(&payment("T1", cny(amount), None, 0), 0)).session;
        let mut approved = Vec::new();
        for (i, (price, fails)) in holds.iter().enumerate() {
            let id = format!("r{i}");
            if purchase(&m.buy(&id, *price, 1)).approved() {
                approved.push((id, *fails));
            }
        }
        m.end(2);
        for (id, fails) in &approved {
            m.vend(&s, id, !fails, 3);
        }
        let session = m.session(&s);
        let refunded: u64 = session.refunds.iter().map(|r| r.amount.minor()).sum();
        prop_assert!(refunded <= amount);
        prop_assert_eq!(refunded + session.spent.minor(), amount);
        let ids: std::collections::HashSet<_> = session.refunds.iter().map(|r| r.id.clone()).collect();
        prop_assert_eq!(ids.len(), session.refunds.len());
    }
}
