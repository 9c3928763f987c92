//! The operators' side of catalogue and inventory: products, slot maps, restocks (by an operator or
//! counted by the machine), a machine's inventory and the fleet's restocking round.
//!
//! The rules are the domain's (`vendpay_domain::inventory`); this service reads what they need,
//! writes their result conditionally and re-decides after a lost race, as the ledger does for money.
//! Stock changes caused by sales are not made here: they ride in the ledger's commits.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Serialize;
use vendpay_domain::inventory::{self, LOW_SHARE};
use vendpay_domain::{
    DeviceId, Money, Product, Rejection, Sku, Slot, SlotSpec, SlotStock, StockCount, Timestamp,
};

use crate::ledger::AppError;
use crate::ports::{DeviceRecord, DeviceStore, InventoryStore, SessionStore, StoreError};

/// How often a slot-map change or restock is re-decided after losing a race with a sale.
const MAX_ATTEMPTS: u32 = 8;

/// One slot as operators and machines see it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct InventoryLine {
    pub slot: Slot,
    pub sku: Sku,
    pub name: String,
    pub price: Money,
    pub capacity: u32,
    pub stock: u32,
    pub reserved: u32,
    /// Available (stock − reserved) at or below a quarter of capacity.
    pub low: bool,
}

/// `GET /admin/devices/{id}/inventory`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MachineInventory {
    pub device_id: DeviceId,
    pub slots: Vec<InventoryLine>,
}

/// A machine of the restocking round, with its low slots only.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RoundMachine {
    pub device_id: DeviceId,
    pub name: String,
    pub location: Option<String>,
    pub slots: Vec<InventoryLine>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RoundDistrict {
    pub district: String,
    pub machines: Vec<RoundMachine>,
}

/// `GET /admin/inventory?below=`: the slots to refill, by district then machine.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RestockingRound {
    pub districts: Vec<RoundDistrict>,
}

/// The service behind the catalogue and inventory routes.
#[derive(Clone)]
pub struct Inventory {
    store: Arc<dyn InventoryStore>,
    sessions: Arc<dyn SessionStore>,
    devices: Arc<dyn DeviceStore>,
}

impl Inventory {
    pub fn new(
        store: Arc<dyn InventoryStore>,
        sessions: Arc<dyn SessionStore>,
        devices: Arc<dyn DeviceStore>,
    ) -> Inventory {
        Inventory {
            store,
            sessions,
            devices,
        }
    }

    /// Creates or replaces a product (`PUT /admin/products/{sku}`).
    pub async fn put_product(
        &self,
        sku: Sku,
        name: &str,
        price: Money,
        category: Option<&str>,
    ) -> Result<Product, AppError> {
        let existing = self.sessions.product(&sku).await?;
        let product = inventory::update_product(existing.as_ref(), sku, name, price, category)?;
        self.store.put_product(&product).await?;
        Ok(product)
    }

    /// The catalogue, ordered by sku.
    pub async fn products(&self) -> Result<Vec<Product>, AppError> {
        Ok(self.store.products().await?)
    }

