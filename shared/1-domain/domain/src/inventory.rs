//! Catalogue and inventory (see `docs/contract.md`, “Catalogue and inventory”): products, a machine's
//! slot map (planogram), and per slot the items in the machine (`stock`) and those promised but not
//! yet reported (`reserved`).
//!
//! This module holds the catalogue and planogram rules an operator's requests go through. The money
//! commands never write stock themselves: approving a purchase or placing an order emits a
//! [`StockChange::Reserve`] effect for a slot of the planogram, and the purchase (or order) remembers
//! that it reserved; its end emits `Deliver` or `Release`. `session::Shelves::apply` folds those
//! effects into the slot rows, which storage writes in the same conditional write as the session: stock
//! and money move together or not at all. Inventory can decline a purchase (`sold_out`) but never
//! changes how money moves.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::device::Device;
use crate::ids::{DeviceId, Sku, Slot};
use crate::money::{Currency, Money};
use crate::time::Timestamp;

/// Slots one machine's planogram may have: a replacement (every old row removed, every new one
/// written) then stays within one DynamoDB transaction (100 actions).
pub const MAX_SLOTS: usize = 48;
/// The most items one slot can hold.
pub const MAX_CAPACITY: u32 = 1000;
/// Reserving purchases one session may hold at once: a deadline that releases them all writes at most
/// this many slot rows beside its refunds, within one storage write.
pub const MAX_RESERVED_HOLDS: usize = 20;
/// A product's name, in characters.
pub const MAX_NAME_CHARS: usize = 120;
/// A product's category, in characters.
pub const MAX_CATEGORY_CHARS: usize = 64;
/// `low` in a machine's inventory: available at or below this share of capacity.
pub const LOW_SHARE: f64 = 0.25;

/// A product of the catalogue. Its price is the default of every slot that sells it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Product {
    pub sku: Sku,
    pub name: String,
    pub price: Money,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
}

/// One slot of a machine as stored: what it sells and how many items it has.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotStock {
    pub device_id: DeviceId,
    pub slot: Slot,
    pub sku: Sku,
    pub capacity: u32,
    /// The slot's own price; `None`: the product's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub price: Option<Money>,
    /// Items in the machine.
    pub stock: u32,
    /// Items promised (an approved purchase held, an order placed) and not yet reported.
    pub reserved: u32,
    /// Bumped by every write; storage writes conditionally on the version it read (`1`: a new row).
    pub version: u64,
    /// When an item last left the slot (a delivery reported): a machine's count taken before it is
    /// stale ([`count_by_machine`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sold_at: Option<Timestamp>,
}

impl SlotStock {
    /// Items that can still be promised.
    pub fn available(&self) -> u32 {
        self.stock.saturating_sub(self.reserved)
    }

    /// Available at or below `share` of capacity (a restocking candidate).
    pub fn is_low(&self, share: f64) -> bool {
        f64::from(self.available()) <= share * f64::from(self.capacity)
    }
}

/// A slot of a planogram as an operator asks for it (`PUT /admin/devices/{id}/slots`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlotSpec {
    pub slot: Slot,
    pub sku: Sku,
    pub capacity: u32,
    pub price: Option<Money>,
}

/// A slot's count after a refill (or as the machine counted it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StockCount {
    pub slot: Slot,
    pub stock: u32,
}

/// What happens to one slot's items, as an effect of a money decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StockChange {
    /// An approved purchase or a placed order promises one item.
    Reserve,
    /// The promise ended without a vend (failed, unconfirmed, expired, cancelled).
    Release,
    /// The item went out: one fewer in stock, one fewer promised.
    Deliver,
    /// The item went out after its promise had ended (a vend reported after the deadline refunded it).
    Remove,
}

