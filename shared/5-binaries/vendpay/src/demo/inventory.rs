//! The catalogue and inventory scenario: the operator defines two products and a slot map, the machine
//! sells the last item of a slot at the server's price, the next purchase of it is declined `sold_out`,
//! the operator restocks, and the fleet's restocking round lists what is still low.

use serde_json::Value;
use vendpay_client::{cny, SlotPlan};

use super::checks::Expect;
use super::view::{list, minor, money, shelf, slot, text};
use super::{Demo, Step};

/// The slot's `stock` and `reserved`.
fn counts(inventory: &Value, name: &str) -> (u64, u64) {
    let s = slot(inventory, name);
    (
        s["stock"].as_u64().unwrap_or(u64::MAX),
        s["reserved"].as_u64().unwrap_or(u64::MAX),
    )
}

pub(super) async fn sold_out_and_restocked(d: &mut Demo) -> Step<()> {
    // The operator's catalogue: the price of a product is every slot's default.
    d.client
        .put_product("cola-330", "Cola 330 ml", &cny(350), Some("drinks"))
        .await?;
    d.client
        .put_product("water-500", "Water 500 ml", &cny(250), Some("drinks"))
        .await?;
    let products = d.client.products().await?;
    let skus: Vec<String> = list(&products, "products")
        .iter()
        .map(|p| format!("{} {}", text(p, "sku"), money(&p["price"])))
        .collect();
    d.say(format!(
        "operator puts two products in the catalogue: {}",
        skus.join(", ")
    ));
    d.check(
        skus == ["cola-330 3.50 CNY", "water-500 2.50 CNY"],
        "the catalogue holds both products, ordered by sku",
    );

    let m = d.register("vm-shelf", "pay_first").await?;
    let plan = [
        SlotPlan {
            slot: "A1",
            sku: "cola-330",
            capacity: 6,
            price: None,
        },
        SlotPlan {
            slot: "A2",
            sku: "water-500",
            capacity: 8,
            price: Some(cny(200)),
        },
    ];
    let inv = d.client.set_slots(&m.id, &plan).await?;
    d.say(format!(
        "operator sets {}'s slot map (A2 at its own price): {}",
        m.id,
        shelf(&inv)
    ));
    d.check(
        counts(&inv, "A1") == (0, 0) && minor(&slot(&inv, "A2")["price"]) == 200,
        "new slots start empty; A2 sells at its own 2.00",
    );
    let inv = d.client.restock(&m.id, &[("A1", 1), ("A2", 2)]).await?;
    d.say(format!("operator fills the machine: {}", shelf(&inv)));

    let trade = d.pay(&m, 1000).await?;
    let s = d
        .wait_status(&m, "the payment to open a session", d.soon(), |s| {
            s["state"] == "open" && minor(&s["balance"]) == 1000
        })
        .await?;
    let session = text(&s, "session_id").to_owned();
    d.say(format!(
        "session {session} open, balance {}",
        money(&s["balance"])
    ));
    let a = d.buy_from_slot(&m, "p-1", "A1").await?;
    d.check(
        a["decision"] == "approved" && minor(&a["balance"]) == 650,
        format!(
            "the last cola sold at the server's 3.50, no price from the machine (balance {})",
            money(&a["balance"])
        ),
    );
    let inv = d.client.inventory(&m.id).await?;
    d.say(format!(
        "inventory while the vend is on its way: {}",
        shelf(&inv)
    ));
    d.check(
        counts(&inv, "A1") == (1, 1),
        "the approval reserved the item in the same write",
    );
    d.vend(&m, "p-1", true).await?;
    let inv = d.client.inventory(&m.id).await?;
    d.say(format!("inventory after the vend: {}", shelf(&inv)));
    d.check(
        counts(&inv, "A1") == (0, 0) && slot(&inv, "A1")["low"] == true,
        "A1 is empty: stock 0, nothing reserved, low",
    );

    let a = d.buy_from_slot(&m, "p-2", "A1").await?;
    d.check(
        a["decision"] == "declined" && a["reason"] == "sold_out" && minor(&a["balance"]) == 650,
        format!(
            "the next cola is declined {} and no money moves (balance {})",
            text(&a, "reason"),
            money(&a["balance"])
        ),
    );

    let inv = d.client.restock(&m.id, &[("A1", 6)]).await?;
    d.say(format!("operator refills A1: {}", shelf(&inv)));
    d.check(counts(&inv, "A1") == (6, 0), "A1 holds 6 again");
    let a = d.buy_from_slot(&m, "p-3", "A1").await?;
    d.check(a["decision"] == "approved", "cola sells again");
    d.vend(&m, "p-3", true).await?;

    let round = d.client.restocking_round(None).await?;
    let low: Vec<String> = list(&round, "districts")
        .iter()
        .flat_map(|district| {
            list(district, "machines").into_iter().flat_map(move |mm| {
                let district = text(district, "district").to_owned();
                list(&mm, "slots")
                    .into_iter()
                    .map(move |s| {
                        format!(
                            "{district} / {} / {} {} {}/{}",
                            text(&mm, "device_id"),
                            text(&s, "slot"),
                            text(&s, "name"),
                            s["stock"],
                            s["capacity"]
                        )
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    d.say(format!(
        "restocking round (GET /admin/inventory, available ≤ 25 % of capacity): {}",
        if low.is_empty() {
            "nothing".to_owned()
        } else {
            low.join("; ")
        }
    ));
    d.check(
        low == ["Xuhui / vm-shelf / A2 Water 500 ml 2/8"],
        "only A2 (2 of 8) is low; A1 (5 of 6) is not",
    );

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
        Expect::closed(700, &[(300, "settlement")]),
    )
    .await
}
