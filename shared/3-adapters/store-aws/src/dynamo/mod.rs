//! [`DynamoStore`]: `DeviceStore` + `SessionStore` + `InventoryStore` on one DynamoDB table.
//!
//! # Key design
//!
//! Each entity has its own partition (`pk`) and `sk` names the entity type, except where items are
//! read together: a machine's slot rows share its partition, the catalogue's products one partition,
//! the stocked-machines listing another. All ids are restricted to `[A-Za-z0-9_:.-]` by
//! `vendpay-domain`, so `#` is a safe separator.
//!
//! | entity | `pk` | `sk` | other attributes |
//! |---|---|---|---|
//! | device | `dev#{device_id}` | `device` | `body` (JSON `DeviceRecord`), `version` (N), `current` (S, optional), `qrcode` (JSON, optional) |
//! | slot row (planogram, stock, reservations) | `dev#{device_id}` | `slot#{slot}` | `body` (JSON `SlotStock`), `version` (N) |
//! | product | `catalogue` | `sku#{sku}` | `body` (JSON `Product`) |
//! | stocked machine (listing entry) | `planograms` | `dev#{device_id}` | `slots` (N): how many slot rows the machine has (≥ 1; no entry when none) |
//! | session / order | `ses#{session_id}` | `session` | `body` (JSON `Session`), `version` (N), `device` (S); while due-able: `gsi1pk` = `due#{shard}`, `gsi1sk` = deadline (epoch ms) |
//! | trade dedupe | `trade#{trade_no}` | `trade` | `body` (JSON `PaymentOutcome`); permanent |
//! | request idempotency | `req#{device_id}#{request_id}` | `request` | `body` (JSON `RequestRecord`), `expires_at` (N, epoch s: the TTL attribute) |
//! | refund | `ref#{refund_id}` | `refund` | `refund` (JSON `RefundRecord`); while pending: `gsi1pk` = `refund#pending`, `gsi1sk` = its next attempt (epoch ms; the issue time when written), `in_flight_until` (N, epoch ms, while a send holds it), `attempts` and `generation` (N; absent = 0) — the send schedule, read by `refund` only (the index projects the JSON) |
//! | a decision's sales facts | `facts#{session_id}#{version}` (the first session it writes, at its new version) | `facts` | `facts` (JSON array of `Fact`, see `docs/sales.md`), `expires_at` (N, epoch s: a week, the TTL); written in the decision's `TransactWriteItems`, unconditionally (the key names the decision); the table's stream carries it to `analytics-export` |
//!
//! `gsi1` (`gsi1pk` HASH, `gsi1sk` N RANGE, projecting the keys and `refund`) is sparse and overloaded:
//! a session is in it only while it is not closed and has a deadline; a refund only while pending.
//! The device's `version`/`current`, the session's and the slot row's `version` are attributes beside
//! the JSON body because conditions test them; on read they are taken from (and checked against) the
//! attributes. A slot row's or a product's body must name the row or product of its key.
//!
//! # Access patterns
//!
//! | port call | DynamoDB requests |
//! |---|---|
//! | `register` | `PutItem` device, `attribute_not_exists(pk)` |
//! | `device` | `GetItem` device (consistent) |
//! | `set_qrcode` | `UpdateItem SET qrcode`, `attribute_exists(pk)` (no read-modify-write) |
//! | `machine` | one `Query` of `pk = dev#{id}`: the device item and its slot rows (consistent, paginated); then `GetItem` its current session (consistent) — the planogram costs no extra request |
//! | `slots(device)` | one `Query`: `pk = dev#{id} AND begins_with(sk, "slot#")` (consistent, paginated), in slot order |
//! | `product(sku)` | `GetItem` `catalogue` / `sku#{sku}` (consistent) |
//! | `session`, `trade`, `request`, `refund` | one consistent `GetItem` |
//! | `commit` | one `TransactWriteItems`; one conditional `PutItem`/`UpdateItem` when it holds one write; one consistent `GetItem` when it is a bare device guard (a check writes nothing, so a read is exact) |
//! | `due(now, limit)` | one `Query` per shard on `gsi1`: `gsi1pk = due#{n} AND gsi1sk <= now`, ascending, `Limit` |
//! | `pending_refunds(due_by, limit)` | one `Query` on `gsi1`: `gsi1pk = refund#pending AND gsi1sk <= due_by`, ascending, `Limit` |
//! | `put_product` | `PutItem` (an upsert, unconditional) |
//! | `products` | one `Query` of `pk = catalogue` (consistent, paginated), in sku order |
//! | `write_slots` | when it adds or removes rows, a consistent `GetItem` of the listing entry; then one `TransactWriteItems` (one conditional write when it holds one action) |
//! | `stocked_devices` | one `Query` of `pk = planograms` (consistent, paginated), in id order |
//!
//! `commit` maps the port's conditions one to one: the device guard is a `ConditionCheck` on
//! `version = :expected` (or an `Update` that sets `current` and bumps `version` under that condition);
//! each session is a `Put` on `version = :prev` (`attribute_not_exists(pk)` when creating, version 1);
//! the trade and request rows are `Put`s on `attribute_not_exists(pk)`; refund rows are unconditional
//! `Put`s (guarded by their session's version in the same transaction); a send-schedule change
//! (`RefundSend`) is one `UpdateItem` of the refund item under its condition; each slot row a sale
//! changes (`Commit.stock`) is a `Put` on `version = :prev` — a missing row fails it, as the port asks.
//! A decision with facts adds one `Put` of its facts item (one action however many facts).
//! A purchase that reserves an item is therefore one transaction of device guard, session, request
//! row and slot row: stock and money move together or not at all, and two purchases racing for the
//! last item of a slot cannot both pass the slot row's version.
//!
//! `write_slots` is one transaction too: a new row is a `Put` on `attribute_not_exists(pk)`, a kept row
//! a `Put` on `version = v - 1`, a removed row a `Delete` on `version = v`; when the number of rows
//! changes, the machine's listing entry is written with the new count (or deleted at 0) on the count it
//! read. Every change that adds or removes rows passes that condition, so the count is exact and the
//! entry exists exactly while the machine has rows; a restock (no rows added or removed) leaves it
//! alone. A failed condition is `StoreError::Conflict`: the service re-reads and re-decides. Slot rows
//! and listing entries are the only items this adapter deletes (`Delete` parts of that transaction;
//! the function that serves the admin routes needs `dynamodb:DeleteItem` for them).
//!
//! A slot removed and later created again starts over at version 1 (the domain numbers a new row so),
//! so a sale decided on the old row before both changes would pass the new row's condition. Both
//! changes would have to fall between that sale's read and its write (milliseconds).
//!
//! The limits hold by the domain's bounds: a planogram has at most `MAX_SLOTS` (48) rows, so a
//! replacement is at most 96 actions (48 writes + 48 removals leave the count alone; 48 + 47 write the
//! listing entry too); a decision changes
//! at most `MAX_RESERVED_HOLDS` (20) slot rows beside its other actions (the unit tests of
//! `actions` build the largest of each and count).
//!
//! # Hot keys
//!
//! A purchase of a slot without its own price reads its product (`GetItem` on the catalogue
//! partition), a strongly consistent read of a small item: one partition serves about 3,000 of those
//! a second, and DynamoDB splits a hot partition by sort key (per product). The listing partition is
//! written only by operators' planogram changes.
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
//! The module's parts: this file is the store and its port calls; `actions` turns a `Commit` (or a
//! planogram change) into the actions of one conditional write (and what it costs); `items` holds the
//! attribute names, keys, the item codec and item sizes.

