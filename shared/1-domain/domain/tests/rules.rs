//! One example per money rule (see `docs/contract.md`, “Money rules”), readable as a
//! specification.
//!
//! Longer than most files on purpose: it is the rulebook, one section per rule in the order of the
//! contract, and a reader checks a rule by reading its section; every test stands alone.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code asserts by panicking

mod common;

use common::*;
use vendpay_domain::*;

fn only_refund(m: &TestMachine, session: &SessionId) -> RefundId {
    let s = m.session(session);
    assert_eq!(s.refunds.len(), 1, "{:?}", s.refunds);
    s.refunds[0].id.clone()
}

#[test]
fn pay_first_demo_flow_refunds_what_is_left_at_the_deadline() {
    let mut m = TestMachine::new(Mode::PayFirst);
    let t = m.pay(&payment("T1", cny(1000), Some("2088A"), 0), 0);
    let o = outcome(&t);
    assert_eq!(o.disposition, Disposition::Credited);
    assert!(t.effects.contains(&Effect::ScheduleDeadline {
        session: o.session.clone(),
        at: at(300)
    }));

    let a = purchase(&m.buy("r1", 350, 10));
    assert!(a.approved());
    assert_eq!(a.balance, cny(650));
    let b = purchase(&m.buy("r2", 350, 20));
    assert_eq!(b.balance, cny(300));
    let c = purchase(&m.buy("r3", 350, 25));
    assert_eq!(c.declined, Some(DeclineReason::InsufficientBalance));
    assert_eq!(c.balance, cny(300));

    m.vend(&o.session, "r1", true, 30);
    m.vend(&o.session, "r2", false, 31);
    let s = m.session(&o.session);
    assert_eq!((s.balance, s.held, s.spent), (cny(650), cny(0), cny(350)));

    assert!(m.deadline(&o.session, 299).is_noop(), "not due yet");
    let t = m.deadline(&o.session, 300);
    assert_eq!(refunds(&t), vec![("T1".into(), 650)]);
    assert_eq!(m.session(&o.session).phase, Phase::Settling);
    let id = only_refund(&m, &o.session);
    assert_eq!(id.as_str(), "T1-r1");
    let t = m.settle(&o.session, &id, RefundOutcome::Succeeded, 301);
    assert!(t.effects.contains(&Effect::Close {
        session: o.session.clone()
    }));
    assert_eq!(m.session(&o.session).phase, Phase::Closed);
}

#[test]
fn a_top_up_restarts_the_window_and_refunds_split_newest_first() {
    let mut m = TestMachine::new(Mode::PayFirst);
    let s = outcome(&m.pay(&payment("T1", cny(100), None, 0), 0)).session;
    m.pay(&payment("T2", cny(200), Some("2088A"), 100), 100);
    let t = m.pay(&payment("T3", cny(500), Some("2088A"), 200), 200);
    assert!(t.effects.contains(&Effect::ScheduleDeadline {
        session: s.clone(),
        at: at(500)
    }));
    assert!(
        m.deadline(&s, 300).is_noop(),
        "the first window was restarted"
    );
    m.buy("r1", 100, 210);
    m.vend(&s, "r1", true, 211);
    // 700 left: all of the newest payment, then 200 of the one before; the oldest is untouched.
    let t = m.deadline(&s, 500);
    assert_eq!(refunds(&t), vec![("T3".into(), 500), ("T2".into(), 200)]);
}

#[test]
fn a_payment_by_another_buyer_on_a_busy_machine_is_refunded_in_full() {
    let mut m = TestMachine::new(Mode::PayFirst);
    let s = outcome(&m.pay(&payment("T1", cny(1000), Some("2088A"), 0), 0)).session;
    let t = m.pay(&payment("T2", cny(300), Some("2088B"), 5), 5);
    let o = outcome(&t);
    assert_eq!(
        o.disposition,
        Disposition::Refused(RefusalReason::MachineBusy)
    );
    assert_ne!(o.session, s);
    assert_eq!(refunds(&t), vec![("T2".into(), 300)]);
    assert_eq!(
        m.current.as_ref(),
        Some(&s),
        "the open session stays current"
    );
    assert_eq!(m.session(&s).balance, cny(1000));
    // A payment without a buyer id cannot be told apart: it tops up.
    let o = outcome(&m.pay(&payment("T3", cny(100), None, 6), 6));
    assert_eq!(
        (o.session, o.disposition),
        (s.clone(), Disposition::Credited)
    );
}

