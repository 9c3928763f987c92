//! The ports: what the service needs from the outside world, as small traits.
//!
//! Adapters sit side by side in their own crates: SQLite + tokio timers (`vendpay-store-sqlite`, the
//! embedded default and the fast tests) and DynamoDB + SQS + EventBridge Scheduler (`vendpay-store-aws`).
//! Both pass the one contract suite in [`crate::contract`].

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use vendpay_domain::{
    Device, DeviceId, Money, PaymentOutcome, RefundId, RefundStatus, Reply, RequestId, Session,
    SessionId, Timestamp, TradeNo,
};

/// Why storage failed. `Conflict` is not a failure of storage: a condition the write was computed under
/// no longer holds, and the caller re-reads and re-applies.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("write conflict: {0}")]
    Conflict(String),
    /// Throttling, timeouts, a busy database: try again.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// An item that cannot be decoded, a table that does not exist: retrying will not help.
    #[error("storage error: {0}")]
    Permanent(String),
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

/// A machine with its current session, as device-level commands read it.
#[derive(Clone, Debug, PartialEq)]
pub struct Machine {
    pub record: DeviceRecord,
    pub current: Option<Session>,
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
    async fn session(&self, id: &SessionId) -> Result<Option<Session>, StoreError>;
    /// How a trade was dealt with, if it was ever seen.
    async fn trade(&self, trade_no: &TradeNo) -> Result<Option<PaymentOutcome>, StoreError>;
    async fn request(
        &self,
        device: &DeviceId,
        request_id: &RequestId,
    ) -> Result<Option<RequestRecord>, StoreError>;
    async fn refund(&self, refund_id: &RefundId) -> Result<Option<RefundRecord>, StoreError>;
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
