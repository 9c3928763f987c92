//! The final checks of a scenario: the operator's view of the session (phase, spent, payments,
//! refunds, the money invariant) and what the Alipay sandbox confirmed.

use super::view::{fen, list, minor, money, text};
use super::{Demo, Step};

/// What a finished session must look like.
pub(super) struct Expect<'a> {
    pub phase: &'a str,
    pub spent: u64,
    pub payments: usize,
    /// `(minor, reason)`; a reason ending in `*` matches by prefix.
    pub refunds: &'a [(u64, &'a str)],
}

impl<'a> Expect<'a> {
    /// Closed after one payment, with `spent` spent and these refunds.
    pub(super) fn closed(spent: u64, refunds: &'a [(u64, &'a str)]) -> Expect<'a> {
        Expect {
            phase: "closed",
            spent,
            payments: 1,
            refunds,
        }
    }
}

/// `a; b` or `none`.
fn describe(items: impl Iterator<Item = String>) -> String {
    let v: Vec<String> = items.collect();
    if v.is_empty() {
        "none".to_owned()
    } else {
        v.join("; ")
    }
}

impl Demo {
    /// The final checks of a scenario.
    pub(super) async fn verify(
        &mut self,
        session_id: &str,
        trade: &str,
        want: Expect<'_>,
    ) -> Step<()> {
        let s = self.session(session_id).await?;
        self.check(
            text(&s, "phase") == want.phase,
            format!(
                "session {session_id} is {} (want {})",
                text(&s, "phase"),
                want.phase
            ),
        );
        self.check(
            minor(&s["spent"]) == want.spent,
            format!("spent {} (want {})", money(&s["spent"]), fen(want.spent)),
        );
        let payments = list(&s, "payments");
        self.check(
            payments.len() == want.payments,
            format!(
                "{} payment(s) recorded (want {})",
                payments.len(),
                want.payments
            ),
        );
        let got: Vec<(u64, String, String)> = list(&s, "refunds")
            .iter()
            .map(|r| {
                (
                    minor(&r["amount"]),
                    text(r, "reason").to_owned(),
                    text(r, "status").to_owned(),
                )
            })
            .collect();
        let matches = got.len() == want.refunds.len()
            && got
                .iter()
                .zip(want.refunds)
                .all(|((a, reason, status), (wa, wr))| {
                    let reason_ok = match wr.strip_suffix('*') {
                        Some(prefix) => reason.starts_with(prefix),
                        None => reason == wr,
                    };
                    a == wa && reason_ok && status == "succeeded"
                });
        self.check(
            matches,
            format!(
                "refunds: {} (want {})",
                describe(got.iter().map(|(a, r, st)| format!("{} {r} {st}", fen(*a)))),
                describe(
                    want.refunds
                        .iter()
                        .map(|(a, r)| format!("{} {r} succeeded", fen(*a)))
                )
            ),
        );
        let paid: u64 = payments.iter().map(|p| minor(&p["amount"])).sum();
        let refunded: u64 = got.iter().map(|(a, _, _)| a).sum();
        let (spent, held, balance) = (minor(&s["spent"]), minor(&s["held"]), minor(&s["balance"]));
        self.check(
            paid == spent + held + balance + refunded,
            format!(
                "payments {} = spent {} + held {} + balance {} + refunds {}",
                fen(paid),
                fen(spent),
                fen(held),
                fen(balance),
                fen(refunded)
            ),
        );
        let confirmed: u64 = self
            .client
            .sandbox_list("refunds")
            .await?
            .iter()
            .filter(|r| text(r, "trade_no") == trade && text(r, "verdict") == "succeeded")
            .map(|r| minor(&r["amount"]))
            .sum();
        let want_total: u64 = want.refunds.iter().map(|(a, _)| a).sum();
        self.check(
            confirmed == want_total,
            format!(
                "the Alipay sandbox confirmed refunds of {} on trade {trade} (want {})",
                fen(confirmed),
                fen(want_total)
            ),
        );
        Ok(())
    }

    /// Waits (up to `wait`) for the session to be closed with every refund succeeded, then checks it.
    pub(super) async fn settle(
        &mut self,
        session_id: &str,
        trade: &str,
        what: &str,
        wait: std::time::Duration,
        want: Expect<'_>,
    ) -> Step<()> {
        self.watch_session(session_id, what, wait, super::view::settled)
            .await?;
        self.verify(session_id, trade, want).await
    }
}