mod actions;
mod items;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_dynamodb::Client;
use vendpay_app::{
    Commit, DeviceRecord, DeviceStore, InventoryStore, Machine, QrCode, RefundRecord,
    RequestRecord, SessionStore,
};
use vendpay_domain::{
    DeviceId, PaymentOutcome, Product, RefundId, RequestId, Session, SessionId, Sku, Slot,
    SlotStock, SlotWrites, Timestamp, TradeNo,
};

use crate::error::{classify, classify_cancellation, StoreError};

pub use actions::{commit_cost, slot_writes_cost, MAX_TRANSACT_ACTIONS};
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
    /// At most this many items per `Query` page of a partition (`None`: DynamoDB's 1 MB pages).
    page: Option<i32>,
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
            page: None,
        }
    }

    /// Caps the items of each `Query` page of a partition (a machine with its slot rows, the
    /// catalogue, the listing), so tests see the pages a large partition gets from DynamoDB's 1 MB
    /// limit. Every read follows `LastEvaluatedKey` either way.
    pub fn with_query_page(mut self, items: i32) -> DynamoStore {
        self.page = Some(items.max(1));
        self
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

    /// Every item of partition `pk` (with `sk` starting with `prefix`, when given), in `sk` order: one
    /// consistent `Query`, followed page by page.
    async fn query_partition(
        &self,
        pk: String,
        prefix: Option<&str>,
    ) -> Result<Vec<Item>, StoreError> {
        let mut out = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let mut q = self
                .client
                .query()
                .table_name(&self.table)
                .consistent_read(true)
                .expression_attribute_names("#p", ATTR_PK)
                .expression_attribute_values(":p", AttributeValue::S(pk.clone()))
                .scan_index_forward(true)
                .set_limit(self.page)
                .set_exclusive_start_key(start.take());
            q = match prefix {
                Some(prefix) => q
                    .key_condition_expression("#p = :p AND begins_with(#s, :prefix)")
                    .expression_attribute_names("#s", ATTR_SK)
                    .expression_attribute_values(":prefix", s(prefix)),
                None => q.key_condition_expression("#p = :p"),
            };
            self.count();
            let page = q.send().await.map_err(classify)?;
            out.extend(page.items.unwrap_or_default());
            match page.last_evaluated_key {
                Some(k) if !k.is_empty() => start = Some(k),
                _ => break,
            }
        }
        Ok(out)
    }

    /// Sends the actions of one write as cheaply as they allow.
    async fn write(&self, mut actions: Vec<Action>) -> Result<(), StoreError> {
        if actions.len() > MAX_TRANSACT_ACTIONS {
            return Err(StoreError::Permanent(
                format!(
                    "a write of {} actions; one transaction holds at most {MAX_TRANSACT_ACTIONS}",
                    actions.len()
                )
                .into(),
            ));
        }
        match actions.len() {
            0 => Ok(()),
            1 => match actions.pop() {
                Some(Action::Check(c)) => self.check(c).await,
                Some(Action::Put(p)) => self.put(p).await,
                Some(Action::Update(u)) => self.update(u).await,
                Some(Action::Delete(d)) => self.delete(d).await,
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
        let Some(item) = self.get(c.pk.clone(), &c.sk).await? else {
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
            .set_key(Some(key(u.pk, &u.sk)))
            .update_expression(u.expression)
            .set_condition_expression(u.cond.expression)
            .set_expression_attribute_names(u.cond.names)
            .set_expression_attribute_values(u.cond.values)
            .send()
            .await
            .map_err(classify)?;
        Ok(())
    }

    async fn delete(&self, d: DeleteAction) -> Result<(), StoreError> {
        self.count();
        self.client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(key(d.pk, &d.sk)))
            .set_condition_expression(d.cond.expression)
            .set_expression_attribute_names(d.cond.names)
            .set_expression_attribute_values(d.cond.values)
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
            sk: SK_DEVICE.to_owned(),
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

/// A slot row, or `None` (with an alert naming it) when it cannot be read: one damaged slot must never
/// stop the machine taking money or its sessions settling (its stock is then simply not kept until
/// an operator fixes the item).
fn readable_slot(item: &Item, device: &DeviceId) -> Option<SlotStock> {
    match decode_slot(item, device) {
        Ok(row) => Some(row),
        Err(e) => {
            tracing::error!(
                alert = "unreadable_row",
                device = %device,
                error = %e,
                "slot item left out: it cannot be read"
            );
            None
        }
    }
}

impl DynamoStore {
    /// The device item (`sk = device`) and its slot rows (`sk = slot#…`), ordered by slot, in one
    /// query. Other item types a later release may add to the partition are left alone.
    async fn device_partition(
        &self,
        id: &DeviceId,
    ) -> Result<Option<(DeviceRecord, Vec<SlotStock>)>, StoreError> {
        let mut record = None;
        let mut slots = Vec::new();
        for item in self.query_partition(device_pk(id), None).await? {
            let sk = string(&item, ATTR_SK)?;
            if sk == SK_DEVICE {
                record = Some(decode_device(&item)?);
            } else if sk.starts_with(SLOT_PREFIX) {
                slots.extend(readable_slot(&item, id));
            }
        }
        slots.sort_by(|a, b| a.slot.cmp(&b.slot));
        Ok(record.map(|r| (r, slots)))
    }

    async fn current_session(
        &self,
        id: &DeviceId,
        record: &DeviceRecord,
    ) -> Result<Option<Session>, StoreError> {
        match &record.current {
            Some(sid) => Ok(Some(self.session_item(sid).await?.ok_or_else(|| {
                StoreError::Permanent(
                    format!("device {id} names session {sid}, which is missing").into(),
                )
            })?)),
            None => Ok(None),
        }
    }
}

#[async_trait]
impl SessionStore for DynamoStore {
    async fn machine(&self, id: &DeviceId) -> Result<Option<Machine>, StoreError> {
        let Some((record, slots)) = self.device_partition(id).await? else {
            return Ok(None);
        };
        let current = self.current_session(id, &record).await?;
        Ok(Some(Machine {
            record,
            current,
            slots,
        }))
    }

    async fn machine_selling(
        &self,
        id: &DeviceId,
        slot: &Slot,
    ) -> Result<Option<(Machine, Option<Product>)>, StoreError> {
        let Some((record, slots)) = self.device_partition(id).await? else {
            return Ok(None);
        };
        let sku = slots
            .iter()
            .find(|r| &r.slot == slot && r.price.is_none())
            .map(|r| r.sku.clone());
        // The session and the product in parallel: the purchase path keeps its round trips.
        let product = async {
            match &sku {
                Some(sku) => self.product(sku).await,
                None => Ok(None),
            }
        };
        let (current, product) = tokio::try_join!(self.current_session(id, &record), product)?;
        Ok(Some((
            Machine {
                record,
                current,
                slots,
            },
            product,
        )))
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

    async fn slots(&self, device: &DeviceId) -> Result<Vec<SlotStock>, StoreError> {
        let mut rows: Vec<SlotStock> = self
            .query_partition(device_pk(device), Some(SLOT_PREFIX))
            .await?
            .iter()
            .filter_map(|item| readable_slot(item, device))
            .collect();
        rows.sort_by(|a, b| a.slot.cmp(&b.slot));
        Ok(rows)
    }

    async fn product(&self, sku: &Sku) -> Result<Option<Product>, StoreError> {
        match self.get(CATALOGUE.to_owned(), &product_sk(sku)).await? {
            Some(item) => decode_product(&item).map(Some),
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

#[async_trait]
impl InventoryStore for DynamoStore {
    async fn put_product(&self, product: &Product) -> Result<(), StoreError> {
        self.put(PutAction {
            item: product_to_item(product)?,
            cond: Cond::default(),
        })
        .await
    }

    async fn products(&self) -> Result<Vec<Product>, StoreError> {
        let mut products = self
            .query_partition(CATALOGUE.to_owned(), Some(SKU_PREFIX))
            .await?
            .iter()
            .map(decode_product)
            .collect::<Result<Vec<_>, _>>()?;
        products.sort_by(|a, b| a.sku.cmp(&b.sku));
        Ok(products)
    }

    async fn write_slots(&self, device: &DeviceId, writes: &SlotWrites) -> Result<(), StoreError> {
        let adds = writes.write.iter().filter(|r| r.version == 1).count();
        // The listing entry's count is read only when this change adds or removes rows; the write is
        // conditional on it.
        let listed = if adds != writes.remove.len() {
            match self.get(PLANOGRAMS.to_owned(), &device_pk(device)).await? {
                Some(item) => Some(decode_listing(&item)?.1),
                None => None,
            }
        } else {
            None
        };
        self.write(slot_actions(device, writes, listed)?).await
    }

    async fn stocked_devices(&self) -> Result<Vec<DeviceId>, StoreError> {
        let mut devices = self
            .query_partition(PLANOGRAMS.to_owned(), Some(DEVICE_PREFIX))
            .await?
            .iter()
            .map(|item| decode_listing(item).map(|(device, _)| device))
            .collect::<Result<Vec<_>, _>>()?;
        devices.sort();
        Ok(devices)
    }
}
