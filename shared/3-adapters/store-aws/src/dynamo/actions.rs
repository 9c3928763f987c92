//! A [`Commit`] as the actions of one conditional write: the device guard, each session, the trade
//! and request rows, refund rows, a refund's send-schedule change and the slot rows the decision
//! changes, each with its condition, and the decision's facts item; a planogram change ([`SlotWrites`]) likewise; and what a write
//! costs DynamoDB (actions, largest item, total size), so the bounds are proved.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::{
    AttributeValue, ConditionCheck, Delete, Put, TransactWriteItem, Update,
};
use vendpay_app::{Commit, DeviceGuard, RefundSend, SendCondition};
use vendpay_domain::{DeviceId, Phase, RefundStatus, Session, SlotStock, SlotWrites};

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
    pub(super) sk: String,
    pub(super) expression: String,
    pub(super) cond: Cond,
}

#[derive(Debug)]
pub(super) struct DeleteAction {
    pub(super) pk: String,
    pub(super) sk: String,
    pub(super) cond: Cond,
}

#[derive(Debug)]
pub(super) struct Check {
    pub(super) pk: String,
    pub(super) sk: String,
    pub(super) expected_version: u64,
}

#[derive(Debug)]
pub(super) enum Action {
    Put(PutAction),
    Update(UpdateAction),
    Delete(DeleteAction),
    Check(Check),
}

