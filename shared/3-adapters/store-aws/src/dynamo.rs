//! [`DynamoStore`]: `DeviceStore` + `SessionStore` on one DynamoDB table.
//!
//! # Key design
//!
//! One item per entity, every entity in its own partition (`pk`); `sk` names the entity type, so a later
//! item collection (e.g. per-session ledger rows) needs no new table. All ids are restricted to
//! `[A-Za-z0-9_:.-]` by `vendpay-domain`, so `#` is a safe separator.
//!
//! | entity | `pk` | `sk` | other attributes |
//! |---|---|---|---|
//! | device | `dev#{device_id}` | `device` | `body` (JSON `DeviceRecord`), `version` (N), `current` (S, optional), `qrcode` (JSON, optional) |
//! | session / order | `ses#{session_id}` | `session` | `body` (JSON `Session`), `version` (N), `device` (S); while due-able: `gsi1pk` = `due#{shard}`, `gsi1sk` = deadline (epoch ms) |
//! | trade dedupe | `trade#{trade_no}` | `trade` | `body` (JSON `PaymentOutcome`); permanent |
//! | request idempotency | `req#{device_id}#{request_id}` | `request` | `body` (JSON `RequestRecord`), `expires_at` (N, epoch s: the TTL attribute) |
//! | refund | `ref#{refund_id}` | `refund` | `refund` (JSON `RefundRecord`); while pending: `gsi1pk` = `refund#pending`, `gsi1sk` = its next attempt (epoch ms; the issue time when written), `in_flight_until` (N, epoch ms, while a send holds it), `attempts` and `generation` (N; absent = 0) — the send schedule, read by `refund` only (the index projects the JSON) |
//!
//! `gsi1` (`gsi1pk` HASH, `gsi1sk` N RANGE, projecting the keys and `refund`) is sparse and overloaded:
//! a session is in it only while it is not closed and has a deadline; a refund only while pending.
//! The device's `version`/`current` and the session's `version` are attributes beside the JSON body
//! because conditions test them; on read they are taken from the attributes.
//!
//! # Access patterns
//!
//! | port call | DynamoDB requests |
//! |---|---|
//! | `register` | `PutItem` device, `attribute_not_exists(pk)` |
//! | `device` | `GetItem` device (consistent) |
//! | `set_qrcode` | `UpdateItem SET qrcode`, `attribute_exists(pk)` (no read-modify-write) |
//! | `machine` | `GetItem` device, then `GetItem` its current session (both consistent) |
//! | `session`, `trade`, `request`, `refund` | one consistent `GetItem` |
//! | `commit` | one `TransactWriteItems`; one conditional `PutItem`/`UpdateItem` when it holds one write; one consistent `GetItem` when it is a bare device guard (a check writes nothing, so a read is exact) |
//! | `due(now, limit)` | one `Query` per shard on `gsi1`: `gsi1pk = due#{n} AND gsi1sk <= now`, ascending, `Limit` |
//! | `pending_refunds(due_by, limit)` | one `Query` on `gsi1`: `gsi1pk = refund#pending AND gsi1sk <= due_by`, ascending, `Limit` |
//!
//! `commit` maps the port's conditions one to one: the device guard is a `ConditionCheck` on
//! `version = :expected` (or an `Update` that sets `current` and bumps `version` under that condition);
//! each session is a `Put` on `version = :prev` (`attribute_not_exists(pk)` when creating, version 1);
//! the trade and request rows are `Put`s on `attribute_not_exists(pk)`; refund rows are unconditional
//! `Put`s (guarded by their session's version in the same transaction); a send-schedule change
//! (`RefundSend`) is one `UpdateItem` of the refund item under its condition.
//!
//! # Scaling the deadline index
//!
//! A GSI partition takes about 1,000 writes/s, and every write of a due-able session writes its index
//! entry. Sessions are spread over [`DUE_SHARDS`] index partitions by a hash of the session id, so the
//! index takes ~8,000 session writes/s; `due` queries every shard and merges (8 small queries once a
//! minute). Raising the shard count later needs a reader that queries the old and new shards during the
//! change. Pending refunds are few and short-lived (written when issued and when final), so they share
//! one partition. GSI reads are eventually consistent; both lists feed sweeps whose actions are
//! conditional, so a just-changed entry is harmless.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use aws_sdk_dynamodb::types::{AttributeValue, ConditionCheck, Put, TransactWriteItem, Update};
use aws_sdk_dynamodb::Client;
use serde::de::DeserializeOwned;
use serde::Serialize;
use sha2::{Digest, Sha256};
use vendpay_app::{
    Commit, DeviceGuard, DeviceRecord, DeviceStore, Machine, QrCode, RefundRecord, RefundSend,
    RequestRecord, SendCondition, SessionStore,
};
use vendpay_domain::{
    DeviceId, PaymentOutcome, Phase, RefundId, RefundStatus, RequestId, Session, SessionId,
    Timestamp, TradeNo,
};