/// Why an inventory request was refused. Nothing was changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InventoryError {
    #[error("unknown sku {0}: put it in the catalogue first (PUT /admin/products/{0})")]
    UnknownSku(Sku),
    #[error("slot {slot}: capacity {capacity} is out of range; it must be 1 to {MAX_CAPACITY}")]
    Capacity { slot: Slot, capacity: u64 },
    #[error("slot {slot}: stock {stock} is out of range; it must be 0 to the capacity {capacity}")]
    Stock {
        slot: Slot,
        stock: i64,
        capacity: u32,
    },
    #[error("slot {0} is not in this machine's slot map")]
    UnknownSlot(Slot),
    #[error("slot {0} appears twice")]
    DuplicateSlot(Slot),
    #[error("{count} slots; a machine has at most {MAX_SLOTS}")]
    TooManySlots { count: usize },
    #[error("slot {slot}: {whose} price is in {got} but the machine takes {expected}")]
    CurrencyMismatch {
        slot: Slot,
        /// "its" (the slot's own price) or "product <sku>'s".
        whose: String,
        expected: Currency,
        got: Currency,
    },
    #[error("price must be greater than zero")]
    NonPositivePrice,
    /// Every slot relying on a product's price is in the machine's currency; moving the product to
    /// another would make them all refuse sales.
    #[error("product {sku} is priced in {was}; a price in {asked} would break every slot selling it at the product's price - add another sku for {asked}")]
    ProductCurrency {
        sku: Sku,
        was: Currency,
        asked: Currency,
    },
    #[error("name must be 1 to {MAX_NAME_CHARS} characters")]
    Name,
    #[error("category must be 1 to {MAX_CATEGORY_CHARS} characters")]
    Category,
    #[error("the machine has no slot map; set one first (PUT /admin/devices/{0}/slots)")]
    NoPlanogram(DeviceId),
    /// Dropping a slot while items of it are promised would leave those promises to land on whatever
    /// slot takes its name later. They end within the vend window (or an order's payment window).
    #[error("slot {slot} has {reserved} item(s) promised to customers; drop it once they are vended (try again in a minute)")]
    SlotReserved { slot: Slot, reserved: u32 },
    /// A machine's count taken before the slot's last sale (a retried, redelivered or replayed
    /// report) would undo that sale.
    #[error("slot {slot} sold an item at {sold_at}, after this count was taken at {counted_at}; count again")]
    StaleCount {
        slot: Slot,
        sold_at: Timestamp,
        counted_at: Timestamp,
    },
}

impl InventoryError {
    /// The error code of the HTTP answer (400 for every one of them).
    pub fn code(&self) -> &'static str {
        match self {
            InventoryError::UnknownSku(_) => "unknown_sku",
            InventoryError::Capacity { .. } => "invalid_capacity",
            InventoryError::Stock { .. } => "invalid_stock",
            InventoryError::UnknownSlot(_) => "unknown_slot",
            InventoryError::DuplicateSlot(_) => "duplicate_slot",
            InventoryError::TooManySlots { .. } => "too_many_slots",
            InventoryError::CurrencyMismatch { .. } => "currency_mismatch",
            InventoryError::NonPositivePrice => "invalid_price",
            InventoryError::ProductCurrency { .. } => "currency_mismatch",
            InventoryError::Name => "invalid_name",
            InventoryError::Category => "invalid_category",
            InventoryError::NoPlanogram(_) => "no_slot_map",
            InventoryError::SlotReserved { .. } => "slot_reserved",
            InventoryError::StaleCount { .. } => "stale_count",
        }
    }

    /// Whether the same request may succeed later without change (`slot_reserved`: once the promised
    /// items are vended); every other refusal is final.
    pub fn may_succeed_later(&self) -> bool {
        matches!(
            self,
            InventoryError::SlotReserved { .. } | InventoryError::StaleCount { .. }
        )
    }
}

/// A product as an operator defines it, replacing `existing` (if any): a non-empty name, a positive
/// price, in the currency it had.
pub fn update_product(
    existing: Option<&Product>,
    sku: Sku,
    name: &str,
    price: Money,
    category: Option<&str>,
) -> Result<Product, InventoryError> {
    if let Some(was) = existing.map(|p| p.price.currency()) {
        if was != price.currency() {
            return Err(InventoryError::ProductCurrency {
                sku,
                was,
                asked: price.currency(),
            });
        }
    }
    product(sku, name, price, category)
}

/// A product as an operator defines it: a non-empty name, a positive price.
pub fn product(
    sku: Sku,
    name: &str,
    price: Money,
    category: Option<&str>,
) -> Result<Product, InventoryError> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > MAX_NAME_CHARS {
        return Err(InventoryError::Name);
    }
    let category = match category.map(str::trim) {
        None => None,
        Some(c) if c.is_empty() || c.chars().count() > MAX_CATEGORY_CHARS => {
            return Err(InventoryError::Category)
        }
        Some(c) => Some(c.to_owned()),
    };
    if price.is_zero() {
        return Err(InventoryError::NonPositivePrice);
    }
    Ok(Product {
        sku,
        name: name.to_owned(),
        price,
        category,
    })
}