#[test]
fn a_session_whose_money_runs_out_closes_at_once_without_a_refund() {
    let mut m = TestMachine::new(Mode::PayFirst);
    let s = outcome(&m.pay(&payment("T1", cny(350), None, 0), 0)).session;
    assert!(purchase(&m.buy("r1", 350, 1)).approved());
    assert_eq!(m.session(&s).phase, Phase::Open, "a hold is outstanding");
    let t = m.vend(&s, "r1", true, 2);
    assert!(refunds(&t).is_empty());
    assert_eq!(m.session(&s).phase, Phase::Closed);
    assert!(m.deadline(&s, 300).is_noop());
    let d = purchase(&m.buy("r2", 10, 3));
    assert_eq!(d.declined, Some(DeclineReason::NoSession));
}

#[test]
fn an_unconfirmed_hold_at_the_deadline_is_refunded_and_flagged() {
    let mut m = TestMachine::new(Mode::PayFirst);
    let s = outcome(&m.pay(&payment("T1", cny(1000), None, 0), 0)).session;
    m.buy("r1", 400, 10);
    let t = m.deadline(&s, 300);
    assert_eq!(refunds(&t), vec![("T1".into(), 1000)]);
    assert!(t.effects.iter().any(|e| matches!(e,
        Effect::Anomaly { anomaly: Anomaly { kind: AnomalyKind::UnconfirmedVend { request_id }, .. }, .. }
        if request_id.as_str() == "r1")));
    // The vend result arrives after all: no money moves, the goods went out free, it is flagged once.
    let t = m.vend(&s, "r1", true, 320);
    assert!(refunds(&t).is_empty());
    assert!(matches!(
        t.reply,
        Reply::Vend {
            status: PurchaseStatus::Unconfirmed,
            ..
        }
    ));
    assert_eq!(m.session(&s).anomalies.len(), 2);
    assert!(m.vend(&s, "r1", true, 321).is_noop());
}

#[test]
fn ending_early_refunds_the_free_balance_at_once_and_the_hold_when_it_fails() {
    let mut m = TestMachine::new(Mode::PayFirst);
    let s = outcome(&m.pay(&payment("T1", cny(1000), None, 0), 0)).session;
    m.buy("r1", 400, 10);
    let t = m.end(20);
    assert_eq!(refunds(&t), vec![("T1".into(), 600)]);
    assert_eq!(m.session(&s).phase, Phase::Settling);
    assert_eq!(
        m.session(&s).deadline_at,
        Some(at(300)),
        "the hold still has a deadline"
    );
    let t = m.vend(&s, "r1", false, 30);
    assert_eq!(refunds(&t), vec![("T1".into(), 400)]);
    assert_eq!(m.session(&s).refunds[1].id.as_str(), "T1-r2");
    let ids: Vec<_> = m.session(&s).refunds.iter().map(|r| r.id.clone()).collect();
    m.settle(&s, &ids[0], RefundOutcome::Succeeded, 31);
    assert_eq!(m.session(&s).phase, Phase::Settling);
    m.settle(&s, &ids[1], RefundOutcome::Succeeded, 32);
    assert_eq!(m.session(&s).phase, Phase::Closed);
}

#[test]
fn a_settling_session_does_not_block_the_machine() {
    let mut m = TestMachine::new(Mode::PayFirst);
    let s1 = outcome(&m.pay(&payment("T1", cny(1000), Some("2088A"), 0), 0)).session;
    m.end(5);
    let o = outcome(&m.pay(&payment("T2", cny(200), Some("2088B"), 6), 6));
    assert_eq!(o.disposition, Disposition::Credited);
    assert_ne!(o.session, s1);
    assert_eq!(m.current.as_ref(), Some(&o.session));
}

