//! A machine's slot rows as one money decision sees them, and how the decision's stock effects change
//! them (see `crate::inventory`).

use std::collections::BTreeMap;

use super::types::{Effect, Rejection};
use crate::ids::{Sku, Slot};
use crate::inventory::{SlotStock, StockChange};
use crate::money::Money;
use crate::time::Timestamp;

/// A machine's slot rows as a command read them, and the catalogue prices of the products it needs
/// (those of the slots it names that have no price of their own).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Shelves {
    rows: BTreeMap<Slot, SlotStock>,
    prices: BTreeMap<Sku, Money>,
}

impl Shelves {
    /// No planogram: every slot is outside it.
    pub const NONE: Shelves = Shelves {
        rows: BTreeMap::new(),
        prices: BTreeMap::new(),
    };

    pub fn new(rows: impl IntoIterator<Item = SlotStock>) -> Shelves {
        Shelves {
            rows: rows.into_iter().map(|r| (r.slot.clone(), r)).collect(),
            prices: BTreeMap::new(),
        }
    }

    /// The catalogue's price of `sku`.
    pub fn with_price(mut self, sku: Sku, price: Money) -> Shelves {
        self.prices.insert(sku, price);
        self
    }

    pub fn row(&self, slot: &Slot) -> Option<&SlotStock> {
        self.rows.get(slot)
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The product a slot of the planogram sells whose catalogue price the caller must supply, if any.
    pub fn needs_price(&self, slot: &Slot) -> Option<&Sku> {
        self.rows
            .get(slot)
            .filter(|r| r.price.is_none() && !self.prices.contains_key(&r.sku))
            .map(|r| &r.sku)
    }

    /// The price of a slot of the planogram (its own, else its product's); `None` outside it.
    pub(crate) fn price(&self, slot: &Slot) -> Result<Option<Money>, Rejection> {
        let Some(row) = self.rows.get(slot) else {
            return Ok(None);
        };
        match row.price.or_else(|| self.prices.get(&row.sku).copied()) {
            Some(p) => Ok(Some(p)),
            None => Err(Rejection::Inconsistent(format!(
                "slot {slot} sells {} but its catalogue price was not read",
                row.sku
            ))),
        }
    }

    /// Items of `slot` still available once `effects` (earlier changes of the same decision) apply.
    pub(crate) fn available_after(&self, slot: &Slot, effects: &[Effect]) -> Option<u32> {
        let rows = self.fold(effects, Timestamp::from_millis(0));
        rows.get(slot)
            .or_else(|| self.rows.get(slot))
            .map(SlotStock::available)
    }

    /// The rows `effects` change, each with its version bumped once; an item that left a slot stamps
    /// it `sold_at = now`. A change to a slot outside the planogram changes nothing; counts never go
    /// below zero (a delivery at stock 0 is flagged by the command as `stock_mismatch` before it gets
    /// here).
    pub fn apply(&self, effects: &[Effect], now: Timestamp) -> Vec<SlotStock> {
        self.fold(effects, now)
            .into_values()
            .map(|mut r| {
                r.version += 1;
                r
            })
            .collect()
    }

    fn fold(&self, effects: &[Effect], now: Timestamp) -> BTreeMap<Slot, SlotStock> {
        let mut changed: BTreeMap<Slot, SlotStock> = BTreeMap::new();
        for e in effects {
            let Effect::Stock {
                device,
                slot,
                change,
            } = e
            else {
                continue;
            };
            // Rows are one machine's; a change for another machine's slot of the same name is none
            // of theirs (a session belongs to one machine, so this is a guard, not a path).
            let Some(base) = self.rows.get(slot).filter(|r| &r.device_id == device) else {
                continue;
            };
            let row = changed.entry(slot.clone()).or_insert_with(|| base.clone());
            match change {
                StockChange::Reserve => row.reserved = row.reserved.saturating_add(1),
                StockChange::Release => row.reserved = row.reserved.saturating_sub(1),
                StockChange::Deliver => {
                    row.reserved = row.reserved.saturating_sub(1);
                    row.stock = row.stock.saturating_sub(1);
                    row.sold_at = Some(now);
                }
                StockChange::Remove => {
                    row.stock = row.stock.saturating_sub(1);
                    row.sold_at = Some(now);
                }
            }
        }
        changed
    }
}