use crate::error::{classify, classify_cancellation, StoreError};

pub const ATTR_PK: &str = "pk";
pub const ATTR_SK: &str = "sk";
pub const ATTR_GSI1_PK: &str = "gsi1pk";
pub const ATTR_GSI1_SK: &str = "gsi1sk";
/// The TTL attribute (epoch seconds) of request idempotency rows.
pub const ATTR_EXPIRES: &str = "expires_at";
/// The refund row's JSON, projected into `gsi1` so `pending_refunds` needs no second read.
pub const ATTR_REFUND: &str = "refund";
/// A pending refund's send lease (epoch ms): a send holds it until then.
pub const ATTR_IN_FLIGHT: &str = "in_flight_until";
/// A pending refund's count of claimed sends (absent: none).
pub const ATTR_ATTEMPTS: &str = "attempts";
/// A pending refund's generation, bumped by each sweep re-send (absent: 0).
pub const ATTR_GENERATION: &str = "generation";
pub const GSI1: &str = "gsi1";
const ATTR_BODY: &str = "body";
const ATTR_VERSION: &str = "version";
const ATTR_CURRENT: &str = "current";
const ATTR_QRCODE: &str = "qrcode";
const ATTR_DEVICE: &str = "device";

/// How many `gsi1` partitions the deadline entries are spread over.
pub const DUE_SHARDS: u32 = 8;
const PENDING_REFUNDS: &str = "refund#pending";

const SK_DEVICE: &str = "device";
const SK_SESSION: &str = "session";
const SK_TRADE: &str = "trade";
const SK_REQUEST: &str = "request";
const SK_REFUND: &str = "refund";
const SESSION_PREFIX: &str = "ses#";

type Item = HashMap<String, AttributeValue>;

/// The DynamoDB adapter of the storage ports.
#[derive(Clone, Debug)]
pub struct DynamoStore {
    client: Client,
    table: String,
    requests: Arc<AtomicU64>,
}

impl DynamoStore {
    /// An adapter on `table`, with the caller's SDK configuration (region, endpoint, credentials).
    pub fn new(config: &aws_config::SdkConfig, table: impl Into<String>) -> DynamoStore {
        DynamoStore::from_client(Client::new(config), table)
    }

    pub fn from_client(client: Client, table: impl Into<String>) -> DynamoStore {
        DynamoStore {
            client,
            table: table.into(),
            requests: Arc::new(AtomicU64::new(0)),
        }
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    /// Creates this adapter's table from `infra/table.json` (tests and first local runs).
    pub async fn create_table(&self) -> Result<(), StoreError> {
        crate::table::create_table(&self.client, &self.table).await
    }

    /// How many DynamoDB requests this adapter (and its clones) has sent: the cost of a domain event is
    /// the difference across it.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    fn count(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
    }

