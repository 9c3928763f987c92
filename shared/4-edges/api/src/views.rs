//! The JSON shapes of the contract (see `docs/contract.md`): what machines and operators see. Times
//! are RFC 3339, amounts are `{"minor", "currency"}` objects.

use serde_json::{json, Map, Value};
use vendpay_app::inventory::{InventoryLine, MachineInventory, RestockingRound, RoundMachine};
use vendpay_app::DeviceRecord;
use vendpay_domain::{
    Anomaly, AnomalyKind, Money, OrderStatus, PaymentRecord, Phase, Product, Purchase,
    PurchaseAnswer, PurchaseStatus, Refund, RefundReason, RefundStatus, Session, SessionKind,
    Timestamp,
};

pub fn money(m: Money) -> Value {
    json!({"minor": m.minor(), "currency": m.currency().code()})
}

pub fn time(t: Timestamp) -> Value {
    Value::String(t.to_rfc3339())
}

fn phase(p: Phase) -> &'static str {
    match p {
        Phase::Open => "open",
        Phase::Settling => "settling",
        Phase::Closed => "closed",
    }
}

fn order_status(s: OrderStatus) -> &'static str {
    match s {
        OrderStatus::AwaitingPayment => "awaiting_payment",
        OrderStatus::Paid => "paid",
        OrderStatus::Delivered => "delivered",
        OrderStatus::Failed => "failed",
        OrderStatus::Unconfirmed => "unconfirmed",
        OrderStatus::Expired => "expired",
        OrderStatus::Cancelled => "cancelled",
    }
}

/// What `GET /devices/{id}/session` answers: idle, a pay-first session or an order.
pub fn machine_status(current: Option<&Session>) -> Value {
    match current {
        Some(s) if s.phase != Phase::Closed => session(s),
        _ => json!({"state": "idle"}),
    }
}

/// A session or order as the machine sees it (closed ones say `closed`).
pub fn session(s: &Session) -> Value {
    let mut v = Map::new();
    match &s.kind {
        SessionKind::Order(o) => {
            let state = match (s.phase, o.status) {
                (Phase::Open, OrderStatus::AwaitingPayment) => "awaiting_payment",
                (Phase::Open, _) => "paid",
                (p, _) => phase(p),
            };
            let paid = s.total_paid().unwrap_or(Money::zero(s.currency));
            v.insert("state".into(), state.into());
            v.insert("order_id".into(), o.order_id.as_str().into());
            v.insert("session_id".into(), s.id.as_str().into());
            v.insert("mode".into(), "purchase_first".into());
            v.insert("slot".into(), o.slot.as_str().into());
            v.insert("price".into(), money(o.price));
            v.insert("paid".into(), money(paid));
            v.insert("order_status".into(), order_status(o.status).into());
            if o.status == OrderStatus::AwaitingPayment {
                v.insert("expires_at".into(), time(o.expires_at));
            }
        }
        SessionKind::PayFirst | SessionKind::Refused { .. } => {
            v.insert("state".into(), phase(s.phase).into());
            v.insert("session_id".into(), s.id.as_str().into());
            v.insert("mode".into(), "pay_first".into());
            v.insert("balance".into(), money(s.balance));
            v.insert("held".into(), money(s.held));
            v.insert("spent".into(), money(s.spent));
        }
    }
    if let Some(d) = s.deadline_at {
        v.insert("deadline_at".into(), time(d));
    }
    Value::Object(v)
}

/// The answer to a purchase request.
pub fn purchase_answer(a: &PurchaseAnswer) -> Value {
    let mut v = json!({
        "request_id": a.request_id.as_str(),
        "decision": if a.approved() { "approved" } else { "declined" },
        "balance": money(a.balance),
    });
    if let Some(obj) = v.as_object_mut() {
        if let Some(r) = a.declined {
            obj.insert("reason".into(), r.as_str().into());
        }
        if let Some(s) = &a.session {
            obj.insert("session_id".into(), s.as_str().into());
        }
    }
    v
}

pub fn device(d: &DeviceRecord) -> Value {
    json!({
        "device_id": d.device.id.as_str(),
        "name": d.name,
        "district": d.district,
        "location": d.location,
        "currency": d.device.currency.code(),
        "mode": d.device.mode.as_str(),
        "qrcode": d.qrcode.as_ref().map(|q| json!({"qrcode": q.qrcode, "qrcode_img_url": q.qrcode_img_url})),
        "created_at": time(d.created_at),
    })
}

fn payment(p: &PaymentRecord) -> Value {
    json!({
        "trade_no": p.trade_no.as_str(),
        "out_trade_no": p.merchant_trade_no.as_str(),
        "amount": money(p.amount),
        "buyer_id": p.buyer_id.as_ref().map(|b| b.as_str()),
        "paid_at": time(p.paid_at),
        "received_at": time(p.received_at),
    })
}

fn purchase(p: &Purchase) -> Value {
    let reason = match p.status {
        PurchaseStatus::Declined(r) => Some(r.as_str()),
        _ => None,
    };
    json!({
        "request_id": p.request_id.as_str(),
        "slot": p.slot.as_str(),
        "price": money(p.price),
        "status": p.status.as_str(),
        "reason": reason,
        "requested_at": time(p.requested_at),
        "late_report": p.late_report,
    })
}

