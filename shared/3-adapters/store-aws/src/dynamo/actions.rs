//! A [`Commit`] as the actions of one conditional write: the device guard, each session, the trade
//! and request rows, refund rows and a refund's send-schedule change, each with its condition; and
//! what that write costs DynamoDB (actions, largest item, total size), so the bounds are proved.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::{AttributeValue, ConditionCheck, Put, TransactWriteItem, Update};
use vendpay_app::{Commit, DeviceGuard, RefundSend, SendCondition};
use vendpay_domain::{Phase, RefundStatus, Session};

use crate::error::StoreError;

use super::items::*;

// ---- commit → actions -------------------------------------------------------------------------

/// A condition with its placeholders.
#[derive(Debug, Default)]
pub(super) struct Cond {
    pub(super) expression: Option<String>,
    pub(super) names: Option<HashMap<String, String>>,
    pub(super) values: Option<HashMap<String, AttributeValue>>,
}

impl Cond {
    pub(super) fn not_exists() -> Cond {
        Cond {
            expression: Some("attribute_not_exists(#pk)".into()),
            names: Some(names(&[("#pk", ATTR_PK)])),
            values: None,
        }
    }

    pub(super) fn version_is(version: u64) -> Cond {
        Cond {
            expression: Some("#ver = :ver".into()),
            names: Some(names(&[("#ver", ATTR_VERSION)])),
            values: Some(HashMap::from([(":ver".to_owned(), n(version))])),
        }
    }
}

#[derive(Debug)]
pub(super) struct PutAction {
    pub(super) item: Item,
    pub(super) cond: Cond,
}

#[derive(Debug)]
pub(super) struct UpdateAction {
    pub(super) pk: String,
    pub(super) sk: &'static str,
    pub(super) expression: String,
    pub(super) cond: Cond,
}

#[derive(Debug)]
pub(super) struct Check {
    pub(super) pk: String,
    pub(super) sk: &'static str,
    pub(super) expected_version: u64,
}

#[derive(Debug)]
pub(super) enum Action {
    Put(PutAction),
    Update(UpdateAction),
    Check(Check),
}

impl Action {
    pub(super) fn into_transact(self, table: &str) -> Result<TransactWriteItem, StoreError> {
        let built = match self {
            Action::Put(p) => TransactWriteItem::builder().put(
                Put::builder()
                    .table_name(table)
                    .set_item(Some(p.item))
                    .set_condition_expression(p.cond.expression)
                    .set_expression_attribute_names(p.cond.names)
                    .set_expression_attribute_values(p.cond.values)
                    .build()
                    .map_err(build_error)?,
            ),
            Action::Update(u) => TransactWriteItem::builder().update(
                Update::builder()
                    .table_name(table)
                    .set_key(Some(key(u.pk, u.sk)))
                    .update_expression(u.expression)
                    .set_condition_expression(u.cond.expression)
                    .set_expression_attribute_names(u.cond.names)
                    .set_expression_attribute_values(u.cond.values)
                    .build()
                    .map_err(build_error)?,
            ),
            Action::Check(c) => {
                let cond = Cond::version_is(c.expected_version);
                TransactWriteItem::builder().condition_check(
                    ConditionCheck::builder()
                        .table_name(table)
                        .set_key(Some(key(c.pk, c.sk)))
                        .set_condition_expression(cond.expression)
                        .set_expression_attribute_names(cond.names)
                        .set_expression_attribute_values(cond.values)
                        .build()
                        .map_err(build_error)?,
                )
            }
        };
        Ok(built.build())
    }
}

pub(super) fn build_error(e: aws_sdk_dynamodb::error::BuildError) -> StoreError {
    StoreError::Permanent(format!("building a DynamoDB request: {e}").into())
}

