//! A vending machine as the money rules see it.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::ids::DeviceId;
use crate::money::Currency;

/// Which flows a machine runs (see `docs/contract.md`, “Money rules”). In `mixed` a payment goes
/// to an awaiting order if there is one, and otherwise opens or tops up a session.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    PayFirst,
    PurchaseFirst,
    #[default]
    Mixed,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::PayFirst => "pay_first",
            Mode::PurchaseFirst => "purchase_first",
            Mode::Mixed => "mixed",
        }
    }

    pub fn takes_sessions(self) -> bool {
        matches!(self, Mode::PayFirst | Mode::Mixed)
    }

    pub fn takes_orders(self) -> bool {
        matches!(self, Mode::PurchaseFirst | Mode::Mixed)
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown mode {0:?}: expected pay_first, purchase_first or mixed")]
pub struct UnknownMode(pub String);

impl FromStr for Mode {
    type Err = UnknownMode;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "pay_first" => Ok(Mode::PayFirst),
            "purchase_first" => Ok(Mode::PurchaseFirst),
            "mixed" => Ok(Mode::Mixed),
            other => Err(UnknownMode(other.to_owned())),
        }
    }
}

/// The money-relevant part of a registered machine.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Device {
    pub id: DeviceId,
    pub mode: Mode,
    pub currency: Currency,
}

/// Where a machine stood when a session opened: its district and location (kept with the session, so
/// every later fact of it carries them without a read).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Place {
    pub district: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
}