/// The rows a planogram replacement or a restock writes (each with its version bumped) and removes
/// (as read: removal is conditional on that version).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SlotWrites {
    pub write: Vec<SlotStock>,
    pub remove: Vec<SlotStock>,
}

/// Replaces a machine's slot map. A slot keeps its stock (clamped to the new capacity) when it keeps
/// its sku, and starts at 0 otherwise; it keeps its reservations either way (they are promises about
/// that slot, released or delivered by their purchase). Slots not in `spec` are removed — but not while
/// items of theirs are promised ([`InventoryError::SlotReserved`]).
pub fn replace_planogram(
    device: &Device,
    current: &[SlotStock],
    spec: &[SlotSpec],
    catalogue: &BTreeMap<Sku, Product>,
) -> Result<SlotWrites, InventoryError> {
    if spec.len() > MAX_SLOTS {
        return Err(InventoryError::TooManySlots { count: spec.len() });
    }
    let mut seen = std::collections::BTreeSet::new();
    for s in spec {
        if !seen.insert(&s.slot) {
            return Err(InventoryError::DuplicateSlot(s.slot.clone()));
        }
        if !catalogue.contains_key(&s.sku) {
            return Err(InventoryError::UnknownSku(s.sku.clone()));
        }
        if s.capacity == 0 || s.capacity > MAX_CAPACITY {
            return Err(InventoryError::Capacity {
                slot: s.slot.clone(),
                capacity: u64::from(s.capacity),
            });
        }
        if let Some(p) = s.price {
            check_price(device.currency, p, &s.slot, || "its".to_owned())?;
        }
    }
    // The catalogue's price must be in the machine's currency too, where a slot relies on it.
    for s in spec.iter().filter(|s| s.price.is_none()) {
        if let Some(p) = catalogue.get(&s.sku) {
            check_price(device.currency, p.price, &s.slot, || {
                format!("product {}'s", s.sku)
            })?;
        }
    }
    let old: BTreeMap<&Slot, &SlotStock> = current.iter().map(|r| (&r.slot, r)).collect();
    let mut writes = SlotWrites::default();
    for s in spec {
        let row = match old.get(&s.slot) {
            Some(r) => {
                let stock = if r.sku == s.sku {
                    r.stock.min(s.capacity)
                } else {
                    0
                };
                SlotStock {
                    sku: s.sku.clone(),
                    capacity: s.capacity,
                    price: s.price,
                    stock,
                    version: r.version + 1,
                    ..(*r).clone()
                }
            }
            None => SlotStock {
                sold_at: None,
                device_id: device.id.clone(),
                slot: s.slot.clone(),
                sku: s.sku.clone(),
                capacity: s.capacity,
                price: s.price,
                stock: 0,
                reserved: 0,
                version: 1,
            },
        };
        // Every kept row is written, unchanged ones too: its version is then part of the write's
        // condition, so two replacements decided on the same read cannot both land (one would
        // otherwise keep a slot the other dropped, leaving a map neither asked for).
        writes.write.push(row);
    }
    writes.remove = current
        .iter()
        .filter(|r| !seen.contains(&r.slot))
        .cloned()
        .collect();
    if let Some(r) = writes.remove.iter().find(|r| r.reserved > 0) {
        return Err(InventoryError::SlotReserved {
            slot: r.slot.clone(),
            reserved: r.reserved,
        });
    }
    Ok(writes)
}

/// Sets the count of each named slot (after a refill, or as the machine counted). Every slot must be in
/// the planogram and every count within 0..=capacity; otherwise nothing changes.
pub fn restock(
    device: &DeviceId,
    current: &[SlotStock],
    counts: &[StockCount],
) -> Result<SlotWrites, InventoryError> {
    if current.is_empty() {
        return Err(InventoryError::NoPlanogram(device.clone()));
    }
    let mut rows: BTreeMap<&Slot, SlotStock> =
        current.iter().map(|r| (&r.slot, r.clone())).collect();
    let mut seen = std::collections::BTreeSet::new();
    for c in counts {
        if !seen.insert(&c.slot) {
            return Err(InventoryError::DuplicateSlot(c.slot.clone()));
        }
        let Some(row) = rows.get_mut(&c.slot) else {
            return Err(InventoryError::UnknownSlot(c.slot.clone()));
        };
        if c.stock > row.capacity {
            return Err(InventoryError::Stock {
                slot: c.slot.clone(),
                stock: i64::from(c.stock),
                capacity: row.capacity,
            });
        }
        row.stock = c.stock;
    }
    let write = current
        .iter()
        .filter_map(|old| {
            let new = rows.get(&old.slot)?;
            (new.stock != old.stock).then(|| SlotStock {
                version: old.version + 1,
                ..new.clone()
            })
        })
        .collect();
    Ok(SlotWrites {
        write,
        remove: Vec::new(),
    })
}

