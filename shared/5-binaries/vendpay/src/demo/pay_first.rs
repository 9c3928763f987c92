//! The pay-first scenarios: a session refunded at its deadline, a session used up, and a duplicated
//! notification credited once.

use serde_json::{json, Value};
use vendpay_client::{poll_until, MachineKeys, POLL_INTERVAL};

use super::checks::Expect;
use super::view::{clock_time, minor, money, text};
use super::{Demo, Step};

/// Registers a pay-first machine and pays `amount`; waits for the session to open with it. Returns the
/// machine, the trade number and the machine's view.
async fn open(d: &Demo, id: &str, amount: u64) -> Step<(MachineKeys, String, Value)> {
    let m = d.register(id, "pay_first").await?;
    let trade = d.pay(&m, amount).await?;
    let s = d
        .wait_status(&m, "the payment to open a session", d.soon(), |s| {
            s["state"] == "open" && minor(&s["balance"]) == amount
        })
        .await?;
    Ok((m, trade, s))
}

pub(super) async fn refund_at_the_deadline(d: &mut Demo) -> Step<()> {
    let (m, trade, s) = open(d, "vm-pay-first", 1000).await?;
    let session = text(&s, "session_id").to_owned();
    d.say(format!(
        "notification verified and credited: session {session} open, balance {}, deadline at {}",
        money(&s["balance"]),
        clock_time(&s, "deadline_at")
    ));
    let a = d.buy(&m, "p-1", "A1", 350).await?;
    d.check(a["decision"] == "approved", "first purchase approved");
    d.vend(&m, "p-1", true).await?;
    let a = d.buy(&m, "p-2", "A2", 350).await?;
    d.check(
        a["decision"] == "approved",
        "second purchase approved (3.50 held)",
    );
    let s = d.vend(&m, "p-2", false).await?;
    d.check(
        minor(&s["balance"]) == 650,
        format!(
            "the failed vend's hold returned: balance {}",
            money(&s["balance"])
        ),
    );
    d.say(format!(
        "nothing more happens; waiting for the deadline ({} s after the payment)",
        d.windows.pay_first.as_secs()
    ));
    let wait = d.windows.pay_first + d.soon();
    d.watch_session(&session, "the deadline refund", wait, super::view::settled)
        .await?;
    let status = d.status(&m).await?;
    d.say(format!("machine sees: {}", text(&status, "state")));
    d.verify(
        &session,
        &trade,
        Expect::closed(350, &[(650, "settlement")]),
    )
    .await
}

pub(super) async fn used_up(d: &mut Demo) -> Step<()> {
    let (m, trade, s) = open(d, "vm-used-up", 700).await?;
    let session = text(&s, "session_id").to_owned();
    d.say(format!(
        "session {session} open, balance {}",
        money(&s["balance"])
    ));
    d.buy(&m, "p-1", "B1", 350).await?;
    d.vend(&m, "p-1", true).await?;
    d.buy(&m, "p-2", "B2", 350).await?;
    let s = d.vend(&m, "p-2", true).await?;
    d.check(
        s["state"] == "closed",
        format!(
            "the balance reached zero: the session closed at once ({})",
            text(&s, "state")
        ),
    );
    let status = d.status(&m).await?;
    d.say(format!("machine sees: {}", text(&status, "state")));
    d.check(status["state"] == "idle", "the machine is idle again");
    d.verify(&session, &trade, Expect::closed(700, &[])).await
}

pub(super) async fn duplicated_notification(d: &mut Demo) -> Step<()> {
    let m = d.register("vm-dup", "pay_first").await?;
    d.client
        .faults(&json!({"notifications": ["duplicate"]}))
        .await?;
    d.say("sandbox switch: the next notification is sent again after its first `success`");
    let trade = d.pay(&m, 500).await?;
    let of_trade = |v: &Value| -> Vec<Value> {
        v.as_array()
            .into_iter()
            .flatten()
            .filter(|x| text(x, "trade_no") == trade)
            .cloned()
            .collect()
    };
    let deliveries = poll_until(
        "both notification deliveries",
        d.soon(),
        POLL_INTERVAL,
        async || d.client.sandbox_list("deliveries").await.map(Value::Array),
        |v| of_trade(v).len() >= 2,
    )
    .await?;
    let answers: Vec<String> = of_trade(&deliveries)
        .iter()
        .map(|x| format!("#{} → {}", x["attempt"], text(x, "answer")))
        .collect();
    d.say(format!(
        "Alipay delivered the notification twice: {}",
        answers.join(", ")
    ));
    d.check(
        answers.len() == 2 && answers.iter().all(|a| a.ends_with("success")),
        "both deliveries acknowledged with `success`",
    );
    let s = d.status(&m).await?;
    let session = text(&s, "session_id").to_owned();
    d.say(format!(
        "session {session}: {}, balance {}",
        text(&s, "state"),
        money(&s["balance"])
    ));
    d.check(
        minor(&s["balance"]) == 500,
        format!("credited once: balance {}", money(&s["balance"])),
    );
    // The machine names the session it means, so a retried or replayed end cannot end the next one.
    let ended = d.client.end_session(&m, Some(&session)).await?;
    d.say(format!(
        "customer presses \"return change\": session {}",
        text(&ended, "state")
    ));
    let soon = d.soon();
    d.settle(
        &session,
        &trade,
        "the change to be refunded",
        soon,
        Expect::closed(0, &[(500, "settlement")]),
    )
    .await
}