/// The writes of one commit, each with the condition the port asks for.
pub(super) fn actions(commit: &Commit) -> Result<Vec<Action>, StoreError> {
    let mut out = Vec::new();
    if let Some(guard) = &commit.device {
        out.push(device_action(guard));
    }
    for session in &commit.sessions {
        let cond = match session.version {
            0 => {
                return Err(StoreError::Permanent(
                    format!("session {} has version 0; versions start at 1", session.id).into(),
                ))
            }
            1 => Cond::not_exists(),
            v => Cond::version_is(v - 1),
        };
        out.push(Action::Put(PutAction {
            item: session_to_item(session)?,
            cond,
        }));
    }
    if let Some((trade_no, outcome)) = &commit.trade {
        let mut item = key(trade_pk(trade_no), SK_TRADE);
        item.insert(ATTR_BODY.into(), json(outcome)?);
        out.push(Action::Put(PutAction {
            item,
            cond: Cond::not_exists(),
        }));
    }
    if let Some(record) = &commit.request {
        let mut item = key(request_pk(&record.device, &record.request_id), SK_REQUEST);
        item.insert(ATTR_BODY.into(), json(record)?);
        item.insert(
            ATTR_EXPIRES.into(),
            AttributeValue::N(record.expires_at.secs().to_string()),
        );
        out.push(Action::Put(PutAction {
            item,
            cond: Cond::not_exists(),
        }));
    }
    if let Some(send) = &commit.send {
        out.push(send_action(send));
    }
    for refund in &commit.refunds {
        let mut item = key(refund_pk(&refund.refund_id), SK_REFUND);
        item.insert(ATTR_REFUND.into(), json(refund)?);
        if refund.status == RefundStatus::Pending {
            item.insert(ATTR_GSI1_PK.into(), s(PENDING_REFUNDS));
            item.insert(
                ATTR_GSI1_SK.into(),
                AttributeValue::N(refund.issued_at.millis().to_string()),
            );
        }
        out.push(Action::Put(PutAction {
            item,
            cond: Cond::default(),
        }));
    }
    Ok(out)
}

/// A pending refund's send schedule: `gsi1sk` is its next attempt, `in_flight_until` the lease of the
/// send holding it, `attempts` and `generation` counters (absent = 0: items written before them, and
/// every new item, carry none). "Pending" is `attribute_exists(gsi1pk)` (a final refund leaves the
/// index); a status change `Put`s the whole item and so resets the schedule.
pub(super) fn send_action(send: &RefundSend) -> Action {
    let names = names(&[
        ("#gpk", ATTR_GSI1_PK),
        ("#gsk", ATTR_GSI1_SK),
        ("#fly", ATTR_IN_FLIGHT),
        ("#att", ATTR_ATTEMPTS),
        ("#gen", ATTR_GENERATION),
    ]);
    let num = |v: i64| AttributeValue::N(v.to_string());
    let mut values = HashMap::from([(":next".to_owned(), num(send.next_attempt_at.millis()))]);
    let mut set = vec!["#gsk = :next"];
    if let Some(until) = send.in_flight_until {
        values.insert(":until".into(), num(until.millis()));
        set.push("#fly = :until");
    }
    // `counter = n` where an absent counter reads as 0.
    let is = |attr: &str, placeholder: &str, n: u32| {
        if n == 0 {
            format!("(attribute_not_exists({attr}) OR {attr} = {placeholder})")
        } else {
            format!("{attr} = {placeholder}")
        }
    };
    let free = "attribute_exists(#gpk) AND (attribute_not_exists(#fly) OR #fly <= :now)";
    let condition = match send.when {
        SendCondition::Claim {
            now,
            generation,
            attempts,
        } => {
            values.insert(":now".into(), num(now.millis()));
            values.insert(":g".into(), num(i64::from(generation)));
            values.insert(":n".into(), num(i64::from(attempts)));
            values.insert(":n1".into(), num(i64::from(attempts) + 1));
            set.push("#att = :n1");
            format!(
                "{free} AND {} AND {}",
                is("#gen", ":g", generation),
                is("#att", ":n", attempts)
            )
        }
        SendCondition::Resend {
            now,
            due_by,
            generation,
        } => {
            values.insert(":now".into(), num(now.millis()));
            values.insert(":due".into(), num(due_by.millis()));
            values.insert(":g".into(), num(i64::from(generation)));
            values.insert(":g1".into(), num(i64::from(generation) + 1));
            set.push("#gen = :g1");
            format!(
                "{free} AND #gsk <= :due AND {}",
                is("#gen", ":g", generation)
            )
        }
        SendCondition::HeldUntil(held) => {
            values.insert(":held".into(), num(held.millis()));
            "attribute_exists(#gpk) AND #fly = :held".to_owned()
        }
    };
    let mut expression = format!("SET {}", set.join(", "));
    if send.in_flight_until.is_none() {
        expression.push_str(" REMOVE #fly");
    }
    // Every name must be used: drop the counters an expression does not mention.
    let mut names = names;
    for (placeholder, _) in [("#att", ()), ("#gen", ())] {
        if !expression.contains(placeholder) && !condition.contains(placeholder) {
            names.remove(placeholder);
        }
    }
    Action::Update(UpdateAction {
        pk: refund_pk(&send.refund_id),
        sk: SK_REFUND,
        expression,
        cond: Cond {
            expression: Some(condition),
            names: Some(names),
            values: Some(values),
        },
    })
}