/// A slot's price (its own, or its product's: `whose`) must be in the machine's currency.
/// The machine's own count, taken at `counted_at` (its signed request time, whole seconds): as
/// [`restock`], but a slot that sold an item in a later second than the count was signed is refused
/// ([`InventoryError::StaleCount`]) — a retry after a lost answer, a queue's redelivery or a replay
/// would otherwise undo that sale.
pub fn count_by_machine(
    device: &DeviceId,
    current: &[SlotStock],
    counts: &[StockCount],
    counted_at: Timestamp,
) -> Result<SlotWrites, InventoryError> {
    for c in counts {
        let sold_after = current
            .iter()
            .find(|r| r.slot == c.slot)
            .and_then(|r| r.sold_at)
            // The machine signs in whole seconds: only a sale in a later second is surely after the
            // count (one in the same second may have been counted, and is given the benefit).
            .filter(|sold_at| sold_at.secs() > counted_at.secs());
        if let Some(sold_at) = sold_after {
            return Err(InventoryError::StaleCount {
                slot: c.slot.clone(),
                sold_at,
                counted_at,
            });
        }
    }
    restock(device, current, counts)
}

fn check_price(
    currency: Currency,
    price: Money,
    slot: &Slot,
    whose: impl FnOnce() -> String,
) -> Result<(), InventoryError> {
    if price.currency() != currency {
        return Err(InventoryError::CurrencyMismatch {
            slot: slot.clone(),
            whose: whose(),
            expected: currency,
            got: price.currency(),
        });
    }
    if price.is_zero() {
        return Err(InventoryError::NonPositivePrice);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::Mode;

    fn cny(minor: u64) -> Money {
        Money::new(minor, Currency::Cny).unwrap_or(Money::zero(Currency::Cny))
    }

    fn sku(s: &str) -> Sku {
        Sku::parse(s).unwrap()
    }

    fn slot(s: &str) -> Slot {
        Slot::parse(s).unwrap()
    }

    fn machine() -> Device {
        Device {
            id: DeviceId::parse("vm-1").unwrap(),
            mode: Mode::Mixed,
            currency: Currency::Cny,
        }
    }

    fn catalogue() -> BTreeMap<Sku, Product> {
        [("cola", 350), ("water", 200)]
            .into_iter()
            .map(|(s, p)| (sku(s), product(sku(s), s, cny(p), None).unwrap()))
            .collect()
    }

    fn spec(s: &str, k: &str, capacity: u32) -> SlotSpec {
        SlotSpec {
            slot: slot(s),
            sku: sku(k),
            capacity,
            price: None,
        }
    }

    #[test]
    fn skus_take_letters_digits_dots_dashes_and_underscores_up_to_64() {
        assert!(Sku::parse("coke-330ml_v2.1").is_ok());
        assert!(Sku::parse("a".repeat(64)).is_ok());
        assert!(Sku::parse("a".repeat(65)).is_err());
        for bad in ["", "co ke", "cola/1", "cola#1", "é"] {
            assert!(Sku::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_new_planogram_starts_empty_and_a_kept_sku_keeps_its_stock() {
        let m = machine();
        let first = replace_planogram(
            &m,
            &[],
            &[spec("A1", "cola", 10), spec("A2", "water", 8)],
            &catalogue(),
        )
        .unwrap();
        assert_eq!(first.write.len(), 2);
        assert!(first.write.iter().all(|r| r.stock == 0 && r.version == 1));
        let rows: Vec<SlotStock> = first
            .write
            .into_iter()
            .map(|r| SlotStock {
                stock: 6,
                reserved: 1,
                ..r
            })
            .collect();
        let second = replace_planogram(
            &m,
            &rows,
            &[spec("A1", "cola", 4), spec("A2", "cola", 8)],
            &catalogue(),
        )
        .unwrap();
        let a1 = second.write.iter().find(|r| r.slot == slot("A1")).unwrap();
        assert_eq!(
            (a1.stock, a1.reserved, a1.version),
            (4, 1, 2),
            "kept, clamped to capacity"
        );
        let a2 = second.write.iter().find(|r| r.slot == slot("A2")).unwrap();
        assert_eq!((a2.stock, a2.reserved), (0, 1), "a new sku starts at 0");
        assert_eq!(
            replace_planogram(&m, &rows, &[spec("A1", "cola", 10)], &catalogue())
                .map_err(|e| e.code()),
            Err("slot_reserved"),
            "A2 has an item promised: it cannot be dropped yet"
        );
        let rows: Vec<SlotStock> = rows
            .into_iter()
            .map(|r| SlotStock { reserved: 0, ..r })
            .collect();
        let third = replace_planogram(&m, &rows, &[spec("A1", "cola", 10)], &catalogue()).unwrap();
        assert_eq!(
            third.write.iter().map(|r| r.version).collect::<Vec<_>>(),
            vec![2],
            "an unchanged slot is written too, so the write is conditional on its version"
        );
        assert_eq!(third.remove.len(), 1);
    }

    #[test]
    fn a_bad_planogram_is_refused_whole() {
        let m = machine();
        let cat = catalogue();
        let cases = [
            (vec![spec("A1", "tea", 10)], "unknown_sku"),
            (vec![spec("A1", "cola", 0)], "invalid_capacity"),
            (vec![spec("A1", "cola", 1001)], "invalid_capacity"),
            (
                vec![spec("A1", "cola", 1), spec("A1", "water", 1)],
                "duplicate_slot",
            ),
            (
                vec![SlotSpec {
                    price: Money::new(300, Currency::Usd),
                    ..spec("A1", "cola", 5)
                }],
                "currency_mismatch",
            ),
        ];
        for (s, code) in cases {
            assert_eq!(
                replace_planogram(&m, &[], &s, &cat).map_err(|e| e.code()),
                Err(code)
            );
        }
        let many: Vec<SlotSpec> = (0..=MAX_SLOTS)
            .map(|i| spec(&format!("S{i}"), "cola", 1))
            .collect();
        assert_eq!(
            replace_planogram(&m, &[], &many, &cat).map_err(|e| e.code()),
            Err("too_many_slots")
        );
    }

    #[test]
    fn a_restock_names_known_slots_within_capacity() {
        let m = machine();
        let rows = replace_planogram(&m, &[], &[spec("A1", "cola", 10)], &catalogue())
            .unwrap()
            .write;
        let ok = restock(
            &m.id,
            &rows,
            &[StockCount {
                slot: slot("A1"),
                stock: 10,
            }],
        )
        .unwrap();
        assert_eq!((ok.write[0].stock, ok.write[0].version), (10, 2));
        assert_eq!(
            restock(
                &m.id,
                &rows,
                &[StockCount {
                    slot: slot("A1"),
                    stock: 11
                }]
            )
            .map_err(|e| e.code()),
            Err("invalid_stock")
        );
        assert_eq!(
            restock(
                &m.id,
                &rows,
                &[StockCount {
                    slot: slot("B9"),
                    stock: 1
                }]
            )
            .map_err(|e| e.code()),
            Err("unknown_slot")
        );
        assert_eq!(
            restock(
                &m.id,
                &[],
                &[StockCount {
                    slot: slot("A1"),
                    stock: 1
                }]
            )
            .map_err(|e| e.code()),
            Err("no_slot_map")
        );
    }

    #[test]
    fn low_is_available_at_or_below_a_quarter_of_capacity() {
        let row = |stock, reserved| SlotStock {
            sold_at: None,
            device_id: machine().id,
            slot: slot("A1"),
            sku: sku("cola"),
            capacity: 8,
            price: None,
            stock,
            reserved,
            version: 1,
        };
        assert!(!row(3, 0).is_low(LOW_SHARE));
        assert!(row(2, 0).is_low(LOW_SHARE));
        assert!(
            row(3, 1).is_low(LOW_SHARE),
            "reserved items are not available"
        );
        assert_eq!(row(1, 3).available(), 0);
    }
}
