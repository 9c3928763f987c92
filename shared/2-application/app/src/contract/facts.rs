//! The sales facts a store keeps for reports (`FactStore`): written with their commit or not at all,
//! once per id, and the stories of both flows told by the facts the `Ledger` records (see
//! `docs/sales.md`). Run by the stores that serve reports (SQLite); the DynamoDB store writes the same
//! facts as one item per decision, checked by its own tests.

use std::sync::Arc;
use std::time::Duration;

use vendpay_domain::facts::{AnalyticsKey, Fact, FactKind, Flow};
use vendpay_domain::*;

use super::ledger::ledger;
use super::*;
use crate::ports::FactStore;

/// Runs the facts checks, each on a fresh store from `make`.
pub async fn run_facts<S, F, Fut>(make: F)
where
    S: Store + FactStore,
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<S>>,
{
    facts_ride_with_their_commit_and_are_kept_once(make().await).await;
    a_pay_first_story_is_told_by_its_facts(make().await).await;
    an_order_story_is_told_by_its_facts(make().await).await;
    a_duplicate_notification_adds_no_fact(make().await).await;
    buyers_before_gives_each_buyers_first_and_latest_sale(make().await).await;
}

const KEY: &[u8] = b"contract analytics key";

fn buyer_payment(trade: &str, minor: u64, buyer: &str) -> IncomingPayment {
    IncomingPayment {
        buyer_id: Some(id(buyer)),
        ..payment(trade, minor)
    }
}

async fn all_facts<S: FactStore>(store: &S) -> Vec<Fact> {
    store
        .facts(Timestamp::from_millis(0), Timestamp::FAR_FUTURE)
        .await
        .expect("facts read")
}

fn sum(facts: &[Fact], kind: FactKind, status: Option<&str>) -> u64 {
    facts
        .iter()
        .filter(|f| f.kind == kind && (status.is_none() || f.status.as_deref() == status))
        .map(|f| f.amount)
        .sum()
}

fn fact(n: u32, kind: FactKind, at: i64) -> Fact {
    Fact {
        id: format!("test:{n}"),
        kind,
        at: Timestamp::from_millis(at),
        device: id("vm-1"),
        district: "Xuhui".into(),
        location: None,
        session: id("S-1"),
        flow: Flow::PayFirst,
        buyer_key: None,
        currency: Currency::Cny,
        amount: u64::from(n),
        trade_no: None,
        request_id: None,
        refund_id: None,
        slot: None,
        sku: None,
        product: None,
        stock_after: None,
        reason: None,
        status: None,
    }
}

pub(super) async fn facts_ride_with_their_commit_and_are_kept_once<S: Store + FactStore>(
    store: Arc<S>,
) {
    store
        .register(&device_record("vm-1", Mode::Mixed))
        .await
        .expect("register");
    let s = open_session(&*store, "vm-1", "T1", 500, 0).await;
    // A commit whose condition fails writes none of its facts.
    let stale = Commit {
        sessions: vec![Session {
            version: s.version,
            ..s.clone()
        }],
        facts: vec![fact(1, FactKind::Sale, T0)],
        ..Commit::default()
    };
    assert!(matches!(
        store.commit(&stale).await,
        Err(StoreError::Conflict(_))
    ));
    assert!(
        all_facts(&*store).await.is_empty(),
        "a failed commit wrote facts"
    );
    // A commit that lands writes them; the same id again keeps the first.
    let next = Session {
        version: s.version + 1,
        ..s.clone()
    };
    store
        .commit(&Commit {
            sessions: vec![next.clone()],
            facts: vec![
                fact(1, FactKind::Sale, T0),
                fact(2, FactKind::Payment, T0 + 5),
            ],
            ..Commit::default()
        })
        .await
        .expect("commit with facts");
    let mut again = fact(1, FactKind::Sale, T0);
    again.amount = 999;
    store
        .commit(&Commit {
            sessions: vec![Session {
                version: next.version + 1,
                ..next
            }],
            facts: vec![again],
            ..Commit::default()
        })
        .await
        .expect("commit repeating a fact id");
    let facts = all_facts(&*store).await;
    assert_eq!(
        facts
            .iter()
            .map(|f| (f.id.as_str(), f.amount))
            .collect::<Vec<_>>(),
        vec![("test:1", 1), ("test:2", 2)],
        "each fact once, as first written, in time order"
    );
    assert_eq!(
        facts[0],
        fact(1, FactKind::Sale, T0),
        "a fact reads back as written"
    );
    let window = store
        .facts(
            Timestamp::from_millis(T0 + 1),
            Timestamp::from_millis(T0 + 5),
        )
        .await
        .expect("window");
    assert!(window.is_empty(), "the period is [from, to): {window:?}");
}