pub(super) fn device_action(guard: &DeviceGuard) -> Action {
    let pk = device_pk(&guard.device);
    match &guard.new_current {
        None => Action::Check(Check {
            pk,
            sk: SK_DEVICE,
            expected_version: guard.expected_version,
        }),
        Some(current) => {
            let mut cond = Cond::version_is(guard.expected_version);
            if let Some(names) = cond.names.as_mut() {
                names.insert("#cur".into(), ATTR_CURRENT.into());
            }
            if let Some(values) = cond.values.as_mut() {
                values.insert(":cur".into(), s(current.as_str()));
                values.insert(":next".into(), n(guard.expected_version.saturating_add(1)));
            }
            Action::Update(UpdateAction {
                pk,
                sk: SK_DEVICE,
                expression: "SET #cur = :cur, #ver = :next".into(),
                cond,
            })
        }
    }
}

pub(super) fn session_to_item(session: &Session) -> Result<Item, StoreError> {
    let mut item = key(session_pk(&session.id), SK_SESSION);
    item.insert(ATTR_BODY.into(), json(session)?);
    item.insert(ATTR_VERSION.into(), n(session.version));
    item.insert(ATTR_DEVICE.into(), s(session.device_id.as_str()));
    if let (false, Some(deadline)) = (session.phase == Phase::Closed, session.deadline_at) {
        item.insert(
            ATTR_GSI1_PK.into(),
            s(&format!("due#{}", due_shard(&session.id))),
        );
        item.insert(
            ATTR_GSI1_SK.into(),
            AttributeValue::N(deadline.millis().to_string()),
        );
    }
    Ok(item)
}