/// DynamoDB's limit on the actions of one `TransactWriteItems`.
pub const MAX_TRANSACT_ACTIONS: usize = 100;

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
                    .set_key(Some(key(u.pk, &u.sk)))
                    .update_expression(u.expression)
                    .set_condition_expression(u.cond.expression)
                    .set_expression_attribute_names(u.cond.names)
                    .set_expression_attribute_values(u.cond.values)
                    .build()
                    .map_err(build_error)?,
            ),
            Action::Delete(d) => TransactWriteItem::builder().delete(
                Delete::builder()
                    .table_name(table)
                    .set_key(Some(key(d.pk, &d.sk)))
                    .set_condition_expression(d.cond.expression)
                    .set_expression_attribute_names(d.cond.names)
                    .set_expression_attribute_values(d.cond.values)
                    .build()
                    .map_err(build_error)?,
            ),
            Action::Check(c) => {
                let cond = Cond::version_is(c.expected_version);
                TransactWriteItem::builder().condition_check(
                    ConditionCheck::builder()
                        .table_name(table)
                        .set_key(Some(key(c.pk, &c.sk)))
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
    for row in &commit.stock {
        // A decision changes rows a planogram created (version 1), so a row it writes is at 2 or more.
        if row.version < 2 {
            return Err(StoreError::Permanent(
                format!(
                    "slot {} of {} has version {}: a sale changes an existing row, whose version is at least 2 once changed",
                    row.slot, row.device_id, row.version
                )
                .into(),
            ));
        }
        out.push(Action::Put(PutAction {
            item: slot_to_item(row)?,
            cond: Cond::version_is(row.version - 1),
        }));
    }
    if let Some(item) = facts_item(commit)? {
        // Unconditional: the key names the decision (its session's new version), so writing it
        // again writes the same facts, and the stream sees no change.
        out.push(Action::Put(PutAction {
            item,
            cond: Cond::default(),
        }));
    }
    Ok(out)
}

/// The one item holding a commit's facts, keyed by the decision: the first written session and its
/// new version (unique per landed decision, since that version is written only once).
fn facts_item(commit: &Commit) -> Result<Option<Item>, StoreError> {
    let Some(first) = commit.facts.first() else {
        return Ok(None);
    };
    let pk = match commit.sessions.first() {
        Some(s) => format!("{FACTS_PREFIX}{}#{}", s.id, s.version),
        None => format!("{FACTS_PREFIX}{}", first.id),
    };
    let latest = commit.facts.iter().map(|f| f.at).max().unwrap_or(first.at);
    let mut item = key(pk, SK_FACTS);
    item.insert(ATTR_FACTS.into(), json(&commit.facts)?);
    item.insert(
        ATTR_EXPIRES.into(),
        AttributeValue::N(latest.plus(FACTS_TTL).secs().to_string()),
    );
    Ok(Some(item))
}

/// The actions of a planogram change of `device`: each written row a `Put` on `version = v - 1`
/// (`attribute_not_exists` when new, version 1), each removed row a `Delete` on `version = v`, and —
/// when the number of rows changes — the machine's listing entry, conditional on the count `listed`
/// read beside them (`None`: no entry): written with the new count, or deleted when it reaches 0. The
/// count's condition serialises the changes that add or remove rows, so the listing is exact.
pub(super) fn slot_actions(
    device: &DeviceId,
    writes: &SlotWrites,
    listed: Option<u64>,
) -> Result<Vec<Action>, StoreError> {
    let mut out = Vec::with_capacity(writes.write.len() + writes.remove.len() + 1);
    let ours = |row: &SlotStock| -> Result<(), StoreError> {
        if &row.device_id == device {
            Ok(())
        } else {
            Err(StoreError::Permanent(
                format!(
                    "slot {} of {} is not a row of {device}",
                    row.slot, row.device_id
                )
                .into(),
            ))
        }
    };
    let (mut added, mut removed) = (0u64, 0u64);
    for row in &writes.write {
        ours(row)?;
        let cond = match row.version {
            0 => {
                return Err(StoreError::Permanent(
                    format!(
                        "slot {} of {device} has version 0; versions start at 1",
                        row.slot
                    )
                    .into(),
                ))
            }
            1 => {
                added += 1;
                Cond::not_exists()
            }
            v => Cond::version_is(v - 1),
        };
        out.push(Action::Put(PutAction {
            item: slot_to_item(row)?,
            cond,
        }));
    }
    for row in &writes.remove {
        ours(row)?;
        removed += 1;
        out.push(Action::Delete(DeleteAction {
            pk: device_pk(device),
            sk: slot_sk(&row.slot),
            cond: Cond::version_is(row.version),
        }));
    }
    if added != removed {
        let before = listed.unwrap_or(0);
        let after = (before + added).checked_sub(removed).ok_or_else(|| {
            // The listing says fewer rows than the ones being removed: it was read before a change
            // that added some, so the caller's view is stale.
            StoreError::Conflict(format!(
                "{device}: {removed} slot rows to remove but {} listed",
                before + added
            ))
        })?;
        let cond = match listed {
            None => Cond::not_exists(),
            Some(count) => Cond {
                expression: Some("#n = :n".into()),
                names: Some(names(&[("#n", ATTR_SLOTS)])),
                values: Some(HashMap::from([(":n".to_owned(), n(count))])),
            },
        };
        let sk = device_pk(device);
        if after == 0 {
            out.push(Action::Delete(DeleteAction {
                pk: PLANOGRAMS.to_owned(),
                sk,
                cond,
            }));
        } else {
            let mut item = key(PLANOGRAMS.to_owned(), &sk);
            item.insert(ATTR_SLOTS.into(), n(after));
            out.push(Action::Put(PutAction { item, cond }));
        }
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
        sk: SK_REFUND.to_owned(),
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
            sk: SK_DEVICE.to_owned(),
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
                sk: SK_DEVICE.to_owned(),
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
    Ok(cost(&actions(commit)?))
}

/// What a planogram change of `device` costs, as [`commit_cost`]; the listing entry counted as
/// existing (`listed`) so its action is there whenever the number of rows changes.
pub fn slot_writes_cost(
    device: &DeviceId,
    writes: &SlotWrites,
    listed: Option<u64>,
) -> Result<(usize, usize, usize), StoreError> {
    Ok(cost(&slot_actions(device, writes, listed)?))
}

fn cost(actions: &[Action]) -> (usize, usize, usize) {
    let sizes: Vec<usize> = actions
        .iter()
        .map(|a| match a {
            Action::Put(p) => item_size(&p.item),
            Action::Check(_) | Action::Update(_) | Action::Delete(_) => 0,
        })
        .collect();
    (
        actions.len(),
        sizes.iter().copied().max().unwrap_or(0),
        sizes.iter().sum(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::time::Duration;
    use vendpay_app::{DeviceGuard, RefundRecord, RequestRecord};
    use vendpay_domain::inventory::{replace_planogram, MAX_RESERVED_HOLDS, MAX_SLOTS};
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
            stock: t.stock.clone(),
            facts: worst_facts(t),
        }
    }

    /// The decision's facts as if every session were new (every payment, vend and refund reported
    /// again) at the longest district and location: more than a real decision writes, so the bounds
    /// proved with them hold for it.
    fn worst_facts(t: &Transition) -> Vec<vendpay_domain::facts::Fact> {
        use vendpay_domain::facts::{facts_of, AnalyticsKey, FactContext, Place};
        let place = Place {
            district: "d".repeat(100),
            location: Some("l".repeat(200)),
        };
        let key = AnalyticsKey::new(b"k".to_vec());
        let names = std::collections::BTreeMap::new();
        let ctx = FactContext {
            key: &key,
            place: Some(&place),
            products: &names,
        };
        let mut facts = facts_of(t, &HashMap::new(), &ctx, Timestamp::from_millis(0));
        for f in &mut facts {
            f.product = Some("p".repeat(100));
        }
        facts
    }

    /// A machine's slot rows as the decisions leave them, and the catalogue price they sell at.
    struct Planogram {
        rows: BTreeMap<Slot, SlotStock>,
        sku: Sku,
        price: Money,
    }

    impl Planogram {
        /// `MAX_SLOTS` slots with the longest ids, full, all selling one product at its price.
        fn full(device: &DeviceId) -> Result<Planogram, Box<dyn std::error::Error>> {
            let sku = Sku::parse(long("sku", 0, Sku::MAX_LEN))?;
            let rows = (0..MAX_SLOTS)
                .map(|i| {
                    let slot = Slot::parse(long("P", i, Slot::MAX_LEN))?;
                    let row = SlotStock {
                        sold_at: None,
                        device_id: device.clone(),
                        slot: slot.clone(),
                        sku: sku.clone(),
                        capacity: 1000,
                        price: None,
                        stock: 1000,
                        reserved: 0,
                        version: 5,
                    };
                    Ok((slot, row))
                })
                .collect::<Result<_, IdError>>()?;
            Ok(Planogram {
                rows,
                sku,
                price: cny(1)?,
            })
        }

        fn shelves(&self) -> Shelves {
            Shelves::new(self.rows.values().cloned()).with_price(self.sku.clone(), self.price)
        }

        fn slot(&self, i: usize) -> Result<Slot, String> {
            self.rows
                .keys()
                .nth(i)
                .cloned()
                .ok_or_else(|| format!("no slot {i}"))
        }

        fn apply(&mut self, t: &Transition) {
            for row in &t.stock {
                self.rows.insert(row.slot.clone(), row.clone());
            }
        }
    }

    /// A pay-first session at every bound: `MAX_PAYMENTS` payments, `MAX_RESERVED_HOLDS` holds of
    /// distinct planogram slots and the rest of `MAX_APPROVED_PURCHASES` outside it, then declines
    /// (with `declines`); every id at its longest.
    fn fill(
        device: &Device,
        shelves: &mut Planogram,
        prefix: char,
        declines: bool,
        t0: Timestamp,
    ) -> Result<Session, Box<dyn std::error::Error>> {
        let windows = Windows::default();
        let at = |ms: i64| Timestamp::from_millis(t0.millis() + ms);
        let mut current: Option<Session> = None;
        let decide = |current: &mut Option<Session>, shelves: &mut Planogram, t: Transition| {
            if let Some(s) = t.sessions.iter().find(|s| s.is_pay_first()) {
                *current = Some(s.clone());
            }
            shelves.apply(&t);
        };
        for i in 0..MAX_PAYMENTS {
            let p = IncomingPayment {
                trade_no: TradeNo::parse(long(&format!("{prefix}T"), i, TradeNo::MAX_LEN))?,
                merchant_trade_no: MerchantTradeNo::parse(long(
                    &format!("{prefix}M"),
                    i,
                    MerchantTradeNo::MAX_LEN,
                ))?,
                amount: cny(100_000)?,
                buyer_id: Some(BuyerId::parse(long("2088", 0, BuyerId::MAX_LEN))?),
                paid_at: at(i as i64),
            };
            let t = receive_payment(
                device,
                current.as_ref(),
                &p,
                &shelves.shelves(),
                &windows,
                at(i as i64),
            )?;
            decide(&mut current, shelves, t);
        }
        let extra = if declines {
            MAX_RECORDED_DECLINES + 5
        } else {
            0
        };
        for i in 0..MAX_APPROVED_PURCHASES + extra {
            let (slot, price) = if i < MAX_RESERVED_HOLDS {
                (shelves.slot(i)?, None)
            } else if i < MAX_APPROVED_PURCHASES {
                (Slot::parse(long("A", i, Slot::MAX_LEN))?, Some(cny(1)?))
            } else {
                (
                    Slot::parse(long("A", i, Slot::MAX_LEN))?,
                    Some(cny(1_000_000_000)?),
                )
            };
            let req = PurchaseRequest {
                request_id: RequestId::parse(long(&format!("{prefix}r"), i, RequestId::MAX_LEN))?,
                slot,
                price,
                session: None,
            };
            let t = request_purchase(
                device,
                current.as_ref(),
                &req,
                &shelves.shelves(),
                &windows,
                at(100),
            )?;
            if i < MAX_APPROVED_PURCHASES {
                assert!(
                    t.effects
                        .iter()
                        .any(|e| matches!(e, Effect::Approve { .. })),
                    "purchase {i} is approved"
                );
            }
            decide(&mut current, shelves, t);
        }
        let s = current.ok_or("no session")?;
        let holds = s
            .purchases
            .iter()
            .filter(|p| p.reserved && p.status == PurchaseStatus::Held)
            .count();
        assert_eq!(holds, MAX_RESERVED_HOLDS);
        Ok(s)
    }

    /// The largest session the rules allow — every list at its bound, every id at its longest, the
    /// most holds that reserve stock — and the largest decisions on it: they must fit one
    /// `TransactWriteItems` (100 actions, 400 KB per item, 4 MB in all), slot rows included.
    #[test]
    fn the_largest_possible_commit_fits_one_transaction() -> Result<(), Box<dyn std::error::Error>>
    {
        let device = Device {
            id: DeviceId::parse(long("vm", 0, DeviceId::MAX_LEN))?,
            mode: Mode::PayFirst,
            currency: Currency::Cny,
        };
        let t0 = Timestamp::from_millis(1_700_000_000_000);
        let at = |ms: i64| Timestamp::from_millis(t0.millis() + ms);
        let mut shelves = Planogram::full(&device.id)?;
        let session = fill(&device, &mut shelves, 'a', true, t0)?;

        // Ending with every hold outstanding refunds the free balance over all 50 payments.
        let t = end_session(&device, Some(&session), None, &shelves.shelves(), at(200))?;
        let (n, _, _) = commit_cost(&commit_of(&t, None, false))?;
        assert!(
            n <= MAX_TRANSACT_ACTIONS,
            "end-session commit of {n} actions"
        );
        let mut s = t.sessions.first().cloned().unwrap_or(session);
        shelves.apply(&t);
        // Every hold then fails, one by one: a refund row each, and a slot row for the reserving ones.
        for i in 0..MAX_APPROVED_PURCHASES {
            let r = RequestId::parse(long("ar", i, RequestId::MAX_LEN))?;
            let t = report_vend(&s, &r, false, &shelves.shelves(), at(300))?;
            let c = commit_of(&t, None, false);
            assert_eq!(c.stock.len(), usize::from(i < MAX_RESERVED_HOLDS));
            let (n, _, _) = commit_cost(&c)?;
            assert!(n <= MAX_TRANSACT_ACTIONS, "vend commit of {n} actions");
            shelves.apply(&t);
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

        // The largest single decisions: on a full session whose holds are all unconfirmed, its
        // deadline, and a payment that finds it overdue (the settlement refunds over all 50 payments
        // and releases every reserved item, and the new payment opens the next session).
        let mut shelves = Planogram::full(&device.id)?;
        let full = fill(&device, &mut shelves, 'b', false, t0)?;
        let late = at(100).plus(Duration::from_secs(3600));
        let t = deadline_due(&full, &shelves.shelves(), late)?;
        assert_eq!(
            t.stock.len(),
            MAX_RESERVED_HOLDS,
            "every reservation released"
        );
        let (n, item, total) = commit_cost(&commit_of(&t, None, false))?;
        eprintln!("largest deadline: {n} actions, largest item {item} bytes, {total} bytes in all");
        assert!(n <= MAX_TRANSACT_ACTIONS, "{n} actions");
        let next = IncomingPayment {
            trade_no: TradeNo::parse("T-NEXT")?,
            merchant_trade_no: MerchantTradeNo::parse("M-NEXT")?,
            amount: cny(500)?,
            buyer_id: None,
            paid_at: late,
        };
        let t = receive_payment(
            &device,
            Some(&full),
            &next,
            &shelves.shelves(),
            &Windows::default(),
            late,
        )?;
        assert_eq!(
            t.stock.len(),
            MAX_RESERVED_HOLDS,
            "every reservation released"
        );
        let (n, item, total) = commit_cost(&commit_of(&t, None, true))?;
        eprintln!("largest decision: {n} actions, largest item {item} bytes, {total} bytes in all");
        assert!(n <= MAX_TRANSACT_ACTIONS, "{n} actions");
        assert!(
            item <= 400 * 1024 && total <= 4 * 1024 * 1024,
            "{item} / {total} bytes"
        );
        Ok(())
    }

    /// The largest planogram changes: every old row replaced by a new slot, every id at its longest.
    /// 48 removals and 48 new rows leave the count alone (96 actions); 47 and 48 write the listing
    /// entry too (96 again): a replacement never needs more.
    #[test]
    fn the_largest_slot_map_replacement_fits_one_transaction(
    ) -> Result<(), Box<dyn std::error::Error>> {
        let device = Device {
            id: DeviceId::parse(long("vm", 0, DeviceId::MAX_LEN))?,
            mode: Mode::Mixed,
            currency: Currency::Cny,
        };
        let sku = Sku::parse(long("new", 0, Sku::MAX_LEN))?;
        let catalogue = BTreeMap::from([(
            sku.clone(),
            Product {
                sku: sku.clone(),
                name: "n".repeat(inventory::MAX_NAME_CHARS),
                price: cny(350)?,
                category: Some("c".repeat(inventory::MAX_CATEGORY_CHARS)),
            },
        )]);
        let spec = (0..MAX_SLOTS)
            .map(|i| {
                Ok(SlotSpec {
                    slot: Slot::parse(long("Q", i, Slot::MAX_LEN))?,
                    sku: sku.clone(),
                    capacity: 1000,
                    price: Some(cny(u64::MAX / 4)?),
                })
            })
            .collect::<Result<Vec<_>, Box<dyn std::error::Error>>>()?;
        for old_rows in [MAX_SLOTS, MAX_SLOTS - 1] {
            let old: Vec<SlotStock> = Planogram::full(&device.id)?
                .rows
                .into_values()
                .take(old_rows)
                .collect();
            let writes = replace_planogram(&device, &old, &spec, &catalogue)?;
            assert_eq!(
                (writes.write.len(), writes.remove.len()),
                (MAX_SLOTS, old_rows)
            );
            let (n, item, total) = slot_writes_cost(&device.id, &writes, Some(old_rows as u64))?;
            eprintln!(
                "slot map of {old_rows} rows replaced: {n} actions, largest item {item} bytes, {total} in all"
            );
            let listing = usize::from(old_rows != MAX_SLOTS);
            assert_eq!(n, MAX_SLOTS + old_rows + listing);
            assert!(n <= MAX_TRANSACT_ACTIONS, "{n} actions");
            assert!(item <= 400 * 1024 && total <= 4 * 1024 * 1024);
        }
        Ok(())
    }

    #[test]
    fn the_listing_entry_follows_the_number_of_rows() -> Result<(), Box<dyn std::error::Error>> {
        let device = DeviceId::parse("vm-1")?;
        let rows: Vec<SlotStock> = Planogram::full(&device)?
            .rows
            .into_values()
            .take(2)
            .collect();
        let new = |r: &SlotStock| SlotStock {
            version: 1,
            ..r.clone()
        };
        let listing = |actions: &[Action]| -> Option<String> {
            actions.iter().find_map(|a| match a {
                Action::Put(p) if item_name(&p.item).starts_with(PLANOGRAMS) => Some(format!(
                    "put {:?} if {:?}",
                    p.item.get(ATTR_SLOTS),
                    p.cond.expression
                )),
                Action::Delete(d) if d.pk == PLANOGRAMS => {
                    Some(format!("delete if {:?}", d.cond.expression))
                }
                _ => None,
            })
        };
        let first = SlotWrites {
            write: rows.iter().map(new).collect(),
            remove: Vec::new(),
        };
        assert_eq!(
            listing(&slot_actions(&device, &first, None)?).as_deref(),
            Some(r##"put Some(N("2")) if Some("attribute_not_exists(#pk)")"##)
        );
        let restock = SlotWrites {
            write: rows.clone(),
            remove: Vec::new(),
        };
        assert_eq!(listing(&slot_actions(&device, &restock, None)?), None);
        let emptied = SlotWrites {
            write: Vec::new(),
            remove: rows.clone(),
        };
        assert_eq!(
            listing(&slot_actions(&device, &emptied, Some(2))?).as_deref(),
            Some(r##"delete if Some("#n = :n")"##)
        );
        let one_less = SlotWrites {
            write: Vec::new(),
            remove: rows[..1].to_vec(),
        };
        assert_eq!(
            listing(&slot_actions(&device, &one_less, Some(2))?).as_deref(),
            Some(r##"put Some(N("1")) if Some("#n = :n")"##)
        );
        // A listing that counts fewer rows than are removed was read before rows were added.
        assert!(matches!(
            slot_actions(&device, &emptied, Some(1)),
            Err(StoreError::Conflict(_))
        ));
        let other = DeviceId::parse("vm-2")?;
        assert!(matches!(
            slot_actions(&other, &first, None),
            Err(StoreError::Permanent(_))
        ));
        Ok(())
    }
}