pub(super) async fn a_pay_first_story_is_told_by_its_facts<S: Store + FactStore>(store: Arc<S>) {
    store
        .register(&device_record("vm-1", Mode::Mixed))
        .await
        .expect("register");
    let (ledger, rec, clock) = ledger(store.clone());
    let ledger = ledger.with_analytics_key(AnalyticsKey::new(KEY.to_vec()));
    let dev: DeviceId = id("vm-1");
    let outcome = ledger
        .payment(&dev, &buyer_payment("T1", 1000, "2088000000000001"))
        .await
        .expect("pay");
    for (r, delivered) in [("r1", true), ("r2", false), ("r3", true)] {
        clock.advance(Duration::from_secs(1));
        assert!(ledger
            .purchase(&dev, &id(r), &id("A1"), cny(300))
            .await
            .expect("buy")
            .approved());
        ledger.vend(&dev, &id(r), delivered).await.expect("vend");
    }
    clock.advance(Duration::from_secs(301));
    assert!(ledger.deadline(&outcome.session).await.expect("deadline"));
    clock.advance(Duration::from_secs(1));
    let refunds = rec.refunds.lock().map(|r| r.clone()).unwrap_or_default();
    assert_eq!(refunds.len(), 1, "the remainder is refunded");
    ledger
        .refund_result(&refunds[0].refund_id, RefundOutcome::Succeeded)
        .await
        .expect("verdict");

    let facts = all_facts(&*store).await;
    let kinds: Vec<_> = facts.iter().map(|f| (f.kind, f.status.clone())).collect();
    assert_eq!(
        kinds,
        vec![
            (FactKind::Payment, None),
            (FactKind::Sale, None),
            (FactKind::VendFailed, None),
            (FactKind::Sale, None),
            (FactKind::Refund, Some("issued".into())),
            (FactKind::Refund, Some("succeeded".into())),
        ],
        "{facts:#?}"
    );
    let session = store
        .session(&outcome.session)
        .await
        .expect("read")
        .expect("session");
    assert_eq!(sum(&facts, FactKind::Sale, None), session.spent.minor());
    assert_eq!(
        sum(&facts, FactKind::Refund, Some("issued")),
        session.total_refunded().expect("sum").minor()
    );
    assert_eq!(sum(&facts, FactKind::Payment, None), 1000);
    let key = AnalyticsKey::new(KEY.to_vec()).buyer_key(&id("2088000000000001"));
    for f in &facts {
        assert_eq!(f.buyer_key.as_ref(), Some(&key), "{}", f.id);
        assert_eq!(
            (f.district.as_str(), f.location.as_deref()),
            ("Xuhui", Some("Gate 3"))
        );
        assert_eq!(f.flow, Flow::PayFirst);
        assert_eq!(f.session, outcome.session);
        assert!(
            !serde_json::to_string(f)
                .expect("json")
                .contains("2088000000000001"),
            "a raw buyer id in {f:?}"
        );
    }
    let refund = &facts[4];
    assert_eq!(refund.reason.as_deref(), Some("remainder"));
    assert_eq!(refund.amount, 400);
}

