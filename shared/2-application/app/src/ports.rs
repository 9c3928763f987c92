//! The ports: what the service needs from the outside world, as small traits.
//!
//! Adapters sit side by side in their own crates: SQLite + tokio timers (`vendpay-store-sqlite`, the
//! embedded default and the fast tests) and DynamoDB + SQS + EventBridge Scheduler (`vendpay-store-aws`).
//! Both pass the one contract suite in [`crate::contract`].

use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use vendpay_domain::facts::{BuyerHistory, Fact};
use vendpay_domain::{
    Device, DeviceId, Money, PaymentOutcome, Product, RefundId, RefundStatus, Reply, RequestId,
    Session, SessionId, Sku, Slot, SlotStock, SlotWrites, Timestamp, TradeNo,
};

/// Why storage failed. `Conflict` is not a failure of storage: a condition the write was computed under
/// no longer holds, and the caller re-reads and re-applies.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("write conflict: {0}")]
    Conflict(String),
    /// Throttling, timeouts, a busy database: try again.
    #[error("storage unavailable: {0}")]
    Unavailable(#[source] Failure),
    /// An item that cannot be decoded, a table that does not exist: retrying will not help.
    #[error("storage error: {0}")]
    Permanent(#[source] Failure),
}

/// What a store could not do, and the error underneath when there is one (an SDK error, a SQLite
/// error, a failed blocking task), kept as the `source` so whoever handles it can walk the chain.
/// It is `Clone` (one failed group commit answers every commit in it) because the source is shared.
///
/// Its `Display` ends with the source's text too: the log lines print errors with `%e` and never
/// walk the chain, and an operator reading "storage unavailable: reading session 7" needs the why.
#[derive(Debug, Clone)]
pub struct Failure {
    message: String,
    source: Option<Arc<dyn std::error::Error + Send + Sync>>,
    /// The message already tells the source's whole story (an AWS SDK error's context, whose own
    /// `Display` says only "service error"), so `Display` does not repeat it.
    told: bool,
}

impl Failure {
    pub fn new(message: impl Into<String>) -> Failure {
        Failure {
            message: message.into(),
            source: None,
            told: false,
        }
    }

    /// `message` says what was being done; `source` is why it failed.
    pub fn caused_by(
        message: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Failure {
        Failure {
            message: message.into(),
            source: Some(Arc::new(source)),
            told: false,
        }
    }

    /// `description` already describes `source` in full; `source` is kept for the chain.
    pub fn described(
        description: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Failure {
        Failure {
            told: true,
            ..Failure::caused_by(description, source)
        }
    }

    /// What was being done, without the source.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.source {
            Some(source) if !self.told => write!(f, "{}: {source}", self.message),
            _ => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for Failure {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

/// Two failures are the same when they say the same thing (tests compare errors; a source has no
/// equality of its own).
impl PartialEq for Failure {
    fn eq(&self, other: &Failure) -> bool {
        self.to_string() == other.to_string()
    }
}

impl Eq for Failure {}

impl From<String> for Failure {
    fn from(message: String) -> Failure {
        Failure::new(message)
    }
}

impl From<&str> for Failure {
    fn from(message: &str) -> Failure {
        Failure::new(message)
    }
}

impl StoreError {
    pub fn is_retryable(&self) -> bool {
        !matches!(self, StoreError::Permanent(_))
    }
}

/// A merchant QR code of a machine, as Alipay created it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QrCode {
    pub qrcode: String,
    pub qrcode_img_url: String,
}

/// A registered machine.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceRecord {
    pub device: Device,
    pub name: String,
    pub district: String,
    pub location: Option<String>,
    /// What verifies the machine's request signatures: never the secret in clear, but `v1:<salt>`,
    /// from which `vendpay_api::auth` re-derives it. Opaque to storage.
    pub credential: String,
    pub qrcode: Option<QrCode>,
    pub created_at: Timestamp,
    /// The machine's latest session or order (may be settling or closed).
    pub current: Option<SessionId>,
    /// Bumped whenever `current` changes; device-level commands are conditional on it.
    pub version: u64,
}

/// A machine with its current session and its slot rows, as device-level commands read it.
#[derive(Clone, Debug, PartialEq)]
pub struct Machine {
    pub record: DeviceRecord,
    pub current: Option<Session>,
    /// The planogram with stock and reservations (empty: none), ordered by slot.
    pub slots: Vec<SlotStock>,
}

/// The device part of a commit: the version the command read, and the new current session if any.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceGuard {
    pub device: DeviceId,
    pub expected_version: u64,
    /// `Some`: set `current` and bump the version. `None`: only check the version.
    pub new_current: Option<SessionId>,
}

/// An answer to a machine's request, kept so a retry of the same request id gets the same answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestRecord {
    pub device: DeviceId,
    pub request_id: RequestId,
    pub reply: Reply,
    /// Kept at least 48 h (see `docs/architecture.md`, “Storage”); storage may drop it after.
    pub expires_at: Timestamp,
}

/// A refund as the refund executor and the sweeps see it, indexed by its id.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefundRecord {
    pub refund_id: RefundId,
    pub session: SessionId,
    pub trade_no: TradeNo,
    pub amount: Money,
    pub status: RefundStatus,
    pub issued_at: Timestamp,
    /// The send schedule as read (see [`RefundSend`]): kept beside the row's JSON, which is written only
    /// when the refund is issued or its status changes (both reset the schedule). A listing may leave
    /// these at their defaults; [`SessionStore::refund`] reads them exactly.
    #[serde(default)]
    pub attempts: u32,
    #[serde(default)]
    pub generation: u32,
    #[serde(default)]
    pub in_flight_until: Option<Timestamp>,
}