#[test]
fn a_payment_after_an_unprocessed_deadline_settles_the_old_session_first() {
    let mut m = TestMachine::new(Mode::PayFirst);
    let s1 = outcome(&m.pay(&payment("T1", cny(1000), None, 0), 0)).session;
    // The deadline message is late; the next customer pays at 301 s.
    let t = m.pay(&payment("T2", cny(200), None, 301), 301);
    assert_eq!(refunds(&t), vec![("T1".into(), 1000)]);
    let o = outcome(&t);
    assert_ne!(o.session, s1);
    assert_eq!(m.session(&o.session).balance, cny(200));
    assert_eq!(m.session(&s1).phase, Phase::Settling);
}

#[test]
fn purchase_first_exact_payment_is_delivered_and_closes() {
    let mut m = TestMachine::new(Mode::PurchaseFirst);
    let t = m.order("o1", 400, 0);
    let Reply::Session { session } = t.reply.clone() else {
        panic!("{:?}", t.reply)
    };
    assert!(t.effects.contains(&Effect::ScheduleDeadline {
        session: session.clone(),
        at: at(120)
    }));
    let t = m.pay(&payment("T1", cny(400), None, 10), 10);
    assert_eq!(outcome(&t).disposition, Disposition::OrderPaid);
    assert!(t.effects.contains(&Effect::Approve {
        session: session.clone(),
        request_id: req("o1"),
        price: cny(400)
    }));
    assert!(t.effects.contains(&Effect::ScheduleDeadline {
        session: session.clone(),
        at: at(35)
    }));
    assert!(refunds(&t).is_empty());
    let t = m.vend(&session, "o1", true, 15);
    assert!(t.effects.contains(&Effect::Close {
        session: session.clone()
    }));
    assert_eq!(m.session(&session).spent, cny(400));
}

#[test]
fn purchase_first_over_payment_is_refunded_at_once() {
    let mut m = TestMachine::new(Mode::PurchaseFirst);
    m.order("o1", 400, 0);
    let t = m.pay(&payment("T1", cny(500), None, 10), 10);
    assert_eq!(refunds(&t), vec![("T1".into(), 100)]);
    let s = outcome(&t).session;
    m.vend(&s, "o1", true, 12);
    assert_eq!(
        m.session(&s).phase,
        Phase::Settling,
        "the over-payment refund is not final yet"
    );
    let id = only_refund(&m, &s);
    m.settle(&s, &id, RefundOutcome::Succeeded, 13);
    assert_eq!(m.session(&s).phase, Phase::Closed);
}

#[test]
fn purchase_first_under_payment_is_refunded_and_the_order_stays_open() {
    let mut m = TestMachine::new(Mode::PurchaseFirst);
    let order_session = match m.order("o1", 400, 0).reply {
        Reply::Session { session } => session,
        other => panic!("{other:?}"),
    };
    let t = m.pay(&payment("T1", cny(300), None, 10), 10);
    assert_eq!(
        outcome(&t).disposition,
        Disposition::Refused(RefusalReason::Underpaid)
    );
    assert_eq!(refunds(&t), vec![("T1".into(), 300)]);
    assert_eq!(
        m.session(&order_session).order().map(|o| o.status),
        Some(OrderStatus::AwaitingPayment)
    );
    let t = m.pay(&payment("T2", cny(400), None, 20), 20);
    assert_eq!(outcome(&t).disposition, Disposition::OrderPaid);
}

#[test]
fn purchase_first_payment_without_or_after_an_order_is_refunded_in_full() {
    let mut m = TestMachine::new(Mode::PurchaseFirst);
    let t = m.pay(&payment("T0", cny(300), None, 0), 0);
    assert_eq!(
        outcome(&t).disposition,
        Disposition::Refused(RefusalReason::NoOrder)
    );
    assert_eq!(refunds(&t), vec![("T0".into(), 300)]);

    m.order("o1", 400, 10);
    let t = m.pay(&payment("T1", cny(400), None, 131), 131);
    assert_eq!(
        outcome(&t).disposition,
        Disposition::Refused(RefusalReason::OrderExpired)
    );
    assert_eq!(refunds(&t), vec![("T1".into(), 400)]);
    let order_session = SessionId::for_order(&m.device.id, &order("o1"));
    let s = m.session(&order_session);
    assert_eq!(s.order().map(|o| o.status), Some(OrderStatus::Expired));
    assert_eq!(s.phase, Phase::Closed);
}

