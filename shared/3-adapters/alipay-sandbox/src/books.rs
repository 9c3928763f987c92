//! The sandbox's books and Alipay's rules over them: at most two QR codes per store, trades on codes,
//! refunds whose sum stays within the payment, one result per `partner_refund_id`. No I/O.

use std::collections::HashMap;

use vendpay_alipay::QrCodeStatus;
use vendpay_domain::{Currency, Money, Timestamp};

/// An Alipay error code the gateway answers with.
pub type Code = &'static str;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QrInput {
    pub store_id: String,
    pub store_name: String,
    pub notify_url: String,
    pub trans_currency: Currency,
    pub currency: Currency,
    /// `passback_parameters` re-serialised as compact JSON.
    pub passback: Option<String>,
    /// The whole `biz_data`, normalised, to tell a repeat from a different request.
    pub biz_key: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QrRecord {
    pub qrcode: String,
    pub img_url: String,
    pub input: QrInput,
    pub status: Option<QrCodeStatus>,
}

impl QrRecord {
    fn accepts_payments(&self) -> bool {
        !matches!(
            self.status,
            Some(QrCodeStatus::Stop) | Some(QrCodeStatus::Delete)
        )
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Trade {
    pub trade_no: String,
    pub out_trade_no: String,
    pub qrcode: String,
    pub amount: Money,
    pub refunded: Money,
    pub buyer_id: Option<String>,
    pub paid_at: Timestamp,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RefundRecord {
    pub trade_no: String,
    pub out_trade_no: String,
    pub amount: Money,
}

/// What a refund request did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RefundResult {
    Done(RefundRecord),
    /// The same id and amount again: the first refund, unchanged.
    Repeat(RefundRecord),
}

#[derive(Debug, Default)]
pub struct Books {
    qrcodes: HashMap<String, QrRecord>,
    by_store: HashMap<String, Vec<String>>,
    trades: HashMap<String, Trade>,
    by_out: HashMap<String, String>,
    refunds: HashMap<String, RefundRecord>,
    seq: u64,
}

impl Books {
    /// Numbers trades and QR codes from `first` on. The sandbox starts from its clock, so a restarted
    /// sandbox (its trades journalled and imported again) never hands out a trade number twice — real
    /// Alipay trade numbers are unique forever, and vendpay's dedupe relies on it.
    pub fn numbered_from(first: u64) -> Books {
        Books {
            seq: first,
            ..Books::default()
        }
    }

    fn next(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    /// Same store and same request: the same code. A different request for a store with fewer than two
    /// codes: a new one. Otherwise Alipay hands back an existing code.
    pub fn create_qr(&mut self, input: QrInput, base_url: &str) -> QrRecord {
        let codes = self
            .by_store
            .get(&input.store_id)
            .cloned()
            .unwrap_or_default();
        let existing: Vec<&QrRecord> = codes.iter().filter_map(|c| self.qrcodes.get(c)).collect();
        if let Some(same) = existing.iter().find(|r| r.input.biz_key == input.biz_key) {
            return (*same).clone();
        }
        if existing.len() >= 2 {
            if let Some(last) = existing.last() {
                return (*last).clone();
            }
        }
        let n = self.next();
        let qrcode = format!("https://qr.alipay.com/sbx{n:08}");
        let record = QrRecord {
            img_url: format!("{base_url}/sandbox/qr/sbx{n:08}.png"),
            qrcode: qrcode.clone(),
            input: input.clone(),
            status: None,
        };
        self.qrcodes.insert(qrcode.clone(), record.clone());
        self.by_store
            .entry(input.store_id)
            .or_default()
            .push(qrcode);
        record
    }

    pub fn qr(&self, qrcode: &str) -> Option<&QrRecord> {
        self.qrcodes.get(qrcode)
    }

    pub fn modify_qr(&mut self, qrcode: &str, input: QrInput) -> Result<QrRecord, Code> {
        let r = self.qrcodes.get_mut(qrcode).ok_or("QRCODE_NOT_EXIST")?;
        if r.input.store_id != input.store_id {
            return Err("ILLEGAL_ARGUMENT");
        }
        r.input = input;
        Ok(r.clone())
    }

    pub fn set_status(&mut self, qrcode: &str, status: QrCodeStatus) -> Result<QrRecord, Code> {
        let r = self.qrcodes.get_mut(qrcode).ok_or("QRCODE_NOT_EXIST")?;
        if r.status == Some(QrCodeStatus::Delete) {
            return Err("QRCODE_NOT_EXIST");
        }
        r.status = Some(status);
        Ok(r.clone())
    }

    pub fn pay(
        &mut self,
        qrcode: &str,
        amount: Money,
        buyer_id: Option<String>,
        now: Timestamp,
    ) -> Result<Trade, Code> {
        let qr = self.qrcodes.get(qrcode).ok_or("QRCODE_NOT_EXIST")?;
        if !qr.accepts_payments() {
            return Err("QRCODE_STOPPED");
        }
        if amount.is_zero() {
            return Err("ILLEGAL_ARGUMENT");
        }
        let n = self.next();
        let trade = Trade {
            trade_no: format!("2024{n:012}"),
            out_trade_no: format!("SBX{n:010}"),
            qrcode: qrcode.to_owned(),
            amount,
            refunded: Money::zero(amount.currency()),
            buyer_id,
            paid_at: now,
        };
        self.by_out
            .insert(trade.out_trade_no.clone(), trade.trade_no.clone());
        self.trades.insert(trade.trade_no.clone(), trade.clone());
        Ok(trade)
    }

    /// Records a trade paid outside the sandbox (a committed fixture), so its refunds can be tested.
    /// The same trade number again is refused.
    pub fn import(&mut self, trade: Trade) -> Result<(), Code> {
        if self.trades.contains_key(&trade.trade_no)
            || self.by_out.contains_key(&trade.out_trade_no)
        {
            return Err("TRADE_EXISTS");
        }
        self.by_out
            .insert(trade.out_trade_no.clone(), trade.trade_no.clone());
        self.trades.insert(trade.trade_no.clone(), trade);
        Ok(())
    }

    pub fn trade(&self, trade_no: &str) -> Option<&Trade> {
        self.trades.get(trade_no)
    }

    pub fn find_trade(
        &self,
        partner_trans_id: Option<&str>,
        alipay_trans_id: Option<&str>,
    ) -> Result<&Trade, Code> {
        let by_out = partner_trans_id.map(|p| self.by_out.get(p).and_then(|t| self.trades.get(t)));
        let by_no = alipay_trans_id.map(|a| self.trades.get(a));
        match (by_out, by_no) {
            (Some(Some(a)), Some(Some(b))) if a.trade_no == b.trade_no => Ok(a),
            (Some(Some(t)), None) | (None, Some(Some(t))) => Ok(t),
            _ => Err("TRADE_NOT_EXIST"),
        }
    }

    pub fn refund(
        &mut self,
        partner_trans_id: &str,
        alipay_trans_id: Option<&str>,
        partner_refund_id: &str,
        amount: Money,
    ) -> Result<RefundResult, (Code, Option<Money>)> {
        let trade = self
            .find_trade(Some(partner_trans_id), alipay_trans_id)
            .map_err(|_| ("PURCHASE_TRADE_NOT_EXIST", None))?
            .clone();
        if let Some(r) = self.refunds.get(partner_refund_id) {
            if r.amount == amount && r.trade_no == trade.trade_no {
                return Ok(RefundResult::Repeat(r.clone()));
            }
            return Err(("REPEATED_REFUNDMENT_REQUEST", Some(r.amount)));
        }
        if amount.currency() != trade.amount.currency() {
            return Err(("CURRENCY_NOT_SAME", None));
        }
        if amount.is_zero() {
            return Err(("ILLEGAL_ARGUMENT", None));
        }
        let refunded = trade
            .refunded
            .checked_add(amount)
            .map_err(|_| ("RETURN_AMOUNT_EXCEED", None))?;
        if refunded.minor() > trade.amount.minor() {
            return Err(("RETURN_AMOUNT_EXCEED", None));
        }
        if let Some(t) = self.trades.get_mut(&trade.trade_no) {
            t.refunded = refunded;
        }
        let record = RefundRecord {
            trade_no: trade.trade_no,
            out_trade_no: trade.out_trade_no,
            amount,
        };
        self.refunds
            .insert(partner_refund_id.to_owned(), record.clone());
        Ok(RefundResult::Done(record))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(store: &str, biz: &str) -> QrInput {
        QrInput {
            store_id: store.into(),
            store_name: "s".into(),
            notify_url: "http://x/n".into(),
            trans_currency: Currency::Cny,
            currency: Currency::Cny,
            passback: None,
            biz_key: biz.into(),
        }
    }

    fn cny(minor: u64) -> Money {
        Money::new(minor, Currency::Cny).unwrap()
    }

    #[test]
    fn at_most_two_codes_per_store_and_the_same_code_on_repeat() {
        let mut l = Books::default();
        let a = l.create_qr(input("vm-1", "a"), "http://sb");
        assert_eq!(
            l.create_qr(input("vm-1", "a"), "http://sb").qrcode,
            a.qrcode
        );
        let b = l.create_qr(input("vm-1", "b"), "http://sb");
        assert_ne!(a.qrcode, b.qrcode);
        let c = l.create_qr(input("vm-1", "c"), "http://sb");
        assert!(c.qrcode == a.qrcode || c.qrcode == b.qrcode);
        let other = l.create_qr(input("vm-2", "a"), "http://sb");
        assert_ne!(other.qrcode, a.qrcode);
    }

    #[test]
    fn refunds_stay_within_the_payment_and_ids_are_idempotent() {
        let mut l = Books::default();
        let qr = l.create_qr(input("vm-1", "a"), "http://sb").qrcode;
        let t = l
            .pay(&qr, cny(500), None, Timestamp::from_millis(0))
            .unwrap();
        assert!(matches!(
            l.refund(&t.out_trade_no, Some(&t.trade_no), "r1", cny(300)),
            Ok(RefundResult::Done(_))
        ));
        assert!(matches!(
            l.refund(&t.out_trade_no, None, "r1", cny(300)),
            Ok(RefundResult::Repeat(_))
        ));
        assert_eq!(
            l.refund(&t.out_trade_no, None, "r1", cny(100)),
            Err(("REPEATED_REFUNDMENT_REQUEST", Some(cny(300))))
        );
        assert_eq!(
            l.refund(&t.out_trade_no, None, "r2", cny(201)),
            Err(("RETURN_AMOUNT_EXCEED", None))
        );
        assert!(matches!(
            l.refund(&t.out_trade_no, None, "r2", cny(200)),
            Ok(RefundResult::Done(_))
        ));
        assert_eq!(
            l.refund(
                &t.out_trade_no,
                None,
                "r3",
                Money::new(1, Currency::Usd).unwrap()
            ),
            Err(("CURRENCY_NOT_SAME", None))
        );
        assert_eq!(
            l.refund("nope", None, "r4", cny(1)),
            Err(("PURCHASE_TRADE_NOT_EXIST", None))
        );
        assert_eq!(
            l.refund(&t.out_trade_no, Some("other"), "r4", cny(1)),
            Err(("PURCHASE_TRADE_NOT_EXIST", None))
        );
    }

    #[test]
    fn stopped_codes_take_no_payments() {
        let mut l = Books::default();
        let qr = l.create_qr(input("vm-1", "a"), "http://sb").qrcode;
        l.set_status(&qr, QrCodeStatus::Stop).unwrap();
        assert_eq!(
            l.pay(&qr, cny(1), None, Timestamp::from_millis(0)),
            Err("QRCODE_STOPPED")
        );
        l.set_status(&qr, QrCodeStatus::Restart).unwrap();
        assert!(l.pay(&qr, cny(1), None, Timestamp::from_millis(0)).is_ok());
    }
}