    /// Replaces a machine's slot map; answers its inventory.
    pub async fn set_slots(
        &self,
        device: &DeviceId,
        spec: &[SlotSpec],
    ) -> Result<MachineInventory, AppError> {
        let record = self.device(device).await?;
        for _ in 0..MAX_ATTEMPTS {
            let catalogue = self.catalogue().await?;
            let current = self.sessions.slots(device).await?;
            let writes = inventory::replace_planogram(&record.device, &current, spec, &catalogue)?;
            match self.store.write_slots(device, &writes).await {
                Ok(()) => return self.inventory(device).await,
                Err(StoreError::Conflict(_)) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(AppError::Contention(format!("slot map of {device}")))
    }

    /// Sets slot counts after a refill (an operator); answers the inventory.
    pub async fn restock(
        &self,
        device: &DeviceId,
        counts: &[StockCount],
    ) -> Result<MachineInventory, AppError> {
        self.count(device, counts, None).await
    }

    /// The machine's own count, taken at `counted_at`: refused for a slot that sold an item since
    /// (`stale_count`), so a retry, a redelivery or a replay never undoes a sale.
    pub async fn machine_count(
        &self,
        device: &DeviceId,
        counts: &[StockCount],
        counted_at: Timestamp,
    ) -> Result<MachineInventory, AppError> {
        self.count(device, counts, Some(counted_at)).await
    }

    async fn count(
        &self,
        device: &DeviceId,
        counts: &[StockCount],
        counted_at: Option<Timestamp>,
    ) -> Result<MachineInventory, AppError> {
        self.device(device).await?;
        for _ in 0..MAX_ATTEMPTS {
            let current = self.sessions.slots(device).await?;
            let writes = match counted_at {
                Some(at) => inventory::count_by_machine(device, &current, counts, at)?,
                None => inventory::restock(device, &current, counts)?,
            };
            if writes.write.is_empty() {
                return self.inventory(device).await;
            }
            match self.store.write_slots(device, &writes).await {
                Ok(()) => return self.inventory(device).await,
                Err(StoreError::Conflict(_)) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(AppError::Contention(format!("restock of {device}")))
    }

    /// A machine's slots with names, prices, stock and reservations.
    pub async fn inventory(&self, device: &DeviceId) -> Result<MachineInventory, AppError> {
        self.device(device).await?;
        let catalogue = self.catalogue().await?;
        let rows = self.sessions.slots(device).await?;
        Ok(MachineInventory {
            device_id: device.clone(),
            slots: lines(&rows, &catalogue, LOW_SHARE, false)?,
        })
    }

    /// Every slot whose available items are at or below `below` of its capacity, grouped by district
    /// (by name) and machine (by id); machines and districts with nothing low are left out.
    pub async fn restocking_round(&self, below: f64) -> Result<RestockingRound, AppError> {
        let catalogue = self.catalogue().await?;
        let mut districts: BTreeMap<String, Vec<RoundMachine>> = BTreeMap::new();
        for id in self.store.stocked_devices().await? {
            let Some(record) = self.devices.device(&id).await? else {
                continue;
            };
            let rows = self.sessions.slots(&id).await?;
            let slots = lines(&rows, &catalogue, below, true)?;
            if slots.is_empty() {
                continue;
            }
            districts
                .entry(record.district.clone())
                .or_default()
                .push(RoundMachine {
                    device_id: id,
                    name: record.name,
                    location: record.location,
                    slots,
                });
        }
        Ok(RestockingRound {
            districts: districts
                .into_iter()
                .map(|(district, machines)| RoundDistrict { district, machines })
                .collect(),
        })
    }

    async fn device(&self, id: &DeviceId) -> Result<DeviceRecord, AppError> {
        self.devices
            .device(id)
            .await?
            .ok_or_else(|| AppError::UnknownDevice(id.clone()))
    }

    async fn catalogue(&self) -> Result<BTreeMap<Sku, Product>, AppError> {
        Ok(self
            .store
            .products()
            .await?
            .into_iter()
            .map(|p| (p.sku.clone(), p))
            .collect())
    }
}

/// The lines of a machine's slots (`only_low`: those at or below `share`), `low` judged at `share`.
fn lines(
    rows: &[SlotStock],
    catalogue: &BTreeMap<Sku, Product>,
    share: f64,
    only_low: bool,
) -> Result<Vec<InventoryLine>, AppError> {
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        let low = r.is_low(share);
        if only_low && !low {
            continue;
        }
        // Products are never deleted and a slot map only names known ones: a missing product is a
        // store that cannot be right, not a client's mistake.
        let product = catalogue.get(&r.sku).ok_or_else(|| {
            Rejection::Inconsistent(format!(
                "slot {} of {} sells {}, which is not in the catalogue",
                r.slot, r.device_id, r.sku
            ))
        })?;
        out.push(InventoryLine {
            slot: r.slot.clone(),
            sku: r.sku.clone(),
            name: product.name.clone(),
            price: r.price.unwrap_or(product.price),
            capacity: r.capacity,
            stock: r.stock,
            reserved: r.reserved,
            low,
        });
    }
    Ok(out)
}
