//! [`Limited`], a store wrapper that counts each commit's write actions and refuses one over
//! DynamoDB's limit.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use vendpay_domain::*;

use super::Store;
use crate::ports::*;

/// A store that counts the actions of every commit the way DynamoDB does (one per device guard,
/// session, trade row, request row, refund row, send-schedule change and slot row) and refuses one
/// over the 100-action limit, so the suite holds every adapter to the strictest backend's limits.
pub(super) struct Limited<S> {
    pub(super) inner: Arc<S>,
    pub(super) largest: Mutex<usize>,
}

/// DynamoDB's `TransactWriteItems` limit.
pub const MAX_WRITE_ACTIONS: usize = 100;

pub fn commit_actions(c: &Commit) -> usize {
    usize::from(c.device.is_some())
        + c.sessions.len()
        + usize::from(c.trade.is_some())
        + usize::from(c.request.is_some())
        + c.refunds.len()
        + usize::from(c.send.is_some())
        + c.stock.len()
        + usize::from(!c.facts.is_empty())
}

#[async_trait]
impl<S: Store> SessionStore for Limited<S> {
    async fn machine(&self, id: &DeviceId) -> Result<Option<Machine>, StoreError> {
        self.inner.machine(id).await
    }
    async fn session(&self, id: &SessionId) -> Result<Option<Session>, StoreError> {
        self.inner.session(id).await
    }
    async fn trade(&self, t: &TradeNo) -> Result<Option<PaymentOutcome>, StoreError> {
        self.inner.trade(t).await
    }
    async fn request(
        &self,
        d: &DeviceId,
        r: &RequestId,
    ) -> Result<Option<RequestRecord>, StoreError> {
        self.inner.request(d, r).await
    }
    async fn refund(&self, r: &RefundId) -> Result<Option<RefundRecord>, StoreError> {
        self.inner.refund(r).await
    }
    async fn machine_selling(
        &self,
        id: &DeviceId,
        slot: &Slot,
    ) -> Result<Option<(Machine, Option<Product>)>, StoreError> {
        self.inner.machine_selling(id, slot).await
    }
    async fn slots(&self, d: &DeviceId) -> Result<Vec<SlotStock>, StoreError> {
        self.inner.slots(d).await
    }
    async fn product(&self, sku: &Sku) -> Result<Option<Product>, StoreError> {
        self.inner.product(sku).await
    }
    async fn commit(&self, c: &Commit) -> Result<(), StoreError> {
        let n = commit_actions(c);
        if let Ok(mut l) = self.largest.lock() {
            *l = (*l).max(n);
        }
        if n > MAX_WRITE_ACTIONS {
            return Err(StoreError::Permanent(
                format!("a commit of {n} actions (over {MAX_WRITE_ACTIONS})").into(),
            ));
        }
        self.inner.commit(c).await
    }
    async fn due(&self, now: Timestamp, limit: usize) -> Result<Vec<SessionId>, StoreError> {
        self.inner.due(now, limit).await
    }
    async fn pending_refunds(
        &self,
        due_by: Timestamp,
        limit: usize,
    ) -> Result<Vec<RefundRecord>, StoreError> {
        self.inner.pending_refunds(due_by, limit).await
    }
}