#[test]
fn purchase_first_failed_or_unconfirmed_delivery_is_refunded_in_full() {
    let mut m = TestMachine::new(Mode::PurchaseFirst);
    m.order("o1", 400, 0);
    let s = outcome(&m.pay(&payment("T1", cny(500), None, 1), 1)).session;
    let t = m.vend(&s, "o1", false, 5);
    assert_eq!(refunds(&t), vec![("T1".into(), 400)]);
    assert_eq!(m.session(&s).total_refunded(), Ok(cny(500)));

    m.order("o2", 400, 10);
    let s = outcome(&m.pay(&payment("T2", cny(400), None, 11), 11)).session;
    assert!(m.deadline(&s, 35).is_noop());
    let t = m.deadline(&s, 36);
    assert_eq!(refunds(&t), vec![("T2".into(), 400)]);
    assert_eq!(
        m.session(&s).order().map(|o| o.status),
        Some(OrderStatus::Unconfirmed)
    );
    assert_eq!(m.session(&s).anomalies.len(), 1);
}

#[test]
fn a_payment_while_an_order_is_being_delivered_is_refunded_machine_busy() {
    let mut m = TestMachine::new(Mode::PurchaseFirst);
    m.order("o1", 400, 0);
    m.pay(&payment("T1", cny(400), None, 1), 1);
    let t = m.pay(&payment("T2", cny(400), None, 2), 2);
    assert_eq!(
        outcome(&t).disposition,
        Disposition::Refused(RefusalReason::MachineBusy)
    );
    let err = place_order(
        &m.device,
        m.current(),
        &order("o2"),
        &slot("B1"),
        Some(cny(100)),
        &Shelves::NONE,
        &m.windows,
        at(3),
    );
    assert!(matches!(err, Err(Rejection::Busy(_))));
}

#[test]
fn mixed_mode_pays_the_awaiting_order_else_opens_a_session() {
    let mut m = TestMachine::new(Mode::Mixed);
    let o = outcome(&m.pay(&payment("T1", cny(500), None, 0), 0));
    assert_eq!(o.disposition, Disposition::Credited);
    m.end(1);
    m.order("o1", 200, 2);
    let o = outcome(&m.pay(&payment("T2", cny(200), None, 3), 3));
    assert_eq!(o.disposition, Disposition::OrderPaid);
}

#[test]
fn a_new_order_replaces_an_unpaid_one() {
    let mut m = TestMachine::new(Mode::PurchaseFirst);
    m.order("o1", 400, 0);
    let t = m.order("o2", 300, 5);
    let first = SessionId::for_order(&m.device.id, &order("o1"));
    assert_eq!(
        m.session(&first).order().map(|o| o.status),
        Some(OrderStatus::Cancelled)
    );
    assert_eq!(m.session(&first).phase, Phase::Closed);
    assert!(t.current.is_some());
    let o = outcome(&m.pay(&payment("T1", cny(300), None, 6), 6));
    assert_eq!(o.disposition, Disposition::OrderPaid);
    assert_eq!(o.session, SessionId::for_order(&m.device.id, &order("o2")));
}

#[test]
fn a_payment_in_another_currency_is_never_credited() {
    let mut m = TestMachine::new(Mode::PayFirst);
    let usd = Money::new(500, Currency::Usd).expect("usd");
    let t = m.pay(&payment("T1", usd, None, 0), 0);
    let o = outcome(&t);
    assert_eq!(
        o.disposition,
        Disposition::Refused(RefusalReason::CurrencyMismatch)
    );
    assert_eq!(refunds(&t), vec![("T1".into(), 500)]);
    let s = m.session(&o.session);
    assert_eq!(
        s.currency,
        Currency::Usd,
        "refunded in the trade's own currency"
    );
    assert_eq!(s.anomalies.len(), 1);
    assert_eq!(m.current, None, "nothing was opened");
}

