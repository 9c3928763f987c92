//! What the operator, the customers and the machines do in the demo, through the test kit client;
//! each step prints its line on the timeline.

use std::cell::RefCell;
use std::time::Duration;

use serde_json::Value;
use vendpay_client::{cny, poll_until, MachineKeys, NewDevice, POLL_INTERVAL};

use super::view::{clock_time, fen, money, summary, text};
use super::{Demo, Step};

impl Demo {
    /// The operator registers a machine (CNY) and creates its QR code.
    pub(super) async fn register(&self, id: &str, mode: &str) -> Step<MachineKeys> {
        let name = format!("Demo {id}");
        let m = self
            .client
            .register(&NewDevice {
                id,
                name: &name,
                district: "Xuhui",
                location: Some("Lobby"),
                currency: "CNY",
                mode,
            })
            .await?;
        self.say(format!(
            "machine {id} registered ({mode}, CNY); Alipay QR code {}",
            m.qrcode
        ));
        Ok(m)
    }

    /// A customer pays the machine's QR code; returns the trade number.
    pub(super) async fn pay(&self, m: &MachineKeys, amount: u64) -> Step<String> {
        let receipt = self.client.pay(&m.id, &cny(amount)).await?;
        let trade = text(&receipt, "trade_no").to_owned();
        self.say(format!(
            "customer pays {} by scanning {}'s QR code (Alipay trade {trade}); the sandbox POSTs the signed notification",
            fen(amount),
            m.id
        ));
        Ok(trade)
    }

    /// What the machine sees: `GET /devices/{id}/session`.
    pub(super) async fn status(&self, m: &MachineKeys) -> Step<Value> {
        self.client.session(m).await
    }

    /// The operator's view of a session.
    pub(super) async fn session(&self, id: &str) -> Step<Value> {
        self.client.admin_session(id).await
    }

    /// Polls the machine's view until `done`.
    pub(super) async fn wait_status(
        &self,
        m: &MachineKeys,
        what: &str,
        timeout: Duration,
        done: impl Fn(&Value) -> bool,
    ) -> Step<Value> {
        poll_until(
            what,
            timeout,
            POLL_INTERVAL,
            async || self.status(m).await,
            done,
        )
        .await
    }

    /// Polls the operator's view of a session until `done`, printing each change on the way.
    pub(super) async fn watch_session(
        &self,
        id: &str,
        what: &str,
        timeout: Duration,
        done: impl Fn(&Value) -> bool,
    ) -> Step<Value> {
        let seen = RefCell::new(String::new());
        let fetch = async || {
            // A refused payment's session appears only once its notification has arrived.
            let Some(s) = self.client.find_session(id).await? else {
                return Ok(Value::Null);
            };
            let line = summary(&s);
            if *seen.borrow() != line {
                self.say(format!("session {id}: {line}"));
                *seen.borrow_mut() = line;
            }
            Ok(s)
        };
        poll_until(what, timeout, POLL_INTERVAL, fetch, done).await
    }

    /// The machine asks to sell `slot` at `price`.
    pub(super) async fn buy(
        &self,
        m: &MachineKeys,
        request: &str,
        slot: &str,
        price: u64,
    ) -> Step<Value> {
        let a = self
            .client
            .purchase(m, request, slot, Some(&cny(price)))
            .await?;
        self.say(format!(
            "machine asks to sell slot {slot} for {} (request {request}): {}, balance {}",
            fen(price),
            text(&a, "decision"),
            money(&a["balance"])
        ));
        Ok(a)
    }

    /// The machine asks to sell `slot` of its slot map without a price: the server's price applies.
    pub(super) async fn buy_from_slot(
        &self,
        m: &MachineKeys,
        request: &str,
        slot: &str,
    ) -> Step<Value> {
        let a = self.client.purchase(m, request, slot, None).await?;
        let reason = a
            .get("reason")
            .and_then(Value::as_str)
            .map(|r| format!(" {r}"))
            .unwrap_or_default();
        self.say(format!(
            "machine asks to sell slot {slot} at the server's price (request {request}): {}{reason}, balance {}",
            text(&a, "decision"),
            money(&a["balance"])
        ));
        Ok(a)
    }

    /// The machine reports a vend.
    pub(super) async fn vend(
        &self,
        m: &MachineKeys,
        request: &str,
        delivered: bool,
    ) -> Step<Value> {
        let s = self.client.vend(m, request, delivered).await?;
        let detail = if text(&s, "mode") == "purchase_first" {
            format!("order {}", text(&s, "state"))
        } else {
            format!(
                "session {}, balance {}, held {}, spent {}",
                text(&s, "state"),
                money(&s["balance"]),
                money(&s["held"]),
                money(&s["spent"])
            )
        };
        self.say(format!(
            "machine reports {request}: {}; {detail}",
            if delivered {
                "delivered"
            } else {
                "vend failed"
            }
        ));
        Ok(s)
    }

    /// The customer picks a slot and the machine registers the order.
    pub(super) async fn place_order(
        &self,
        m: &MachineKeys,
        order: &str,
        slot: &str,
        price: u64,
    ) -> Step<Value> {
        let o = self.client.order(m, order, slot, Some(&cny(price))).await?;
        self.say(format!(
            "customer picks slot {slot}; machine registers order {order} for {}: {}, expires at {}",
            fen(price),
            text(&o, "state"),
            clock_time(&o, "expires_at")
        ));
        Ok(o)
    }
}