/// What one commit costs DynamoDB: the number of actions of its write (at most 100 in one
/// `TransactWriteItems`) and the size of its largest item (at most 400 KB) and of all of them (4 MB).
pub fn commit_cost(commit: &Commit) -> Result<(usize, usize, usize), StoreError> {
    let actions = actions(commit)?;
    let sizes: Vec<usize> = actions
        .iter()
        .map(|a| match a {
            Action::Put(p) => item_size(&p.item),
            Action::Check(_) | Action::Update(_) => 0,
        })
        .collect();
    Ok((
        actions.len(),
        sizes.iter().copied().max().unwrap_or(0),
        sizes.iter().sum(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use vendpay_app::{DeviceGuard, RefundRecord, RequestRecord};
    use vendpay_domain::*;

    fn long(prefix: &str, i: usize, max: usize) -> String {
        let s = format!("{prefix}{i}-");
        format!("{s}{}", "x".repeat(max.saturating_sub(s.len())))
    }

    fn cny(minor: u64) -> Result<Money, String> {
        Money::new(minor, Currency::Cny).ok_or_else(|| format!("{minor} is not an amount"))
    }

    /// The rows a decision's commit carries, as the ledger builds them.
    fn commit_of(t: &Transition, request: Option<RequestRecord>, with_trade: bool) -> Commit {
        let mut refunds = Vec::new();
        for e in &t.effects {
            if let Effect::IssueRefund {
                session,
                refund_id,
                trade_no,
                amount,
                ..
            } = e
            {
                refunds.push(RefundRecord {
                    refund_id: refund_id.clone(),
                    session: session.clone(),
                    trade_no: trade_no.clone(),
                    amount: *amount,
                    status: RefundStatus::Pending,
                    issued_at: Timestamp::from_millis(0),
                    attempts: 0,
                    generation: 0,
                    in_flight_until: None,
                });
            }
        }
        let trade = t.reply.clone();
        Commit {
            device: Some(DeviceGuard {
                device: DeviceId::parse("vm-1").expect("valid id"),
                expected_version: 7,
                new_current: t.current.clone(),
            }),
            sessions: t.sessions.clone(),
            trade: match (with_trade, trade) {
                (true, Reply::Payment(o)) => Some((TradeNo::parse("T-NEXT").expect("valid id"), o)),
                _ => None,
            },
            request,
            refunds,
            send: None,
        }
    }

    /// The largest session the rules allow — every list at its bound, every id at its longest — and
    /// the largest decisions on it: they must fit one `TransactWriteItems` (100 actions, 400 KB per
    /// item, 4 MB in all).
    #[test]
    fn the_largest_possible_commit_fits_one_transaction() -> Result<(), Box<dyn std::error::Error>>
    {
        let device = Device {
            id: DeviceId::parse(long("vm", 0, DeviceId::MAX_LEN))?,
            mode: Mode::PayFirst,
            currency: Currency::Cny,
        };
        let windows = Windows::default();
        let t0 = Timestamp::from_millis(1_700_000_000_000);
        let at = |ms: i64| Timestamp::from_millis(t0.millis() + ms);
        let mut current: Option<Session> = None;
        let apply = |current: &mut Option<Session>, t: &Transition| {
            if let Some(s) = t.sessions.iter().find(|s| s.is_pay_first()) {
                *current = Some(s.clone());
            }
        };
        for i in 0..MAX_PAYMENTS {
            let p = IncomingPayment {
                trade_no: TradeNo::parse(long("T", i, TradeNo::MAX_LEN))?,
                merchant_trade_no: MerchantTradeNo::parse(long("M", i, MerchantTradeNo::MAX_LEN))?,
                amount: cny(100_000)?,
                buyer_id: Some(BuyerId::parse(long("2088", 0, BuyerId::MAX_LEN))?),
                paid_at: at(i as i64),
            };
            let t = receive_payment(&device, current.as_ref(), &p, &windows, at(i as i64))?;
            apply(&mut current, &t);
        }
        for i in 0..MAX_APPROVED_PURCHASES + MAX_RECORDED_DECLINES + 5 {
            let price = if i < MAX_APPROVED_PURCHASES {
                1
            } else {
                1_000_000_000
            };
            let req = PurchaseRequest {
                request_id: RequestId::parse(long("r", i, RequestId::MAX_LEN))?,
                slot: Slot::parse(long("A", i, Slot::MAX_LEN))?,
                price: cny(price)?,
                session: None,
            };
            let t = request_purchase(&device, current.as_ref(), &req, &windows, at(100))?;
            apply(&mut current, &t);
        }
        // Ending with every hold outstanding refunds the free balance over all 50 payments.
        let t = end_session(&device, current.as_ref(), None, at(200))?;
        let (n, _, _) = commit_cost(&commit_of(&t, None, false))?;
        assert!(n <= 100, "end-session commit of {n} actions");
        apply(&mut current, &t);
        // Every hold then fails, one by one: a refund row each.
        let session = current.clone().ok_or("no session")?;
        let mut s = session;
        for i in 0..MAX_APPROVED_PURCHASES {
            let r = RequestId::parse(long("r", i, RequestId::MAX_LEN))?;
            let t = report_vend(&s, &r, false, at(300))?;
            let (n, _, _) = commit_cost(&commit_of(&t, None, false))?;
            assert!(n <= 100, "vend commit of {n} actions");
            if let Some(w) = t.sessions.first() {
                s = w.clone();
            }
        }
        let (_, largest_item, _) = commit_cost(&Commit {
            sessions: vec![s.clone()],
            ..Commit::default()
        })?;
        assert!(
            largest_item <= 400 * 1024,
            "the largest session item is {largest_item} bytes"
        );
        eprintln!(
            "largest session: {} payments, {} purchases, {} refunds, {} anomalies = {largest_item} bytes",
            s.payments.len(),
            s.purchases.len(),
            s.refunds.len(),
            s.anomalies.len()
        );

        // The largest single decision: a payment on a machine whose full session is overdue, with
        // every hold unconfirmed: the settlement refunds over all 50 payments, and the new payment
        // opens the next session.
        let mut full = None;
        for i in 0..MAX_PAYMENTS {
            let p = IncomingPayment {
                trade_no: TradeNo::parse(long("U", i, TradeNo::MAX_LEN))?,
                merchant_trade_no: MerchantTradeNo::parse(long("N", i, MerchantTradeNo::MAX_LEN))?,
                amount: cny(100_000)?,
                buyer_id: None,
                paid_at: at(i as i64),
            };
            let t = receive_payment(&device, full.as_ref(), &p, &windows, at(i as i64))?;
            apply(&mut full, &t);
        }
        for i in 0..MAX_APPROVED_PURCHASES {
            let req = PurchaseRequest {
                request_id: RequestId::parse(long("q", i, RequestId::MAX_LEN))?,
                slot: Slot::parse(long("B", i, Slot::MAX_LEN))?,
                price: cny(1)?,
                session: None,
            };
            let t = request_purchase(&device, full.as_ref(), &req, &windows, at(100))?;
            apply(&mut full, &t);
        }
        let late = at(100).plus(Duration::from_secs(3600));
        let next = IncomingPayment {
            trade_no: TradeNo::parse("T-NEXT")?,
            merchant_trade_no: MerchantTradeNo::parse("M-NEXT")?,
            amount: cny(500)?,
            buyer_id: None,
            paid_at: late,
        };
        let t = receive_payment(&device, full.as_ref(), &next, &windows, late)?;
        let (n, item, total) = commit_cost(&commit_of(&t, None, true))?;
        eprintln!("largest decision: {n} actions, largest item {item} bytes, {total} bytes in all");
        assert!(n <= 100, "{n} actions");
        assert!(
            item <= 400 * 1024 && total <= 4 * 1024 * 1024,
            "{item} / {total} bytes"
        );
        Ok(())
    }
}