pub(super) async fn an_order_story_is_told_by_its_facts<S: Store + FactStore>(store: Arc<S>) {
    store
        .register(&device_record("vm-1", Mode::PurchaseFirst))
        .await
        .expect("register");
    let (ledger, rec, clock) = ledger(store.clone());
    let dev: DeviceId = id("vm-1");
    ledger
        .order(&dev, &id("o1"), &id("B2"), Some(cny(450)))
        .await
        .expect("order");
    ledger
        .payment(&dev, &payment("T9", 500))
        .await
        .expect("pay");
    clock.advance(Duration::from_secs(1));
    ledger.vend(&dev, &id("o1"), true).await.expect("vend");
    let facts = all_facts(&*store).await;
    let summary: Vec<_> = facts
        .iter()
        .map(|f| (f.kind, f.amount, f.reason.clone(), f.flow))
        .collect();
    assert_eq!(
        summary,
        vec![
            (FactKind::Payment, 500, None, Flow::PurchaseFirst),
            (
                FactKind::Refund,
                50,
                Some("over_payment".into()),
                Flow::PurchaseFirst
            ),
            (FactKind::Sale, 450, None, Flow::PurchaseFirst),
        ],
        "{facts:#?}"
    );
    assert!(
        facts.iter().all(|f| f.buyer_key.is_none()),
        "no buyer id, no buyer key"
    );
    assert_eq!(rec.refunds.lock().map(|r| r.len()).unwrap_or(0), 1);
    let sale = &facts[2];
    assert_eq!(
        (
            sale.slot.as_ref().map(|s| s.as_str()),
            sale.request_id.as_ref().map(|r| r.as_str())
        ),
        (Some("B2"), Some("o1"))
    );
}

pub(super) async fn a_duplicate_notification_adds_no_fact<S: Store + FactStore>(store: Arc<S>) {
    store
        .register(&device_record("vm-1", Mode::PayFirst))
        .await
        .expect("register");
    let (ledger, _, _) = ledger(store.clone());
    let dev: DeviceId = id("vm-1");
    for _ in 0..3 {
        ledger
            .payment(&dev, &payment("T1", 800))
            .await
            .expect("pay");
    }
    let facts = all_facts(&*store).await;
    assert_eq!(facts.len(), 1, "{facts:#?}");
    assert_eq!(facts[0].id, "payment:T1");
}

pub(super) async fn buyers_before_gives_each_buyers_first_and_latest_sale<S: Store + FactStore>(
    store: Arc<S>,
) {
    store
        .register(&device_record("vm-1", Mode::Mixed))
        .await
        .expect("register");
    let s = open_session(&*store, "vm-1", "T1", 500, 0).await;
    let keyed = |n: u32, key: &str, at: i64, district: &str| Fact {
        buyer_key: vendpay_domain::facts::BuyerKey::parse(key),
        district: district.into(),
        ..fact(n, FactKind::Sale, at)
    };
    let a = "00000000000000aa";
    let b = "00000000000000bb";
    store
        .commit(&Commit {
            sessions: vec![Session {
                version: s.version + 1,
                ..s
            }],
            facts: vec![
                keyed(1, a, T0, "North"),
                keyed(2, a, T0 + 10, "South"),
                keyed(3, b, T0 + 20, "East"),
                keyed(4, a, T0 + 1000, "West"),
                Fact {
                    id: "test:5".into(),
                    ..keyed(5, a, T0 + 10, "Tie")
                },
                fact(6, FactKind::Payment, T0 + 1),
            ],
            ..Commit::default()
        })
        .await
        .expect("commit");
    let history = store
        .buyers_before(Timestamp::from_millis(T0 + 500))
        .await
        .expect("history");
    let got: Vec<_> = history
        .iter()
        .map(|h| {
            (
                h.buyer_key.as_str(),
                h.first_sale.millis() - T0,
                h.last_sale.millis() - T0,
                h.last_district.as_str(),
            )
        })
        .collect();
    // Buyer a's latest before the cut is at +10, twice: the greater id (test:5) wins.
    assert_eq!(got, vec![(a, 0, 10, "Tie"), (b, 20, 20, "East")]);
}