/// `stuck`: pending for an hour without a verified answer (reconcile it with Alipay).
fn refund(r: &Refund) -> Value {
    let reason = match r.reason {
        RefundReason::Settlement => "settlement".to_owned(),
        RefundReason::Overpayment => "overpayment".to_owned(),
        RefundReason::VendFailed => "vend_failed".to_owned(),
        RefundReason::VendUnconfirmed => "vend_unconfirmed".to_owned(),
        RefundReason::Refused(why) => format!("refused_{}", why.as_str()),
    };
    let status = match r.status {
        RefundStatus::Pending => "pending",
        RefundStatus::Succeeded => "succeeded",
        RefundStatus::Failed => "failed",
    };
    json!({
        "refund_id": r.id.as_str(),
        "trade_no": r.trade_no.as_str(),
        "out_trade_no": r.merchant_trade_no.as_str(),
        "amount": money(r.amount),
        "reason": reason,
        "status": status,
        "stuck": r.stuck && r.status == RefundStatus::Pending,
        "issued_at": time(r.issued_at),
    })
}

fn anomaly(a: &Anomaly) -> Value {
    let (kind, detail) = match &a.kind {
        AnomalyKind::UnconfirmedVend { request_id } => (
            "unconfirmed_vend",
            json!({"request_id": request_id.as_str()}),
        ),
        AnomalyKind::LateVendReport {
            request_id,
            delivered,
        } => (
            "late_vend_report",
            json!({"request_id": request_id.as_str(), "delivered": delivered}),
        ),
        AnomalyKind::CurrencyMismatch {
            trade_no,
            paid,
            expected,
        } => (
            "currency_mismatch",
            json!({"trade_no": trade_no.as_str(), "paid": paid.code(), "expected": expected.code()}),
        ),
        AnomalyKind::RefundFailed { refund_id } => {
            ("refund_failed", json!({"refund_id": refund_id.as_str()}))
        }
        AnomalyKind::RefundSucceededAfterFailure { refund_id } => (
            "refund_succeeded_after_failure",
            json!({"refund_id": refund_id.as_str()}),
        ),
        AnomalyKind::RefundStuck { refund_id } => {
            ("refund_stuck", json!({"refund_id": refund_id.as_str()}))
        }
        AnomalyKind::StockMismatch { slot, request_id } => (
            "stock_mismatch",
            json!({"slot": slot.as_str(), "request_id": request_id.as_str()}),
        ),
        AnomalyKind::Unrecognised => ("unrecognised", json!({})),
    };
    json!({"kind": kind, "at": time(a.at), "detail": detail})
}

/// The operator's view: the session with its whole ledger.
pub fn session_detail(s: &Session) -> Value {
    let mut v = session(s);
    if let Some(obj) = v.as_object_mut() {
        let kind = match &s.kind {
            SessionKind::PayFirst => "pay_first".to_owned(),
            SessionKind::Order(_) => "order".to_owned(),
            SessionKind::Refused { reason } => format!("refused_{}", reason.as_str()),
        };
        obj.insert("kind".into(), kind.into());
        obj.insert("phase".into(), phase(s.phase).into());
        obj.insert("device_id".into(), s.device_id.as_str().into());
        obj.insert("opened_at".into(), time(s.opened_at));
        obj.insert("balance".into(), money(s.balance));
        obj.insert("held".into(), money(s.held));
        obj.insert("spent".into(), money(s.spent));
        obj.insert("payments".into(), s.payments.iter().map(payment).collect());
        obj.insert(
            "purchases".into(),
            s.purchases.iter().map(purchase).collect(),
        );
        obj.insert("refunds".into(), s.refunds.iter().map(refund).collect());
        obj.insert(
            "anomalies".into(),
            s.anomalies.iter().map(anomaly).collect(),
        );
        obj.insert("version".into(), s.version.into());
    }
    v
}

/// A product of the catalogue: `{"sku", "name", "price", "category"?}` (`category` only when it has one).
pub fn product(p: &Product) -> Value {
    let mut v = Map::new();
    v.insert("sku".into(), p.sku.as_str().into());
    v.insert("name".into(), p.name.as_str().into());
    v.insert("price".into(), money(p.price));
    if let Some(c) = &p.category {
        v.insert("category".into(), c.as_str().into());
    }
    Value::Object(v)
}

/// `{"products": [...]}`, in the order given (the store's: by sku).
pub fn products(ps: &[Product]) -> Value {
    json!({"products": ps.iter().map(product).collect::<Vec<_>>()})
}

fn inventory_line(l: &InventoryLine) -> Value {
    json!({
        "slot": l.slot.as_str(),
        "sku": l.sku.as_str(),
        "name": l.name,
        "price": money(l.price),
        "capacity": l.capacity,
        "stock": l.stock,
        "reserved": l.reserved,
        "low": l.low,
    })
}

/// A machine's inventory: `{"device_id", "slots": [{"slot", "sku", "name", "price", "capacity",
/// "stock", "reserved", "low"}]}`.
pub fn inventory(i: &MachineInventory) -> Value {
    json!({
        "device_id": i.device_id.as_str(),
        "slots": i.slots.iter().map(inventory_line).collect::<Vec<_>>(),
    })
}

fn round_machine(m: &RoundMachine) -> Value {
    json!({
        "device_id": m.device_id.as_str(),
        "name": m.name,
        "location": m.location,
        "slots": m.slots.iter().map(inventory_line).collect::<Vec<_>>(),
    })
}

/// The restocking round: `{"districts": [{"district", "machines": [{"device_id", "name", "location",
/// "slots": [...]}]}]}`.
pub fn restocking_round(r: &RestockingRound) -> Value {
    json!({
        "districts": r.districts.iter().map(|d| json!({
            "district": d.district,
            "machines": d.machines.iter().map(round_machine).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
    })
}