#[test]
fn machine_requests_are_checked() {
    let mut m = TestMachine::new(Mode::PayFirst);
    m.pay(&payment("T1", cny(500), None, 0), 0);
    let usd = Money::new(100, Currency::Usd).expect("usd");
    let r = request_purchase(
        &m.device,
        m.current(),
        &buy_req("r1", "A", usd, None),
        &Shelves::NONE,
        &m.windows,
        at(1),
    );
    assert_eq!(
        r.err(),
        Some(Rejection::CurrencyMismatch {
            expected: Currency::Cny,
            got: Currency::Usd
        })
    );
    let r = request_purchase(
        &m.device,
        m.current(),
        &buy_req("r1", "A", cny(0), None),
        &Shelves::NONE,
        &m.windows,
        at(1),
    );
    assert_eq!(r.err(), Some(Rejection::NonPositivePrice));
    m.buy("r1", 100, 2);
    let r = request_purchase(
        &m.device,
        m.current(),
        &buy_req("r1", "A1", cny(200), None),
        &Shelves::NONE,
        &m.windows,
        at(3),
    );
    assert!(matches!(r, Err(Rejection::RequestConflict(_))));
    let r = place_order(
        &m.device,
        m.current(),
        &order("o"),
        &slot("A"),
        Some(cny(1)),
        &Shelves::NONE,
        &m.windows,
        at(3),
    );
    assert!(matches!(r, Err(Rejection::ModeNotSupported { .. })));
}

#[test]
fn a_permanently_failed_refund_is_flagged_and_final() {
    let mut m = TestMachine::new(Mode::PayFirst);
    let s = outcome(&m.pay(&payment("T1", cny(500), None, 0), 0)).session;
    m.end(1);
    let id = only_refund(&m, &s);
    assert!(m.settle(&s, &id, RefundOutcome::Unknown, 2).is_noop());
    let t = m.settle(&s, &id, RefundOutcome::FailedPermanently, 3);
    assert!(t.effects.iter().any(|e| matches!(
        e,
        Effect::Anomaly {
            anomaly: Anomaly {
                kind: AnomalyKind::RefundFailed { .. },
                ..
            },
            ..
        }
    )));
    assert_eq!(m.session(&s).phase, Phase::Closed);
    // A repeated refusal changes nothing.
    assert!(m
        .settle(&s, &id, RefundOutcome::FailedPermanently, 4)
        .is_noop());
}

fn anomalies_of(m: &TestMachine, s: &SessionId) -> Vec<AnomalyKind> {
    m.session(s)
        .anomalies
        .iter()
        .map(|a| a.kind.clone())
        .collect()
}

#[test]
fn a_verified_success_after_a_recorded_failure_wins_and_is_flagged() {
    // Alipay's word that it paid is the truth about the customer's money: recording "failed" after it
    // would have an operator pay the customer a second time.
    let mut m = TestMachine::new(Mode::PayFirst);
    let s = outcome(&m.pay(&payment("T1", cny(500), None, 0), 0)).session;
    m.end(1);
    let id = only_refund(&m, &s);
    m.settle(&s, &id, RefundOutcome::FailedPermanently, 2);
    let t = m.settle(&s, &id, RefundOutcome::Succeeded, 3);
    assert!(!t.is_noop(), "a verified success must override the failure");
    let refund = m.session(&s).refund(&id).cloned().expect("refund");
    assert_eq!(refund.status, RefundStatus::Succeeded);
    assert!(
        anomalies_of(&m, &s).contains(&AnomalyKind::RefundSucceededAfterFailure {
            refund_id: id.clone()
        })
    );
    assert_eq!(m.session(&s).phase, Phase::Closed);
    let ledger = m.session(&s).total_refunded().expect("sum");
    assert_eq!(ledger, cny(500), "the refund is counted once");
    // Once succeeded, nothing moves it again.
    assert!(m.settle(&s, &id, RefundOutcome::Succeeded, 4).is_noop());
    assert!(m
        .settle(&s, &id, RefundOutcome::FailedPermanently, 5)
        .is_noop());
}

