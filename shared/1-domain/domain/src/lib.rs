//! vendpay's domain: the rules that decide money, with no I/O.
//!
//! - [`money`]: `Money` (integer minor units + ISO 4217 currency) and Alipay's decimal strings.
//! - [`ids`]: identifiers parsed at the edge (`DeviceId`, `TradeNo`, `RefundId`, ...).
//! - [`device`]: a machine's mode and currency.
//! - [`inventory`]: the catalogue, a machine's slot map (planogram), stock and reservations.
//! - [`facts`]: the sales facts each decision records (for reports and Athena), buyers only as keys.
//! - [`session`]: the pay-first session and purchase-first order state machine (see
//!   `docs/contract.md`, “Money rules”) as pure functions from (state, command, now) to (new
//!   state, effects, reply).
//! - [`time`]: timestamps, the `Clock` port and the configurable windows.
//!
//! Every later layer (the Alipay client, DynamoDB/SQLite storage, the Lambda handlers, the local server)
//! only translates to and from these types; no decision about money is made anywhere else.

pub mod device;
pub mod facts;
pub mod ids;
pub mod inventory;
pub mod money;
pub mod session;
pub mod time;

pub use device::{Device, Mode};
pub use ids::{
    BuyerId, DeviceId, IdError, MerchantTradeNo, OrderId, RefundId, RequestId, SessionId, Sku,
    Slot, TradeNo,
};
pub use inventory::{
    InventoryError, Product, SlotSpec, SlotStock, SlotWrites, StockChange, StockCount,
};
pub use money::{Currency, Money, MoneyError};
pub use session::*;
pub use time::{Clock, SystemClock, Timestamp, Windows};
