//! The retry's backoff against moto's SQS (run through `scripts/with-moto`): a queued command that
//! must be retried comes back after its short backoff, not the queue's 60 s visibility timeout, and a
//! visibility change that fails is only logged.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code asserts by panicking

use std::time::{Duration, Instant};

use aws_sdk_sqs::types::{MessageSystemAttributeName, QueueAttributeName};
use device_api::handler::{delay, Delay};
use device_api::RetryDelay;
use vendpay_test_kit::moto;

/// A message received from `url`: (message id, receipt handle, receive count).
async fn receive(sqs: &aws_sdk_sqs::Client, url: &str) -> Option<(String, String, u32)> {
    let out = sqs
        .receive_message()
        .queue_url(url)
        .max_number_of_messages(1)
        .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
        .send()
        .await
        .expect("receive");
    let m = out.messages.unwrap_or_default().into_iter().next()?;
    let count = m
        .attributes()
        .and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    Some((m.message_id?, m.receipt_handle?, count))
}

#[tokio::test]
async fn a_retried_record_comes_back_after_its_backoff_not_the_queues_visibility_timeout() {
    let sdk = moto::sdk().await;
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let url = sqs
        .create_queue()
        .queue_name(moto::unique("vp-device-events"))
        .attributes(QueueAttributeName::VisibilityTimeout, "60")
        .send()
        .await
        .expect("create queue")
        .queue_url
        .expect("queue url");
    sqs.send_message()
        .queue_url(&url)
        .message_body(
            r#"{"method":"POST","path":"/devices/vm-1/purchases","headers":{},"body":""}"#,
        )
        .send()
        .await
        .expect("send");
    let (id, receipt, count) = receive(&sqs, &url).await.expect("the message");
    assert_eq!(count, 1);

    let retries = RetryDelay {
        sqs: sqs.clone(),
        queue_url: url.clone(),
    };
    delay(
        &retries,
        &[Delay {
            message_id: &id,
            receipt_handle: &receipt,
            secs: 1,
        }],
    )
    .await;

    // Back within a few seconds, not after the queue's 60 s.
    let started = Instant::now();
    let again = loop {
        if let Some(m) = receive(&sqs, &url).await {
            break m;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the message did not come back within 10 s: its visibility was not shortened"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert_eq!((again.0.as_str(), again.2), (id.as_str(), 2));
}

#[tokio::test]
async fn a_failed_visibility_change_is_only_logged() {
    let sdk = moto::sdk().await;
    let retries = RetryDelay {
        sqs: aws_sdk_sqs::Client::new(&sdk),
        queue_url: format!(
            "{}/123456789012/{}",
            moto::endpoint(),
            moto::unique("vp-no-such-queue")
        ),
    };
    // No queue, no such receipt: the message would simply come back after the queue's timeout.
    delay(
        &retries,
        &[Delay {
            message_id: "m-1",
            receipt_handle: "not-a-receipt",
            secs: 2,
        }],
    )
    .await;
}
