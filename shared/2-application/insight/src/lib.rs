//! The sales report (see `docs/sales.md`): the seven sections computed from facts, and their text,
//! JSON, HTML (inline SVG charts) and campaign CSV renderings. Pure: the caller reads the facts.
//!
//! - [`period`]: the report's dates at a fixed offset, and the previous period.
//! - [`report`]: the JSON document as types (plus the `daily` section for the chart).
//! - [`build`]: facts → report, in one pass over interned keys.
//! - `to_text`, `to_html`: renderings of a report; `campaign_csv` the campaign's buyers.
//! - [`synthetic`]: deterministic made-up facts for the benchmark, the browser check and demos.

mod engine;
mod html;
pub mod period;
mod render;
pub mod report;
pub mod synthetic;
mod text;

pub use engine::build;
pub use period::{parse_offset, Period, PeriodError};
pub use report::{Amount, SalesReport, Tag};
