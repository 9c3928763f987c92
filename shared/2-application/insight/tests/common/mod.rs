//! Hand-made facts for the section tests: terse constructors, times as wall clock at +08:00.

#![allow(dead_code)]

use vendpay_domain::facts::{BuyerHistory, BuyerKey, Fact, FactKind, Flow};
use vendpay_domain::{Currency, DeviceId, SessionId, Sku, Slot, Timestamp};
use vendpay_insight::Period;

pub const TZ: i64 = 8 * 3600;

/// `"2026-11-03 10:15"` at +08:00.
pub fn at(s: &str) -> Timestamp {
    let n = |r: std::ops::Range<usize>| s[r].parse::<u32>().unwrap();
    Timestamp::from_civil(
        (
            i64::from(n(0..4)),
            n(5..7),
            n(8..10),
            n(11..13),
            n(14..16),
            0,
        ),
        TZ,
    )
    .unwrap_or_else(|| panic!("bad time {s}"))
}

pub fn november() -> Period {
    Period::parse("2026-11-01", "2026-11-30", "+08:00").unwrap()
}

pub fn key(n: u32) -> BuyerKey {
    BuyerKey::parse(&format!("{n:016x}")).unwrap()
}

pub fn fact(kind: FactKind, id: &str, when: &str, device: &str, session: &str) -> Fact {
    Fact {
        id: id.to_owned(),
        kind,
        at: at(when),
        device: DeviceId::parse(device).unwrap(),
        district: "Xuhui".to_owned(),
        location: None,
        session: SessionId::parse(session).unwrap(),
        flow: Flow::PayFirst,
        buyer_key: None,
        currency: Currency::Cny,
        amount: 0,
        trade_no: None,
        request_id: None,
        refund_id: None,
        slot: None,
        sku: None,
        product: None,
        stock_after: None,
        reason: None,
        status: None,
    }
}

pub fn pay(id: &str, when: &str, device: &str, session: &str, amount: u64) -> Fact {
    Fact {
        amount,
        ..fact(
            FactKind::Payment,
            &format!("payment:{id}"),
            when,
            device,
            session,
        )
    }
}

/// A sale from slot A1, no sku.
pub fn sale(id: &str, when: &str, device: &str, session: &str, amount: u64) -> Fact {
    Fact {
        amount,
        slot: Some(Slot::parse("A1").unwrap()),
        ..fact(FactKind::Sale, &format!("sale:{id}"), when, device, session)
    }
}

pub fn refund(
    id: &str,
    status: &str,
    when: &str,
    device: &str,
    session: &str,
    amount: u64,
) -> Fact {
    Fact {
        amount,
        status: Some(status.to_owned()),
        reason: Some("remainder".to_owned()),
        ..fact(
            FactKind::Refund,
            &format!("refund:{id}:{status}"),
            when,
            device,
            session,
        )
    }
}

pub fn anomaly(id: &str, kind: &str, when: &str, device: &str) -> Fact {
    Fact {
        reason: Some(kind.to_owned()),
        ..fact(
            FactKind::Anomaly,
            &format!("anomaly:{id}"),
            when,
            device,
            "s0",
        )
    }
}

pub trait FactExt: Sized {
    fn district(self, d: &str) -> Self;
    fn currency(self, c: Currency) -> Self;
    fn flow(self, f: Flow) -> Self;
    fn buyer(self, n: u32) -> Self;
    fn sku(self, sku: &str, product: Option<&str>) -> Self;
    fn slot(self, slot: &str) -> Self;
    fn stock(self, n: u32) -> Self;
    fn reason(self, r: &str) -> Self;
    fn location(self, l: &str) -> Self;
}

impl FactExt for Fact {
    fn district(self, d: &str) -> Fact {
        Fact {
            district: d.to_owned(),
            ..self
        }
    }
    fn currency(self, c: Currency) -> Fact {
        Fact {
            currency: c,
            ..self
        }
    }
    fn flow(self, f: Flow) -> Fact {
        Fact { flow: f, ..self }
    }
    fn buyer(self, n: u32) -> Fact {
        Fact {
            buyer_key: Some(key(n)),
            ..self
        }
    }
    fn sku(self, sku: &str, product: Option<&str>) -> Fact {
        Fact {
            sku: Some(Sku::parse(sku).unwrap()),
            product: product.map(str::to_owned),
            ..self
        }
    }
    fn slot(self, slot: &str) -> Fact {
        Fact {
            slot: Some(Slot::parse(slot).unwrap()),
            ..self
        }
    }
    fn stock(self, n: u32) -> Fact {
        Fact {
            stock_after: Some(n),
            ..self
        }
    }
    fn reason(self, r: &str) -> Fact {
        Fact {
            reason: Some(r.to_owned()),
            ..self
        }
    }
    fn location(self, l: &str) -> Fact {
        Fact {
            location: Some(l.to_owned()),
            ..self
        }
    }
}

pub fn history(n: u32, first: &str, last: &str, district: &str) -> BuyerHistory {
    BuyerHistory {
        buyer_key: key(n),
        first_sale: at(first),
        last_sale: at(last),
        last_district: district.to_owned(),
    }
}