/// Everything one command writes, atomically: all conditions hold and all rows are written, or nothing
/// is (DynamoDB `TransactWriteItems`, one SQLite transaction).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Commit {
    pub device: Option<DeviceGuard>,
    /// Each written only if the stored version is `version - 1` (absent when `version == 1`).
    pub sessions: Vec<Session>,
    /// Trade dedupe row, permanent; written only if absent.
    pub trade: Option<(TradeNo, PaymentOutcome)>,
    /// Idempotency row of a machine request; written only if absent.
    pub request: Option<RequestRecord>,
    /// Refund rows, new ones and status changes (guarded by their session's version in the same write).
    /// A new row's next send is due at once (`issued_at`), with no send in flight.
    pub refunds: Vec<RefundRecord>,
    /// A change to one pending refund's send schedule, alone in its commit (it moves no money).
    pub send: Option<RefundSend>,
    /// Slot rows whose stock or reservations the decision changes; each written only if the stored
    /// row's version is `version - 1` (the row exists: only a planogram creates rows).
    pub stock: Vec<SlotStock>,
    /// The decision's sales facts (see `docs/sales.md`), written unconditionally in the same write:
    /// a fact id already stored is kept as it is.
    pub facts: Vec<Fact>,
}

/// Who may send a pending refund to Alipay, and when. Beside its money, every refund row carries its send
/// schedule: `in_flight_until` (a send holds it until then), `next_attempt_at` (when a send is next
/// expected; the sweep re-sends a refund whose next attempt is overdue by its grace), `attempts` (sends
/// claimed so far) and `generation` (bumped by each sweep re-send; a message of an older generation is
/// dropped). Together they keep at most one send of a refund in flight wherever it runs, one chain of
/// retries per refund, and tell the executor whether an earlier send may have reached Alipay.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RefundSend {
    pub refund_id: RefundId,
    /// The condition; a refund that is not pending never meets it.
    pub when: SendCondition,
    /// Written when the condition holds.
    pub in_flight_until: Option<Timestamp>,
    pub next_attempt_at: Timestamp,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SendCondition {
    /// A send by a message of `generation`: pending, still that generation, `attempts` sends claimed
    /// before, none in flight at `now` (none, or its lease has run out). Counts one more attempt.
    Claim {
        now: Timestamp,
        generation: u32,
        attempts: u32,
    },
    /// The sweep's re-send: pending, still `generation`, none in flight at `now`, next attempt at or
    /// before `due_by`. Bumps the generation (the new message carries it; older ones are dropped).
    Resend {
        now: Timestamp,
        due_by: Timestamp,
        generation: u32,
    },
    /// The send that claimed it until this time still holds it (its release).
    HeldUntil(Timestamp),
}

/// Devices: registration and QR codes.
#[async_trait]
pub trait DeviceStore: Send + Sync {
    /// Registers a machine; `false` (and nothing written) when the id is taken.
    async fn register(&self, record: &DeviceRecord) -> Result<bool, StoreError>;
    async fn device(&self, id: &DeviceId) -> Result<Option<DeviceRecord>, StoreError>;
    /// Records the machine's QR code (idempotent: the same code again is fine).
    async fn set_qrcode(&self, id: &DeviceId, qrcode: &QrCode) -> Result<(), StoreError>;
}

/// Sessions and orders with their ledgers, trade dedupe, request idempotency, refunds.
#[async_trait]
pub trait SessionStore: Send + Sync {
    /// The machine and its current session, in one consistent read where the store allows.
    async fn machine(&self, id: &DeviceId) -> Result<Option<Machine>, StoreError>;
    /// [`SessionStore::machine`] for a command naming `slot`, with the catalogue entry of the product
    /// that slot sells when the slot has no price of its own (`None` otherwise, or outside the slot
    /// map). The product is read beside the session, never after it: no extra round trip.
    async fn machine_selling(
        &self,
        id: &DeviceId,
        slot: &Slot,
    ) -> Result<Option<(Machine, Option<Product>)>, StoreError>;
    async fn session(&self, id: &SessionId) -> Result<Option<Session>, StoreError>;
    /// How a trade was dealt with, if it was ever seen.
    async fn trade(&self, trade_no: &TradeNo) -> Result<Option<PaymentOutcome>, StoreError>;
    async fn request(
        &self,
        device: &DeviceId,
        request_id: &RequestId,
    ) -> Result<Option<RequestRecord>, StoreError>;
    async fn refund(&self, refund_id: &RefundId) -> Result<Option<RefundRecord>, StoreError>;
    /// A machine's slot rows, ordered by slot (empty: no planogram).
    async fn slots(&self, device: &DeviceId) -> Result<Vec<SlotStock>, StoreError>;
    /// A product of the catalogue (a purchase of a slot without its own price needs its price).
    async fn product(&self, sku: &Sku) -> Result<Option<Product>, StoreError>;
    /// Writes a command's decision atomically; `Conflict` when any condition fails.
    async fn commit(&self, commit: &Commit) -> Result<(), StoreError>;
    /// Sessions whose deadline is at or before `now` (the sparse deadline index), oldest first.
    async fn due(&self, now: Timestamp, limit: usize) -> Result<Vec<SessionId>, StoreError>;
    /// Refunds still pending whose next attempt is at or before `due_by` (see [`RefundSend`]), the
    /// earliest due first. The sweep asks for those overdue by its grace (their message was lost);
    /// start-up re-arming asks for all ([`Timestamp::FAR_FUTURE`]).
    async fn pending_refunds(
        &self,
        due_by: Timestamp,
        limit: usize,
    ) -> Result<Vec<RefundRecord>, StoreError>;
}