#[test]
fn a_refund_without_a_verdict_for_an_hour_is_raised_stuck_once_and_stays_pending() {
    let mut m = TestMachine::new(Mode::PayFirst);
    let s = outcome(&m.pay(&payment("T1", cny(500), None, 0), 0)).session;
    m.end(10);
    let id = only_refund(&m, &s);
    // Unknown verdicts within the hour change nothing.
    let early = refund_unresolved(m.session(&s), &id, at(10 + 3599)).expect("ok");
    assert!(early.is_noop());
    let t = m.apply(refund_unresolved(m.session(&s), &id, at(10 + 3600)));
    assert!(t.effects.iter().any(|e| matches!(
        e,
        Effect::Anomaly {
            anomaly: Anomaly {
                kind: AnomalyKind::RefundStuck { .. },
                ..
            },
            ..
        }
    )));
    let session = m.session(&s);
    assert_eq!(
        session.refund(&id).map(|r| r.status),
        Some(RefundStatus::Pending)
    );
    assert_eq!(session.phase, Phase::Settling, "stuck is not final");
    assert!(session.refund_is_stuck(&id));
    // Raised once, however often it is retried after.
    let again = refund_unresolved(m.session(&s), &id, at(10 + 7200)).expect("ok");
    assert!(again.is_noop());
    // A verified answer still settles it.
    m.settle(&s, &id, RefundOutcome::Succeeded, 10 + 7300);
    assert_eq!(m.session(&s).phase, Phase::Closed);
    // A final refund is never raised stuck.
    assert!(refund_unresolved(m.session(&s), &id, at(10 + 9000))
        .expect("ok")
        .is_noop());
}

#[test]
fn every_command_applied_twice_changes_nothing_the_second_time() {
    let mut m = TestMachine::new(Mode::PayFirst);
    let p = payment("T1", cny(1000), None, 0);
    let t = m.pay(&p, 0);
    let s = outcome(&t).session;
    let again = receive_payment(
        &m.device,
        m.current(),
        &p,
        &Shelves::NONE,
        &m.windows,
        at(1),
    )
    .expect("ok");
    assert!(again.is_noop());
    assert_eq!(again.reply, t.reply);

    let t = m.buy("r1", 300, 2);
    let again = request_purchase(
        &m.device,
        m.current(),
        &buy_req("r1", "A1", cny(300), None),
        &Shelves::NONE,
        &m.windows,
        at(3),
    )
    .expect("ok");
    assert!(again.is_noop());
    assert_eq!(again.reply, t.reply);

    let t = m.vend(&s, "r1", true, 4);
    let again = report_vend(m.session(&s), &req("r1"), true, &Shelves::NONE, at(5)).expect("ok");
    assert!(again.is_noop());
    assert_eq!(again.reply, t.reply);

    let t = m.deadline(&s, 300);
    assert!(!t.is_noop());
    let again = deadline_due(m.session(&s), &Shelves::NONE, at(301)).expect("ok");
    assert!(again.is_noop());
    assert_eq!(again.reply, t.reply);

    let t = m.end(302);
    assert!(t.is_noop(), "a settling session ends once");
}

#[test]
fn refund_ids_are_the_same_when_a_decision_is_recomputed() {
    // After a lost write the caller re-reads and re-applies: the refund ids must not change.
    let mut m = TestMachine::new(Mode::PayFirst);
    m.pay(&payment("T1", cny(1000), None, 0), 0);
    let first = end_session(&m.device, m.current(), None, &Shelves::NONE, at(10)).expect("ok");
    let second = end_session(&m.device, m.current(), None, &Shelves::NONE, at(11)).expect("ok");
    assert_eq!(refunds(&first), refunds(&second));
    let ids = |t: &Transition| -> Vec<_> {
        t.effects
            .iter()
            .filter_map(|e| match e {
                Effect::IssueRefund { refund_id, .. } => Some(refund_id.clone()),
                _ => None,
            })
            .collect()
    };
    assert_eq!(ids(&first), ids(&second));
}

#[test]
fn a_session_written_by_a_newer_build_stays_readable() {
    // A rolling deploy or a rollback: an anomaly kind this build does not know must not make the
    // session (and every command on its machine) unreadable.
    let mut m = TestMachine::new(Mode::PayFirst);
    let s = outcome(&m.pay(&payment("T1", cny(500), None, 0), 0)).session;
    let mut json = serde_json::to_value(m.session(&s)).expect("json");
    json["anomalies"] = serde_json::json!([
        {"at": 1_700_000_000_000i64, "kind": "something_new", "refund_id": "T1-r1", "extra": [1, 2]}
    ]);
    let read: Session = serde_json::from_value(json).expect("readable");
    assert_eq!(
        read.anomalies
            .iter()
            .map(|a| a.kind.clone())
            .collect::<Vec<_>>(),
        vec![AnomalyKind::Unrecognised]
    );
}