    async fn get(&self, pk: String, sk: &str) -> Result<Option<Item>, StoreError> {
        self.count();
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key(pk, sk)))
            .consistent_read(true)
            .send()
            .await
            .map_err(classify)?;
        Ok(out.item)
    }

    async fn session_item(&self, id: &SessionId) -> Result<Option<Session>, StoreError> {
        match self.get(session_pk(id), SK_SESSION).await? {
            Some(item) => decode_session(&item).map(Some),
            None => Ok(None),
        }
    }

    /// Sends the actions of one commit as cheaply as they allow.
    async fn write(&self, mut actions: Vec<Action>) -> Result<(), StoreError> {
        match actions.len() {
            0 => Ok(()),
            1 => match actions.pop() {
                Some(Action::Check(c)) => self.check(c).await,
                Some(Action::Put(p)) => self.put(p).await,
                Some(Action::Update(u)) => self.update(u).await,
                None => Ok(()),
            },
            _ => {
                let items = actions
                    .into_iter()
                    .map(|a| a.into_transact(&self.table))
                    .collect::<Result<Vec<_>, _>>()?;
                self.count();
                let sent = self
                    .client
                    .transact_write_items()
                    .set_transact_items(Some(items))
                    .send()
                    .await;
                match sent {
                    Ok(_) => Ok(()),
                    Err(err) => {
                        let cancelled = err
                            .as_service_error()
                            .and_then(|e| match e {
                                aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError::TransactionCanceledException(c) => Some(c.cancellation_reasons().to_vec()),
                                _ => None,
                            });
                        match cancelled {
                            Some(reasons) => {
                                let text =
                                    aws_sdk_dynamodb::error::DisplayErrorContext(&err).to_string();
                                Err(classify_cancellation(&reasons, text))
                            }
                            None => Err(classify(err)),
                        }
                    }
                }
            }
        }
    }

    /// A bare condition check writes nothing, so one consistent read decides it exactly.
    async fn check(&self, c: Check) -> Result<(), StoreError> {
        let Some(item) = self.get(c.pk.clone(), c.sk).await? else {
            return Err(StoreError::Conflict(format!("{} does not exist", c.pk)));
        };
        let version = number(&item, ATTR_VERSION)?;
        if version == c.expected_version {
            Ok(())
        } else {
            Err(StoreError::Conflict(format!(
                "{} is at version {version}, not {}",
                c.pk, c.expected_version
            )))
        }
    }

    async fn put(&self, p: PutAction) -> Result<(), StoreError> {
        self.count();
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(p.item))
            .set_condition_expression(p.cond.expression)
            .set_expression_attribute_names(p.cond.names)
            .set_expression_attribute_values(p.cond.values)
            .send()
            .await
            .map_err(classify)?;
        Ok(())
    }

    async fn update(&self, u: UpdateAction) -> Result<(), StoreError> {
        self.count();
        self.client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(u.pk, u.sk)))
            .update_expression(u.expression)
            .set_condition_expression(u.cond.expression)
            .set_expression_attribute_names(u.cond.names)
            .set_expression_attribute_values(u.cond.values)
            .send()
            .await
            .map_err(classify)?;
        Ok(())
    }

    /// One `gsi1` partition, ascending, at most `limit` entries with `gsi1sk <= upto`.
    async fn query_index(
        &self,
        partition: String,
        upto: Option<i64>,
        limit: usize,
    ) -> Result<Vec<Item>, StoreError> {
        let mut out = Vec::new();
        let mut start: Option<Item> = None;
        let condition = if upto.is_some() {
            "#p = :p AND #s <= :upto"
        } else {
            "#p = :p"
        };
        loop {
            let want = i32::try_from(limit.saturating_sub(out.len())).unwrap_or(i32::MAX);
            let mut q = self
                .client
                .query()
                .table_name(&self.table)
                .index_name(GSI1)
                .key_condition_expression(condition)
                .expression_attribute_names("#p", ATTR_GSI1_PK)
                .expression_attribute_values(":p", AttributeValue::S(partition.clone()))
                .scan_index_forward(true)
                .limit(want)
                .set_exclusive_start_key(start.take());
            if let Some(upto) = upto {
                q = q
                    .expression_attribute_names("#s", ATTR_GSI1_SK)
                    .expression_attribute_values(":upto", AttributeValue::N(upto.to_string()));
            }
            self.count();
            let page = q.send().await.map_err(classify)?;
            out.extend(page.items.unwrap_or_default());
            match page.last_evaluated_key {
                Some(k) if out.len() < limit && !k.is_empty() => start = Some(k),
                _ => break,
            }
        }
        out.truncate(limit);
        Ok(out)
    }
}