/// The catalogue and the planograms, as operators change them. Stock changes made by money decisions
/// go through [`SessionStore::commit`] instead, in the same write as the session.
#[async_trait]
pub trait InventoryStore: Send + Sync {
    /// Creates or replaces a product (idempotent).
    async fn put_product(&self, product: &Product) -> Result<(), StoreError>;
    /// Every product, ordered by sku.
    async fn products(&self) -> Result<Vec<Product>, StoreError>;
    /// Writes and removes slot rows of one machine atomically: a written row only if the stored
    /// version is `version - 1` (absent when `version == 1`), a removed row only if the stored version
    /// is its `version`; `Conflict` when any condition fails. Keeps [`InventoryStore::stocked_devices`]
    /// up to date.
    async fn write_slots(&self, device: &DeviceId, writes: &SlotWrites) -> Result<(), StoreError>;
    /// The machines that have a planogram, ordered by id.
    async fn stocked_devices(&self) -> Result<Vec<DeviceId>, StoreError>;
}

/// The sales facts every commit writes (see `docs/sales.md`), read back for reports. Only the embedded
/// store serves reports; on AWS the facts go to S3 and Athena.
#[async_trait]
pub trait FactStore: Send + Sync {
    /// Facts with `from <= at < to`, ordered by `at`, then id.
    async fn facts(&self, from: Timestamp, to: Timestamp) -> Result<Vec<Fact>, StoreError>;
    /// Every buyer with a sale before `before`: their first and latest sale, and its district.
    async fn buyers_before(&self, before: Timestamp) -> Result<Vec<BuyerHistory>, StoreError>;
}

/// Why a queue or scheduler refused a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DispatchError(pub String);

/// A deadline to act on: the session and the deadline it was scheduled for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadlineMessage {
    pub session: SessionId,
    pub at: Timestamp,
}

/// Delivers a [`DeadlineMessage`] to the deadline handler at (or soon after) its time. Messages cannot
/// be cancelled; a stale one is harmless because the handler only acts on what is really due.
#[async_trait]
pub trait DeadlineScheduler: Send + Sync {
    async fn schedule(&self, message: &DeadlineMessage) -> Result<(), DispatchError>;
}

/// A refund to send to Alipay.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefundMessage {
    pub refund_id: RefundId,
    pub session: SessionId,
    /// The refund's generation when this message was sent (0 when issued; each sweep re-send bumps it).
    #[serde(default)]
    pub generation: u32,
}

/// Hands a refund to the refund executor (SQS on AWS, a tokio task locally).
#[async_trait]
pub trait RefundQueue: Send + Sync {
    async fn enqueue(&self, message: &RefundMessage) -> Result<(), DispatchError>;
}

#[cfg(test)]
mod tests {
    use std::error::Error;

    use super::*;

    #[test]
    fn a_store_failure_keeps_its_cause_as_the_source_and_in_its_text() {
        let io = std::io::Error::new(std::io::ErrorKind::TimedOut, "disk slow");
        let e = StoreError::Unavailable(Failure::caused_by("reading session S-1", io));
        assert_eq!(
            e.to_string(),
            "storage unavailable: reading session S-1: disk slow"
        );
        let cause = e.source().and_then(|failure| failure.source());
        assert!(
            cause.is_some_and(|c| c.downcast_ref::<std::io::Error>().is_some()),
            "the io::Error is reachable through the chain"
        );
        assert!(e.is_retryable());
    }

    #[test]
    fn a_failure_described_in_full_does_not_repeat_its_source() {
        let io = std::io::Error::other("service error");
        let e = StoreError::Permanent(Failure::described(
            "ResourceNotFoundException: no table vendpay",
            io,
        ));
        assert_eq!(
            e.to_string(),
            "storage error: ResourceNotFoundException: no table vendpay"
        );
        assert!(e.source().and_then(|f| f.source()).is_some());
        assert!(!e.is_retryable());
        assert_eq!(
            StoreError::Permanent("x".into()),
            StoreError::Permanent(Failure::new("x"))
        );
    }
}
