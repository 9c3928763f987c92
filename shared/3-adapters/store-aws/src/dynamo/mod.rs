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
//!
//! The module's parts: this file is the store and its port calls; `actions` turns a `Commit` into
//! the actions of one conditional write (and what it costs); `items` holds the attribute names, keys,
//! the item codec and item sizes.

mod actions;
mod items;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_dynamodb::Client;
use vendpay_app::{
    Commit, DeviceRecord, DeviceStore, Machine, QrCode, RefundRecord, RequestRecord, SessionStore,
};
use vendpay_domain::{
    DeviceId, PaymentOutcome, RefundId, RequestId, Session, SessionId, Timestamp, TradeNo,
};

use crate::error::{classify, classify_cancellation, StoreError};

pub use actions::commit_cost;
pub use items::{
    due_shard, item_size, ATTR_ATTEMPTS, ATTR_EXPIRES, ATTR_GENERATION, ATTR_GSI1_PK, ATTR_GSI1_SK,
    ATTR_IN_FLIGHT, ATTR_PK, ATTR_REFUND, ATTR_SK, DUE_SHARDS, GSI1,
};

use self::actions::*;
use self::items::*;

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