#[test]
fn every_kind_of_session_survives_storage_as_json() {
    // Storage keeps sessions as JSON: every shape the state machine produces must come back equal.
    let mut m = TestMachine::new(Mode::Mixed);
    m.pay(&payment("T1", cny(1000), Some("2088A"), 0), 0);
    m.buy("r1", 300, 1);
    m.buy("r2", 5000, 2);
    m.pay(&payment("T2", cny(100), Some("2088B"), 3), 3);
    m.pay(
        &payment("T3", Money::new(5, Currency::Usd).expect("usd"), None, 4),
        4,
    );
    m.deadline(
        &SessionId::for_payment(&TradeNo::parse("T1").expect("t")),
        400,
    );
    m.vend(
        &SessionId::for_payment(&TradeNo::parse("T1").expect("t")),
        "r1",
        true,
        401,
    );
    m.order("o1", 400, 500);
    m.pay(&payment("T4", cny(500), None, 501), 501);
    assert!(m.sessions.len() >= 4);
    for s in &m.sessions {
        let json = serde_json::to_string(s).expect("serialise");
        let back: Session = serde_json::from_str(&json).expect("deserialise");
        assert_eq!(&back, s, "{json}");
    }
}

// ---- Limits and late actions (an independent review's findings) ------------------------------------

#[test]
fn a_session_takes_at_most_fifty_payments_and_the_51st_is_refunded_in_full() {
    let mut m = TestMachine::new(Mode::PayFirst);
    let s = outcome(&m.pay(&payment("T0", cny(1), Some("2088A"), 0), 0)).session;
    for i in 1..50 {
        let o = outcome(&m.pay(&payment(&format!("T{i}"), cny(1), Some("2088A"), i), i));
        assert_eq!(o.disposition, Disposition::Credited, "payment {i}");
        assert_eq!(o.session, s);
    }
    let t = m.pay(&payment("T50", cny(1), Some("2088A"), 50), 50);
    let o = outcome(&t);
    assert!(
        matches!(o.disposition, Disposition::Refused(r) if r.as_str() == "session_full"),
        "the 51st payment must be refused: {o:?}"
    );
    assert_eq!(refunds(&t), vec![("T50".into(), 1)]);
    let open = m.session(&s);
    assert_eq!(open.payments.len(), 50);
    assert_eq!(open.balance, cny(50));
    assert_eq!(
        open.deadline_at,
        Some(at(49 + 300)),
        "a refused payment does not restart the window"
    );
}

#[test]
fn the_settlement_of_a_hundred_small_top_ups_stays_within_one_write() {
    // One buyer tops up 100 × 0.01: the settlement must not need more refund rows than one write holds.
    let mut m = TestMachine::new(Mode::PayFirst);
    let s = outcome(&m.pay(&payment("T0", cny(1), None, 0), 0)).session;
    for i in 1..100 {
        m.pay(&payment(&format!("T{i}"), cny(1), None, i), i);
    }
    let t = m.deadline(&s, 100 + 300);
    let issued = refunds(&t).len();
    assert!(
        issued <= MAX_REFUNDS_PER_WRITE,
        "{issued} refund rows in one write"
    );
    assert_eq!(m.session(&s).payments.len(), MAX_PAYMENTS);
    let total: u64 = refunds(&t).iter().map(|(_, a)| a).sum();
    assert_eq!(total, MAX_PAYMENTS as u64, "the whole balance is refunded");
}

#[test]
fn declined_purchases_are_not_recorded_without_bound() {
    let mut m = TestMachine::new(Mode::PayFirst);
    let s = outcome(&m.pay(&payment("T1", cny(100), None, 0), 0)).session;
    for i in 0..1000 {
        let a = purchase(&m.buy(&format!("r{i}"), 5000, 1));
        assert!(!a.approved());
    }
    let n = m.session(&s).purchases.len();
    assert!(n <= MAX_PURCHASES, "{n} purchases stored in one session");
}

