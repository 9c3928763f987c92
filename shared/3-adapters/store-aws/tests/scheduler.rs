//! The deadline scheduler and refund queue against moto: SQS delays for deadlines up to 15 minutes
//! (the message is invisible until its delay has passed), EventBridge Scheduler beyond (moto never fires
//! schedules, so the test fires it: it reads the schedule and delivers its input to its target queue,
//! then deletes it as `ActionAfterCompletion: DELETE` would).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code asserts by panicking

use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_scheduler::types::{ActionAfterCompletion, FlexibleTimeWindowMode};
use vendpay_app::{DeadlineMessage, DeadlineScheduler, RefundMessage, RefundQueue};
use vendpay_domain::{Clock, SystemClock, Timestamp};
use vendpay_store_aws::queues::{route, schedule_name, Route};
use vendpay_store_aws::{LongDeadlines, SqsDeadlineScheduler, SqsRefundQueue};
use vendpay_test_kit::moto;

/// Receives what is visible now (no waiting), deleting it.
async fn receive_now(sqs: &aws_sdk_sqs::Client, url: &str) -> Vec<String> {
    let out = sqs
        .receive_message()
        .queue_url(url)
        .max_number_of_messages(10)
        .wait_time_seconds(0)
        .send()
        .await
        .expect("receive");
    let mut bodies = Vec::new();
    for m in out.messages.unwrap_or_default() {
        if let Some(h) = m.receipt_handle() {
            sqs.delete_message()
                .queue_url(url)
                .receipt_handle(h)
                .send()
                .await
                .expect("delete");
        }
        bodies.extend(m.body);
    }
    bodies
}

fn now() -> Timestamp {
    SystemClock.now()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_deadline_is_an_sqs_message_invisible_until_its_delay() {
    let config = moto::sdk().await;
    let sqs = aws_sdk_sqs::Client::new(&config);
    let q = moto::queue(&config, "vp-deadline").await;
    let scheduler = SqsDeadlineScheduler::new(&config, &q.url, None, Arc::new(SystemClock));

    let message = DeadlineMessage {
        session: "s:T-short".parse().expect("id"),
        at: now().plus(Duration::from_secs(2)),
    };
    assert_eq!(route(&message, now()), Route::Sqs { delay_secs: 2 });
    let sent = Instant::now();
    scheduler.schedule(&message).await.expect("scheduled");

    // Poll until it shows; every receive before 2 s must come back empty.
    let body = loop {
        let got = receive_now(&sqs, &q.url).await;
        let elapsed = sent.elapsed();
        if let Some(b) = got.into_iter().next() {
            assert!(
                elapsed >= Duration::from_secs(2),
                "a 2 s delayed message was visible after {elapsed:?}"
            );
            break b;
        }
        assert!(
            elapsed < Duration::from_secs(10),
            "the delayed message never arrived"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let got: DeadlineMessage = serde_json::from_str(&body).expect("a DeadlineMessage");
    assert_eq!(got, message);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_deadline_is_a_one_time_schedule_that_delivers_to_the_deadline_queue() {
    let config = moto::sdk().await;
    let sqs = aws_sdk_sqs::Client::new(&config);
    let scheduler_api = aws_sdk_scheduler::Client::new(&config);
    let q = moto::queue(&config, "vp-deadline").await;
    let group = moto::unique("vp-group");
    scheduler_api
        .create_schedule_group()
        .name(&group)
        .send()
        .await
        .expect("schedule group");
    let long = LongDeadlines {
        queue_arn: q.arn.clone(),
        role_arn: "arn:aws:iam::123456789012:role/vendpay-scheduler".into(),
        group: Some(group.clone()),
    };
    let scheduler = SqsDeadlineScheduler::new(&config, &q.url, Some(long), Arc::new(SystemClock));

    // 20 minutes: beyond SQS's 900 s.
    let message = DeadlineMessage {
        session: "s:T-long".parse().expect("id"),
        at: now().plus(Duration::from_secs(20 * 60)),
    };
    scheduler.schedule(&message).await.expect("scheduled");
    scheduler
        .schedule(&message)
        .await
        .expect("scheduling the same deadline again is fine (ConflictException)");
    assert!(
        receive_now(&sqs, &q.url).await.is_empty(),
        "nothing goes to SQS directly"
    );

    let listed = scheduler_api
        .list_schedules()
        .group_name(&group)
        .send()
        .await
        .expect("list schedules");
    assert_eq!(
        listed.schedules().len(),
        1,
        "one schedule for one (session, deadline)"
    );
    let name = schedule_name(&message.session, message.at);
    let s = scheduler_api
        .get_schedule()
        .group_name(&group)
        .name(&name)
        .send()
        .await
        .expect("the schedule, by its deterministic name");
    let Route::Schedule { expression, .. } = route(&message, now()) else {
        panic!("20 minutes must go to Scheduler")
    };
    assert_eq!(s.schedule_expression(), Some(expression.as_str()));
    assert!(expression.starts_with("at(") && expression.len() == "at(2024-01-01T00:00:00)".len());
    assert_eq!(s.schedule_expression_timezone(), Some("UTC"));
    assert_eq!(
        s.flexible_time_window().map(|w| w.mode().clone()),
        Some(FlexibleTimeWindowMode::Off)
    );
    assert_eq!(
        s.action_after_completion(),
        Some(&ActionAfterCompletion::Delete)
    );
    let target = s.target().expect("target");
    assert_eq!(target.arn(), q.arn);

    // Fire it as EventBridge Scheduler would: its input to its target queue, then delete it.
    let input = target.input().expect("input").to_owned();
    let target_name = target.arn().rsplit(':').next().expect("queue name in ARN");
    let target_url = sqs
        .get_queue_url()
        .queue_name(target_name)
        .send()
        .await
        .expect("target queue")
        .queue_url
        .expect("url");
    sqs.send_message()
        .queue_url(&target_url)
        .message_body(input)
        .send()
        .await
        .expect("deliver");
    scheduler_api
        .delete_schedule()
        .group_name(&group)
        .name(&name)
        .send()
        .await
        .expect("delete after completion");

    let bodies = receive_now(&sqs, &q.url).await;
    assert_eq!(bodies.len(), 1);
    let got: DeadlineMessage = serde_json::from_str(&bodies[0]).expect("a DeadlineMessage");
    assert_eq!(got, message);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_deadline_without_a_scheduler_target_is_refused() {
    let config = moto::sdk().await;
    let q = moto::queue(&config, "vp-deadline").await;
    let scheduler = SqsDeadlineScheduler::new(&config, &q.url, None, Arc::new(SystemClock));
    let message = DeadlineMessage {
        session: "s:T-none".parse().expect("id"),
        at: now().plus(Duration::from_secs(3600)),
    };
    assert!(scheduler.schedule(&message).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refunds_are_queued_as_json() {
    let config = moto::sdk().await;
    let sqs = aws_sdk_sqs::Client::new(&config);
    let q = moto::queue(&config, "vp-refund").await;
    let refunds = SqsRefundQueue::new(&config, &q.url);
    let message = RefundMessage {
        refund_id: "R1".parse().expect("id"),
        session: "s:T1".parse().expect("id"),
        generation: 0,
    };
    refunds.enqueue(&message).await.expect("enqueued");
    let bodies = receive_now(&sqs, &q.url).await;
    assert_eq!(bodies.len(), 1);
    let got: RefundMessage = serde_json::from_str(&bodies[0]).expect("a RefundMessage");
    assert_eq!(got, message);
}
