//! The service on `DynamoStore` against moto (serialised by our launcher, as DynamoDB is): the
//! concurrency checks (racing purchases, duplicated notifications and deadlines) and the DynamoDB
//! requests each domain event costs on the hot paths.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code asserts by panicking

use std::sync::Arc;
use std::time::Duration;

use vendpay_app::contract::{device_record, ManualClock, Recorder, T0};
use vendpay_app::{DeviceStore, Ledger, SessionStore};
use vendpay_domain::{DeviceId, Mode, Phase, PurchaseStatus, RefundOutcome, Timestamp, Windows};
use vendpay_store_aws::DynamoStore;
use vendpay_test_kit::fixtures::{cny, payment};
use vendpay_test_kit::moto;

struct Fixture {
    store: Arc<DynamoStore>,
    ledger: Ledger,
    recorder: Arc<Recorder>,
    clock: Arc<ManualClock>,
    device: DeviceId,
}

async fn fixture(mode: Mode) -> Fixture {
    let config = moto::sdk().await;
    let store = Arc::new(DynamoStore::new(&config, moto::unique("vp-ledger")));
    store.create_table().await.expect("table");
    store
        .register(&device_record("vm-1", mode))
        .await
        .expect("register");
    let recorder = Arc::new(Recorder::default());
    let clock = Arc::new(ManualClock::at(T0));
    let ledger = Ledger::new(
        store.clone(),
        recorder.clone(),
        recorder.clone(),
        clock.clone(),
        Windows::default(),
    );
    Fixture {
        store,
        ledger,
        recorder,
        clock,
        device: "vm-1".parse().expect("id"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_concurrent_purchases_on_a_balance_for_ten_approve_exactly_ten() {
    let f = fixture(Mode::PayFirst).await;
    f.ledger
        .payment(&f.device, &payment("T1", 1000))
        .await
        .expect("pay");
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..50 {
        let (ledger, device) = (f.ledger.clone(), f.device.clone());
        tasks.spawn(async move {
            ledger
                .purchase(
                    &device,
                    &format!("r{i}").parse().expect("id"),
                    &"A1".parse().expect("slot"),
                    cny(100),
                )
                .await
        });
    }
    let (mut approved, mut declined, mut errors) = (0, 0, Vec::new());
    while let Some(r) = tasks.join_next().await {
        match r.expect("task") {
            Ok(a) if a.approved() => approved += 1,
            Ok(_) => declined += 1,
            Err(e) => errors.push(e),
        }
    }
    eprintln!(
        "50 concurrent purchases: {approved} approved, {declined} declined, {} errors {errors:?}",
        errors.len()
    );
    assert_eq!(
        approved, 10,
        "a balance of 10.00 covers exactly ten 1.00 purchases"
    );
    assert!(
        errors.iter().all(|e| e.is_retryable()),
        "only retryable contention may remain: {errors:?}"
    );
    let s = f
        .ledger
        .current(&f.device)
        .await
        .expect("read")
        .expect("session");
    assert_eq!((s.balance, s.held), (cny(0), cny(1000)));
    let held = s
        .purchases
        .iter()
        .filter(|p| p.status == PurchaseStatus::Held)
        .count();
    assert_eq!(
        held, 10,
        "the session holds exactly the ten approved purchases"
    );
    s.check_invariant().expect("invariant");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_copies_of_one_notification_credit_once() {
    let f = fixture(Mode::PayFirst).await;
    let copy = payment("T1", 500);
    let (a, b) = tokio::join!(
        f.ledger.payment(&f.device, &copy),
        f.ledger.payment(&f.device, &copy),
    );
    assert_eq!(a.expect("first"), b.expect("second"));
    let s = f
        .ledger
        .current(&f.device)
        .await
        .expect("read")
        .expect("session");
    assert_eq!((s.balance, s.payments.len()), (cny(500), 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_deadline_delivered_twice_and_late_settles_once() {
    let f = fixture(Mode::PayFirst).await;
    let outcome = f
        .ledger
        .payment(&f.device, &payment("T1", 800))
        .await
        .expect("pay");
    f.clock.advance(Duration::from_secs(900)); // 10 minutes late
    let (a, b) = tokio::join!(
        f.ledger.deadline(&outcome.session),
        f.ledger.deadline(&outcome.session),
    );
    let settled = [a.expect("first"), b.expect("second")];
    assert_eq!(settled.iter().filter(|s| **s).count(), 1, "{settled:?}");
    assert!(!f.ledger.deadline(&outcome.session).await.expect("third"));
    let refunds = f
        .recorder
        .refunds
        .lock()
        .map(|r| r.clone())
        .unwrap_or_default();
    assert_eq!(refunds.len(), 1, "one refund for one settlement");
    let s = f
        .store
        .session(&outcome.session)
        .await
        .expect("read")
        .expect("session");
    assert_eq!(s.phase, Phase::Settling);
    assert_eq!(s.refunds.len(), 1);
    assert_eq!(s.refunds[0].amount, cny(800));
}

/// Prints what each hot-path event costs in DynamoDB requests and checks the writes are one each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamodb_requests_per_domain_event() {
    let f = fixture(Mode::PayFirst).await;
    let cost = |before: u64| f.store.requests() - before;
    let mut lines = Vec::new();

    let n = f.store.requests();
    let outcome = f
        .ledger
        .payment(&f.device, &payment("T1", 1000))
        .await
        .expect("pay");
    lines.push(("payment opening a session", cost(n)));
    let n = f.store.requests();
    f.ledger
        .payment(&f.device, &payment("T2", 500))
        .await
        .expect("top-up");
    lines.push(("payment topping up", cost(n)));
    let n = f.store.requests();
    f.ledger
        .payment(&f.device, &payment("T2", 500))
        .await
        .expect("duplicate");
    lines.push(("duplicate notification", cost(n)));
    let n = f.store.requests();
    let a = f
        .ledger
        .purchase(
            &f.device,
            &"r1".parse().expect("id"),
            &"A1".parse().expect("slot"),
            cny(300),
        )
        .await
        .expect("purchase");
    assert!(a.approved());
    lines.push(("purchase", cost(n)));
    let n = f.store.requests();
    f.ledger
        .vend(&f.device, &"r1".parse().expect("id"), true)
        .await
        .expect("vend");
    lines.push(("vend report", cost(n)));
    f.clock.advance(Duration::from_secs(301));
    let n = f.store.requests();
    assert!(f.ledger.deadline(&outcome.session).await.expect("deadline"));
    lines.push(("deadline (settles, records refunds)", cost(n)));
    let n = f.store.requests();
    assert!(!f
        .ledger
        .deadline(&outcome.session)
        .await
        .expect("deadline again"));
    lines.push(("deadline again (no-op)", cost(n)));
    let refunds = f
        .recorder
        .refunds
        .lock()
        .map(|r| r.clone())
        .unwrap_or_default();
    assert!(!refunds.is_empty());
    for r in &refunds {
        let n = f.store.requests();
        f.ledger
            .refund_result(&r.refund_id, RefundOutcome::Succeeded)
            .await
            .expect("refund outcome");
        lines.push(("refund outcome", cost(n)));
    }
    eprintln!("DynamoDB requests per domain event (reads + the one write):");
    for (what, n) in &lines {
        eprintln!("  {what:<40} {n}");
    }
    let s = f
        .store
        .session(&outcome.session)
        .await
        .expect("read")
        .expect("session");
    assert_eq!(s.phase, Phase::Closed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_unreadable_refund_item_does_not_hide_the_others() {
    // An item the code cannot read (a hand edit, a newer writer) is skipped with an alert; the sweep
    // still sees every other pending refund.
    let f = fixture(Mode::PayFirst).await;
    f.ledger
        .payment(&f.device, &payment("T1", 1000))
        .await
        .expect("pay");
    f.ledger.end(&f.device).await.expect("end");
    let good = f
        .store
        .pending_refunds(Timestamp::FAR_FUTURE, 10)
        .await
        .expect("listed");
    assert_eq!(good.len(), 1);
    use aws_sdk_dynamodb::types::AttributeValue as A;
    f.store
        .client()
        .put_item()
        .table_name(f.store.table())
        .item("pk", A::S("ref#T0-r1".into()))
        .item("sk", A::S("refund".into()))
        .item("refund", A::S("{not json".into()))
        .item("gsi1pk", A::S("refund#pending".into()))
        .item("gsi1sk", A::N("1".into()))
        .send()
        .await
        .expect("raw put");
    let listed = f.store.pending_refunds(Timestamp::FAR_FUTURE, 10).await;
    assert_eq!(listed, Ok(good), "the readable item is still listed");
}

/// The facts items of the table (`facts#…` / `facts`), each decoded: (pk, facts, expires_at).
async fn facts_items(store: &DynamoStore) -> Vec<(String, Vec<vendpay_domain::facts::Fact>, i64)> {
    use aws_sdk_dynamodb::types::AttributeValue;
    let client = aws_sdk_dynamodb::Client::new(&moto::sdk().await);
    let page = client
        .scan()
        .table_name(store.table())
        .filter_expression("begins_with(pk, :p)")
        .expression_attribute_values(":p", AttributeValue::S("facts#".into()))
        .send()
        .await
        .expect("scan");
    let mut out = Vec::new();
    for item in page.items() {
        let s = |k: &str| match item.get(k) {
            Some(AttributeValue::S(v)) => v.clone(),
            other => panic!("{k} of a facts item: {other:?}"),
        };
        let expires = match item.get("expires_at") {
            Some(AttributeValue::N(n)) => n.parse().expect("epoch seconds"),
            other => panic!("expires_at of a facts item: {other:?}"),
        };
        assert_eq!(s("sk"), "facts");
        out.push((
            s("pk"),
            serde_json::from_str(&s("facts")).expect("facts JSON"),
            expires,
        ));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// Each decision's facts ride in its own transaction as one item (a lost race writes none, a
/// duplicate adds none), and they add up to the session's money.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn facts_ride_in_each_decisions_transaction_as_one_item() {
    use vendpay_domain::facts::{AnalyticsKey, FactKind};
    let mut f = fixture(Mode::PayFirst).await;
    f.ledger = f
        .ledger
        .with_analytics_key(AnalyticsKey::new(b"moto analytics key".to_vec()));
    let mut pay = payment("T1", 1000);
    pay.buyer_id = Some("2088000000000042".parse().expect("buyer"));
    let (a, b) = tokio::join!(
        f.ledger.payment(&f.device, &pay),
        f.ledger.payment(&f.device, &pay),
    );
    let outcome = a.expect("first");
    assert_eq!(outcome, b.expect("second"));
    for (r, delivered) in [("r1", true), ("r2", false)] {
        let r = r.parse().expect("id");
        f.clock.advance(Duration::from_secs(1));
        assert!(f
            .ledger
            .purchase(&f.device, &r, &"A1".parse().expect("slot"), cny(300))
            .await
            .expect("buy")
            .approved());
        f.ledger.vend(&f.device, &r, delivered).await.expect("vend");
    }
    f.clock.advance(Duration::from_secs(301));
    assert!(f.ledger.deadline(&outcome.session).await.expect("deadline"));
    let refunds = f
        .recorder
        .refunds
        .lock()
        .map(|r| r.clone())
        .unwrap_or_default();
    f.ledger
        .refund_result(&refunds[0].refund_id, RefundOutcome::Succeeded)
        .await
        .expect("verdict");

    let items = facts_items(&f.store).await;
    let per_item: Vec<Vec<(FactKind, Option<String>)>> = items
        .iter()
        .map(|(_, facts, _)| facts.iter().map(|x| (x.kind, x.status.clone())).collect())
        .collect();
    // Keys sort by session version: payment (v1), vend r1 (v3), vend r2 (v5), deadline (v6), verdict (v7).
    assert_eq!(
        per_item,
        vec![
            vec![(FactKind::Payment, None)],
            vec![(FactKind::Sale, None)],
            vec![(FactKind::VendFailed, None)],
            vec![(FactKind::Refund, Some("issued".into()))],
            vec![(FactKind::Refund, Some("succeeded".into()))],
        ],
        "{items:#?}"
    );
    let s = f
        .store
        .session(&outcome.session)
        .await
        .expect("read")
        .expect("session");
    let all: Vec<_> = items
        .iter()
        .flat_map(|(_, facts, _)| facts.iter())
        .collect();
    let sum = |k: FactKind| {
        all.iter()
            .filter(|x| x.kind == k)
            .map(|x| x.amount)
            .sum::<u64>()
    };
    assert_eq!(sum(FactKind::Sale), s.spent.minor());
    assert_eq!(sum(FactKind::Payment), 1000);
    assert_eq!(
        all.iter()
            .filter(|x| x.status.as_deref() == Some("issued"))
            .map(|x| x.amount)
            .sum::<u64>(),
        s.total_refunded().expect("sum").minor()
    );
    let key = AnalyticsKey::new(b"moto analytics key".to_vec())
        .buyer_key(&"2088000000000042".parse().expect("buyer"));
    for (pk, facts, expires) in &items {
        assert!(
            pk.starts_with(&format!("facts#{}#", outcome.session)),
            "{pk}"
        );
        let latest = facts.iter().map(|x| x.at.secs()).max().expect("a fact");
        assert_eq!(*expires, latest + 7 * 24 * 3600, "a week's TTL");
        for x in facts {
            assert_eq!(x.buyer_key.as_ref(), Some(&key));
            assert_eq!(x.district, "Xuhui");
        }
    }
    let raw = format!("{items:?}");
    assert!(
        !raw.contains("2088000000000042"),
        "a raw buyer id in the facts items"
    );
}