#[test]
fn an_approval_just_before_the_deadline_keeps_its_full_vend_time() {
    let mut m = TestMachine::new(Mode::PayFirst);
    let s = outcome(&m.pay(&payment("T1", cny(1000), None, 0), 0)).session;
    let t = m.buy("r1", 400, 299);
    assert!(purchase(&t).approved());
    assert!(t.effects.contains(&Effect::ScheduleDeadline {
        session: s.clone(),
        at: at(299 + 25)
    }));
    assert!(
        m.deadline(&s, 300).is_noop(),
        "the deadline moved to approval + the purchase-first window"
    );
    // A slow vend, delivered 20 s later: spent, never refunded.
    m.vend(&s, "r1", true, 319);
    let t = m.deadline(&s, 324);
    assert_eq!(refunds(&t), vec![("T1".into(), 600)]);
    let sess = m.session(&s);
    assert_eq!(sess.spent, cny(400));
    assert!(sess.anomalies.is_empty(), "{:?}", sess.anomalies);
}

#[test]
fn a_refund_over_more_payments_than_one_write_holds_is_split_never_dropped() {
    // A session stored before the 50-payment bound existed: 100 payments of 0.01.
    let mut m = TestMachine::new(Mode::PayFirst);
    let s = outcome(&m.pay(&payment("T0", cny(1), None, 0), 0)).session;
    let legacy = m.sessions.iter_mut().find(|x| x.id == s).expect("session");
    for i in 1..100 {
        let p = payment(&format!("T{i}"), cny(1), None, i);
        legacy.payments.push(PaymentRecord {
            trade_no: p.trade_no,
            merchant_trade_no: p.merchant_trade_no,
            amount: p.amount,
            buyer_id: None,
            paid_at: p.paid_at,
            received_at: p.paid_at,
        });
    }
    legacy.balance = cny(100);
    legacy.check_invariant().expect("consistent");

    let first = m.deadline(&s, 300);
    assert_eq!(refunds(&first).len(), MAX_REFUNDS_PER_WRITE);
    let after = m.session(&s);
    assert_eq!(after.balance, cny(100 - MAX_REFUNDS_PER_WRITE as u64));
    assert_eq!(after.phase, Phase::Settling);
    assert_eq!(after.deadline_at, Some(at(300)), "due again at once");
    assert!(first.effects.contains(&Effect::ScheduleDeadline {
        session: s.clone(),
        at: at(300)
    }));
    let second = m.deadline(&s, 301);
    assert_eq!(refunds(&second).len(), 100 - MAX_REFUNDS_PER_WRITE);
    let done = m.session(&s);
    assert_eq!(done.balance, cny(0));
    assert_eq!(done.refunds.len(), 100, "every payment refunded once");
    assert!(m.deadline(&s, 302).is_noop());
}

#[test]
fn an_end_or_purchase_naming_another_session_changes_nothing() {
    let mut m = TestMachine::new(Mode::PayFirst);
    let a = outcome(&m.pay(&payment("T1", cny(1000), Some("2088A"), 0), 0)).session;
    m.end_of(&a, 10);
    let b = outcome(&m.pay(&payment("T2", cny(500), Some("2088B"), 20), 20)).session;
    assert_ne!(a, b);
    let t = m.end_of(&a, 30);
    assert!(t.is_noop(), "a replayed end of A leaves B alone");
    assert_eq!(t.reply, Reply::Session { session: a.clone() });
    let t = m.buy_in(&a, "late", 100, 31);
    assert_eq!(
        purchase(&t).declined,
        Some(DeclineReason::SessionClosed),
        "a late purchase for A holds none of B's money"
    );
    assert!(t.is_noop());
    assert_eq!(m.session(&b).balance, cny(500));
    assert_eq!(m.session(&b).phase, Phase::Open);
    // Named correctly, both act.
    assert!(purchase(&m.buy_in(&b, "r1", 100, 32)).approved());
    let t = m.end_of(&b, 33);
    assert_eq!(refunds(&t), vec![("T2".into(), 400)]);
}