#[async_trait]
impl DeviceStore for DynamoStore {
    async fn register(&self, record: &DeviceRecord) -> Result<bool, StoreError> {
        let mut item = key(device_pk(&record.device.id), SK_DEVICE);
        item.insert(ATTR_BODY.into(), json(record)?);
        item.insert(ATTR_VERSION.into(), n(record.version));
        if let Some(current) = &record.current {
            item.insert(ATTR_CURRENT.into(), s(current.as_str()));
        }
        if let Some(qr) = &record.qrcode {
            item.insert(ATTR_QRCODE.into(), json(qr)?);
        }
        let put = PutAction {
            item,
            cond: Cond::not_exists(),
        };
        match self.put(put).await {
            Ok(()) => Ok(true),
            Err(StoreError::Conflict(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    async fn device(&self, id: &DeviceId) -> Result<Option<DeviceRecord>, StoreError> {
        match self.get(device_pk(id), SK_DEVICE).await? {
            Some(item) => decode_device(&item).map(Some),
            None => Ok(None),
        }
    }

    async fn set_qrcode(&self, id: &DeviceId, qrcode: &QrCode) -> Result<(), StoreError> {
        let update = UpdateAction {
            pk: device_pk(id),
            sk: SK_DEVICE,
            expression: "SET #q = :q".into(),
            cond: Cond {
                expression: Some("attribute_exists(#pk)".into()),
                names: Some(names(&[("#pk", ATTR_PK), ("#q", ATTR_QRCODE)])),
                values: Some(HashMap::from([(":q".to_owned(), json(qrcode)?)])),
            },
        };
        match self.update(update).await {
            Err(StoreError::Conflict(_)) => Err(StoreError::Permanent(
                format!("device {id} is not registered").into(),
            )),
            other => other,
        }
    }
}

#[async_trait]
impl SessionStore for DynamoStore {
    async fn machine(&self, id: &DeviceId) -> Result<Option<Machine>, StoreError> {
        let Some(record) = self.device(id).await? else {
            return Ok(None);
        };
        let current = match &record.current {
            Some(sid) => Some(self.session_item(sid).await?.ok_or_else(|| {
                StoreError::Permanent(
                    format!("device {id} names session {sid}, which is missing").into(),
                )
            })?),
            None => None,
        };
        Ok(Some(Machine { record, current }))
    }

    async fn session(&self, id: &SessionId) -> Result<Option<Session>, StoreError> {
        self.session_item(id).await
    }

    async fn trade(&self, trade_no: &TradeNo) -> Result<Option<PaymentOutcome>, StoreError> {
        match self.get(trade_pk(trade_no), SK_TRADE).await? {
            Some(item) => decode_json(&item, ATTR_BODY).map(Some),
            None => Ok(None),
        }
    }

    async fn request(
        &self,
        device: &DeviceId,
        request_id: &RequestId,
    ) -> Result<Option<RequestRecord>, StoreError> {
        match self.get(request_pk(device, request_id), SK_REQUEST).await? {
            Some(item) => decode_json(&item, ATTR_BODY).map(Some),
            None => Ok(None),
        }
    }

    async fn refund(&self, refund_id: &RefundId) -> Result<Option<RefundRecord>, StoreError> {
        match self.get(refund_pk(refund_id), SK_REFUND).await? {
            Some(item) => decode_refund(&item).map(Some),
            None => Ok(None),
        }
    }

    async fn commit(&self, commit: &Commit) -> Result<(), StoreError> {
        self.write(actions(commit)?).await
    }

    async fn due(&self, now: Timestamp, limit: usize) -> Result<Vec<SessionId>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let mut found: Vec<(i64, SessionId)> = Vec::new();
        for shard in 0..DUE_SHARDS {
            for item in self
                .query_index(format!("due#{shard}"), Some(now.millis()), limit)
                .await?
            {
                let at = signed(&item, ATTR_GSI1_SK)?;
                let pk = string(&item, ATTR_PK)?;
                let id = pk
                    .strip_prefix(SESSION_PREFIX)
                    .and_then(|id| id.parse::<SessionId>().ok())
                    .ok_or_else(|| {
                        StoreError::Permanent(
                            format!("deadline index entry {pk:?} is not a session").into(),
                        )
                    })?;
                found.push((at, id));
            }
        }
        found.sort();
        found.truncate(limit);
        Ok(found.into_iter().map(|(_, id)| id).collect())
    }

    async fn pending_refunds(
        &self,
        due_by: Timestamp,
        limit: usize,
    ) -> Result<Vec<RefundRecord>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        // One unreadable item is skipped with an alert, never allowed to hide the others from the
        // sweep (its session still holds the refund).
        let items = self
            .query_index(PENDING_REFUNDS.to_owned(), Some(due_by.millis()), limit)
            .await?;
        let mut out = Vec::with_capacity(items.len());
        for item in &items {
            match decode_json::<RefundRecord>(item, ATTR_REFUND) {
                Ok(r) => out.push(r),
                Err(e) => tracing::error!(
                    alert = "unreadable_row",
                    row = %item_name(item),
                    error = %e,
                    "pending refund item skipped: it cannot be read"
                ),
            }
        }
        Ok(out)
    }
}

// ---- commit → actions -------------------------------------------------------------------------

/// A condition with its placeholders.
#[derive(Debug, Default)]
struct Cond {
    expression: Option<String>,
    names: Option<HashMap<String, String>>,
    values: Option<HashMap<String, AttributeValue>>,
}

impl Cond {
    fn not_exists() -> Cond {
        Cond {
            expression: Some("attribute_not_exists(#pk)".into()),
            names: Some(names(&[("#pk", ATTR_PK)])),
            values: None,
        }
    }

    fn version_is(version: u64) -> Cond {
        Cond {
            expression: Some("#ver = :ver".into()),
            names: Some(names(&[("#ver", ATTR_VERSION)])),
            values: Some(HashMap::from([(":ver".to_owned(), n(version))])),
        }
    }
}

#[derive(Debug)]
struct PutAction {
    item: Item,
    cond: Cond,
}

#[derive(Debug)]
struct UpdateAction {
    pk: String,
    sk: &'static str,
    expression: String,
    cond: Cond,
}

#[derive(Debug)]
struct Check {
    pk: String,
    sk: &'static str,
    expected_version: u64,
}

#[derive(Debug)]
enum Action {
    Put(PutAction),
    Update(UpdateAction),
    Check(Check),
}

impl Action {
    fn into_transact(self, table: &str) -> Result<TransactWriteItem, StoreError> {
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

fn build_error(e: aws_sdk_dynamodb::error::BuildError) -> StoreError {
    StoreError::Permanent(format!("building a DynamoDB request: {e}").into())
}

/// The writes of one commit, each with the condition the port asks for.
fn actions(commit: &Commit) -> Result<Vec<Action>, StoreError> {
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
fn send_action(send: &RefundSend) -> Action {
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

fn device_action(guard: &DeviceGuard) -> Action {
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

fn session_to_item(session: &Session) -> Result<Item, StoreError> {
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

/// The deadline index shard of a session: stable across processes and releases (not `std`'s hasher).
pub fn due_shard(id: &SessionId) -> u32 {
    let digest = Sha256::digest(id.as_str().as_bytes());
    let first = u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]]);
    first % DUE_SHARDS
}

// ---- keys and attribute helpers -------------------------------------------------------------------

fn device_pk(id: &DeviceId) -> String {
    format!("dev#{id}")
}

fn session_pk(id: &SessionId) -> String {
    format!("{SESSION_PREFIX}{id}")
}

fn trade_pk(trade_no: &TradeNo) -> String {
    format!("trade#{trade_no}")
}

fn request_pk(device: &DeviceId, request_id: &RequestId) -> String {
    format!("req#{device}#{request_id}")
}

fn refund_pk(id: &RefundId) -> String {
    format!("ref#{id}")
}

fn key(pk: String, sk: &str) -> Item {
    HashMap::from([
        (ATTR_PK.to_owned(), AttributeValue::S(pk)),
        (ATTR_SK.to_owned(), s(sk)),
    ])
}

fn names(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn s(v: &str) -> AttributeValue {
    AttributeValue::S(v.to_owned())
}

fn n(v: u64) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

fn json<T: Serialize>(v: &T) -> Result<AttributeValue, StoreError> {
    serde_json::to_string(v)
        .map(AttributeValue::S)
        .map_err(|e| StoreError::Permanent(format!("encoding an item: {e}").into()))
}

fn item_name(item: &Item) -> String {
    match item.get(ATTR_PK) {
        Some(AttributeValue::S(pk)) => pk.clone(),
        _ => "an item without pk".to_owned(),
    }
}

fn string<'a>(item: &'a Item, attr: &str) -> Result<&'a str, StoreError> {
    match item.get(attr) {
        Some(AttributeValue::S(v)) => Ok(v),
        other => Err(StoreError::Permanent(
            format!(
                "{}: attribute {attr} is {other:?}, not a string",
                item_name(item)
            )
            .into(),
        )),
    }
}

fn signed(item: &Item, attr: &str) -> Result<i64, StoreError> {
    match item.get(attr) {
        Some(AttributeValue::N(v)) => v.parse().map_err(|_| {
            StoreError::Permanent(
                format!(
                    "{}: attribute {attr} = {v:?} is not an integer",
                    item_name(item)
                )
                .into(),
            )
        }),
        other => Err(StoreError::Permanent(
            format!(
                "{}: attribute {attr} is {other:?}, not a number",
                item_name(item)
            )
            .into(),
        )),
    }
}

fn number(item: &Item, attr: &str) -> Result<u64, StoreError> {
    let v = signed(item, attr)?;
    u64::try_from(v).map_err(|_| {
        StoreError::Permanent(
            format!("{}: attribute {attr} = {v} is negative", item_name(item)).into(),
        )
    })
}

fn decode_json<T: DeserializeOwned>(item: &Item, attr: &str) -> Result<T, StoreError> {
    serde_json::from_str(string(item, attr)?).map_err(|e| {
        StoreError::Permanent(
            format!("{}: attribute {attr} does not decode: {e}", item_name(item)).into(),
        )
    })
}

/// A refund item: its JSON, with the send schedule from the attributes beside it (absent: none yet).
fn decode_refund(item: &Item) -> Result<RefundRecord, StoreError> {
    let mut record: RefundRecord = decode_json(item, ATTR_REFUND)?;
    let count = |attr: &str| -> Result<u32, StoreError> {
        if !item.contains_key(attr) {
            return Ok(0);
        }
        let v = number(item, attr)?;
        u32::try_from(v).map_err(|_| {
            StoreError::Permanent(
                format!("{}: attribute {attr} = {v} is too large", item_name(item)).into(),
            )
        })
    };
    record.attempts = count(ATTR_ATTEMPTS)?;
    record.generation = count(ATTR_GENERATION)?;
    record.in_flight_until = match item.get(ATTR_IN_FLIGHT) {
        None => None,
        Some(_) => Some(Timestamp::from_millis(signed(item, ATTR_IN_FLIGHT)?)),
    };
    Ok(record)
}

fn decode_device(item: &Item) -> Result<DeviceRecord, StoreError> {
    let mut record: DeviceRecord = decode_json(item, ATTR_BODY)?;
    // The attributes are what conditions test and updates change; the body is as registered.
    record.version = number(item, ATTR_VERSION)?;
    record.current = match item.get(ATTR_CURRENT) {
        None => None,
        Some(_) => Some(string(item, ATTR_CURRENT)?.parse().map_err(|e| {
            StoreError::Permanent(
                format!("{}: current is not a session id: {e}", item_name(item)).into(),
            )
        })?),
    };
    if item.contains_key(ATTR_QRCODE) {
        record.qrcode = Some(decode_json(item, ATTR_QRCODE)?);
    }
    Ok(record)
}

fn decode_session(item: &Item) -> Result<Session, StoreError> {
    let session: Session = decode_json(item, ATTR_BODY)?;
    let version = number(item, ATTR_VERSION)?;
    if session.version != version {
        return Err(StoreError::Permanent(
            format!(
                "{}: body has version {}, attribute {version}",
                item_name(item),
                session.version
            )
            .into(),
        ));
    }
    Ok(session)
}

/// DynamoDB's item size: attribute names plus values (strings as UTF-8 bytes; numbers about one byte
/// per two digits, plus one). Used to prove a commit's items fit the 400 KB limit.
pub fn item_size(item: &Item) -> usize {
    item.iter()
        .map(|(name, value)| {
            name.len()
                + match value {
                    AttributeValue::S(v) => v.len(),
                    AttributeValue::N(v) => v.len().div_ceil(2) + 1,
                    other => format!("{other:?}").len(),
                }
        })
        .sum()
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

    #[test]
    fn shards_are_stable_and_spread() {
        let mut seen = [0u32; DUE_SHARDS as usize];
        for i in 0..800 {
            let id: SessionId = format!("s:T{i}").parse().expect("id");
            let shard = due_shard(&id);
            assert_eq!(shard, due_shard(&id));
            seen[shard as usize] += 1;
        }
        assert!(seen.iter().all(|&c| c > 50), "uneven shards: {seen:?}");
    }
}
