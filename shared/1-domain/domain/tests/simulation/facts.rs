//! The facts auditor: every decision's sales facts (`vendpay_domain::facts::facts_of`, as the
//! service derives them before its commit) must replay to the same totals as the sessions they
//! describe — per session after every step, per machine and currency at the end of each run:
//! Σ payment facts = Σ payments, Σ sale facts = spent, Σ issued refund facts = Σ refunds, Σ failed
//! vend facts = Σ failed purchases' prices — and each fact must be new (its id never seen before:
//! re-applying a decision adds none), name its session's machine and currency, and carry the buyer
//! only as the key of the session's buyer.

use std::collections::{BTreeMap, HashMap, HashSet};

use vendpay_domain::facts::{facts_of, AnalyticsKey, Fact, FactContext, FactKind, Place};
use vendpay_domain::*;

use crate::world::{Before, World};

const KEY: &[u8] = b"simulation analytics key";

/// What the facts of one session (or one machine in one currency) add up to.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Totals {
    pub(crate) payments: u64,
    pub(crate) sales: u64,
    pub(crate) refunds_issued: u64,
    pub(crate) vend_failed: u64,
    /// Refunds with a final-status fact.
    pub(crate) refunds_final: HashSet<RefundId>,
}

impl Totals {
    fn add(&mut self, f: &Fact) -> Result<(), String> {
        match (f.kind, f.status.as_deref()) {
            (FactKind::Payment, _) => self.payments += f.amount,
            (FactKind::Sale, _) => self.sales += f.amount,
            (FactKind::VendFailed, _) => self.vend_failed += f.amount,
            (FactKind::Refund, Some("issued")) => self.refunds_issued += f.amount,
            (FactKind::Refund, Some("succeeded" | "failed")) => {
                let id = f
                    .refund_id
                    .clone()
                    .ok_or("a final refund fact names no refund")?;
                self.refunds_final.insert(id);
            }
            (FactKind::Refund, other) => return Err(format!("refund fact with status {other:?}")),
            (FactKind::Anomaly, _) => {}
        }
        Ok(())
    }

    /// The totals a session's own records call for.
    fn of_session(s: &Session) -> Totals {
        Totals {
            payments: s.payments.iter().map(|p| p.amount.minor()).sum(),
            sales: s.spent.minor(),
            refunds_issued: s.refunds.iter().map(|r| r.amount.minor()).sum(),
            vend_failed: s
                .purchases
                .iter()
                .filter(|p| p.status == PurchaseStatus::Failed)
                .map(|p| p.price.minor())
                .sum(),
            refunds_final: s
                .refunds
                .iter()
                .filter(|r| r.status.is_final())
                .map(|r| r.id.clone())
                .collect(),
        }
    }

    fn merge(&mut self, other: &Totals) {
        self.payments += other.payments;
        self.sales += other.sales;
        self.refunds_issued += other.refunds_issued;
        self.vend_failed += other.vend_failed;
        self.refunds_final
            .extend(other.refunds_final.iter().cloned());
    }
}

pub(crate) struct FactBook {
    key: AnalyticsKey,
    ids: HashSet<String>,
    sessions: HashMap<SessionId, Totals>,
    machines: BTreeMap<(DeviceId, Currency), Totals>,
    pub(crate) stats: BTreeMap<String, u64>,
}

impl Default for FactBook {
    fn default() -> Self {
        FactBook {
            key: AnalyticsKey::new(KEY.to_vec()),
            ids: HashSet::new(),
            sessions: HashMap::new(),
            machines: BTreeMap::new(),
            stats: BTreeMap::new(),
        }
    }
}

impl FactBook {
    /// Books the facts of a transition just applied (`before`: the sessions it overwrote) and checks
    /// every session it wrote against them.
    pub(crate) fn record(
        &mut self,
        t: &Transition,
        before: &Before,
        now: Timestamp,
    ) -> Result<(), String> {
        let prior: HashMap<SessionId, &Session> = t
            .sessions
            .iter()
            .zip(&before.sessions)
            .filter_map(|(s, old)| old.as_ref().map(|o| (s.id.clone(), o)))
            .collect();
        let place = Place {
            district: "sim".into(),
            location: None,
        };
        let names = BTreeMap::new();
        let ctx = FactContext {
            key: &self.key,
            place: Some(&place),
            products: &names,
        };
        for f in facts_of(t, &prior, &ctx, now) {
            if !self.ids.insert(f.id.clone()) {
                return Err(format!("fact {} recorded twice", f.id));
            }
            let s = t
                .session(&f.session)
                .ok_or_else(|| format!("fact {} names session {} not written", f.id, f.session))?;
            if f.device != s.device_id || f.currency != s.currency || f.at != now {
                return Err(format!("fact {f:?} does not match its session {}", s.id));
            }
            let buyer = s.payments.iter().find_map(|p| p.buyer_id.as_ref());
            if f.buyer_key != buyer.map(|b| self.key.buyer_key(b)) {
                return Err(format!("fact {} carries buyer key {:?}", f.id, f.buyer_key));
            }
            if buyer.is_some_and(|b| {
                f.buyer_key
                    .as_ref()
                    .is_some_and(|k| k.as_str() == b.as_str())
            }) {
                return Err(format!("fact {} carries a raw buyer id", f.id));
            }
            *self
                .stats
                .entry(format!(
                    "fact {}{}",
                    f.kind.as_str(),
                    f.status
                        .as_deref()
                        .map(|s| format!(" {s}"))
                        .unwrap_or_default()
                ))
                .or_default() += 1;
            self.sessions.entry(s.id.clone()).or_default().add(&f)?;
            self.machines
                .entry((s.device_id.clone(), s.currency))
                .or_default()
                .add(&f)?;
        }
        for s in &t.sessions {
            let from_facts = self.sessions.get(&s.id).cloned().unwrap_or_default();
            let from_session = Totals::of_session(s);
            if from_facts != from_session {
                return Err(format!(
                    "session {}: its facts add up to {from_facts:?}, the session to {from_session:?}",
                    s.id
                ));
            }
        }
        Ok(())
    }

    /// At the end of a run: per machine and currency, the facts add up to the stored sessions.
    pub(crate) fn check_machines(&self, world: &World) -> Result<(), String> {
        let mut stored: BTreeMap<(DeviceId, Currency), Totals> = BTreeMap::new();
        for s in world.sessions.values() {
            stored
                .entry((s.device_id.clone(), s.currency))
                .or_default()
                .merge(&Totals::of_session(s));
        }
        let from_facts: BTreeMap<_, _> = self
            .machines
            .iter()
            .filter(|(_, t)| **t != Totals::default())
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        stored.retain(|_, t| *t != Totals::default());
        if from_facts != stored {
            for (k, v) in &stored {
                if from_facts.get(k) != Some(v) {
                    return Err(format!(
                        "machine {} in {}: facts add up to {:?}, its sessions to {v:?}",
                        k.0,
                        k.1,
                        from_facts.get(k)
                    ));
                }
            }
            return Err("facts name a machine and currency with no sessions".into());
        }
        Ok(())
    }
}
