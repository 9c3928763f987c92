//! The `facts` table: the sales facts each commit writes (in the commit's own savepoint, so a decision
//! and its facts land together or not at all) and the reads `vendpay report` makes of them (see
//! `docs/sales.md`). One column per fact field, so the report reads rows without decoding JSON and
//! an operator can query the table with `sqlite3`.
//!
//! A fact row that does not decode (edited by hand, written by a newer build) is left out of a report
//! with `alert = "unreadable_fact"`: one bad row never stops the operator seeing the rest.

use rusqlite::{params, Connection, Row};
use vendpay_app::StoreError;
use vendpay_domain::facts::{BuyerHistory, BuyerKey, Fact, FactKind, Flow};
use vendpay_domain::Timestamp;

use crate::row_codec::Ctx;

/// Schema version 4: the facts table, indexed by time (reports) and by buyer (their history).
pub(crate) const SCHEMA_4: &str = "
CREATE TABLE facts (
    id          TEXT PRIMARY KEY NOT NULL,
    kind        TEXT NOT NULL,
    at          INTEGER NOT NULL,
    device      TEXT NOT NULL,
    district    TEXT NOT NULL,
    location    TEXT,
    session     TEXT NOT NULL,
    flow        TEXT NOT NULL,
    buyer_key   TEXT,
    currency    TEXT NOT NULL,
    amount      INTEGER NOT NULL,
    trade_no    TEXT,
    request_id  TEXT,
    refund_id   TEXT,
    slot        TEXT,
    sku         TEXT,
    product     TEXT,
    stock_after INTEGER,
    reason      TEXT,
    status      TEXT
) STRICT;
CREATE INDEX facts_by_time ON facts (at, id);
CREATE INDEX facts_sales_by_buyer ON facts (buyer_key, at, id) WHERE kind = 'sale' AND buyer_key IS NOT NULL;
";

const COLUMNS: &str = "id, kind, at, device, district, location, session, flow, buyer_key, currency, \
                       amount, trade_no, request_id, refund_id, slot, sku, product, stock_after, reason, status";

/// Writes a commit's facts; a fact already stored (the same id) is kept as it is.
pub(crate) fn insert(conn: &Connection, facts: &[Fact]) -> Result<(), StoreError> {
    if facts.is_empty() {
        return Ok(());
    }
    let mut stmt = conn
        .prepare_cached(&format!(
            "INSERT INTO facts ({COLUMNS}) VALUES \
             (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20) \
             ON CONFLICT (id) DO NOTHING"
        ))
        .ctx("writing facts")?;
    for f in facts {
        let amount = i64::try_from(f.amount).map_err(|_| {
            StoreError::Permanent(format!("fact {}: amount {} is too large", f.id, f.amount).into())
        })?;
        stmt.execute(params![
            f.id,
            f.kind.as_str(),
            f.at.millis(),
            f.device.as_str(),
            f.district,
            f.location,
            f.session.as_str(),
            f.flow.as_str(),
            f.buyer_key.as_ref().map(BuyerKey::as_str),
            f.currency.code(),
            amount,
            f.trade_no.as_ref().map(|v| v.as_str()),
            f.request_id.as_ref().map(|v| v.as_str()),
            f.refund_id.as_ref().map(|v| v.as_str()),
            f.slot.as_ref().map(|v| v.as_str()),
            f.sku.as_ref().map(|v| v.as_str()),
            f.product,
            f.stock_after,
            f.reason,
            f.status,
        ])
        .ctx(format!("writing fact {}", f.id))?;
    }
    Ok(())
}

/// Facts with `from <= at < to`, ordered by time then id.
pub(crate) fn read(
    conn: &Connection,
    from: Timestamp,
    to: Timestamp,
) -> Result<Vec<Fact>, StoreError> {
    let what = "reading facts";
    let mut stmt = conn
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM facts WHERE at >= ?1 AND at < ?2 ORDER BY at, id"
        ))
        .ctx(what)?;
    let mut rows = stmt.query(params![from.millis(), to.millis()]).ctx(what)?;
    let mut out = Vec::new();
    let mut unreadable = 0usize;
    while let Some(row) = rows.next().ctx(what)? {
        match decode(row) {
            Ok(f) => out.push(f),
            Err(why) => {
                unreadable += 1;
                if unreadable <= 10 {
                    tracing::error!(alert = "unreadable_fact", error = %why, "a fact row does not decode; left out of the report");
                }
            }
        }
    }
    if unreadable > 10 {
        tracing::error!(
            alert = "unreadable_fact",
            count = unreadable,
            "fact rows left out of the report"
        );
    }
    Ok(out)
}

/// The first and last `at` of the stored facts (none: no facts).
pub(crate) fn time_range(
    conn: &mut Connection,
    _now: Timestamp,
) -> Result<(Option<Timestamp>, Option<Timestamp>), StoreError> {
    let what = "reading the facts' time range";
    conn.query_row("SELECT MIN(at), MAX(at) FROM facts", [], |r| {
        Ok((
            r.get::<_, Option<i64>>(0)?.map(Timestamp::from_millis),
            r.get::<_, Option<i64>>(1)?.map(Timestamp::from_millis),
        ))
    })
    .ctx(what)
}

/// Every buyer with a sale before `before`: first and latest sale, and the latest one's district.
pub(crate) fn buyers_before(
    conn: &Connection,
    before: Timestamp,
) -> Result<Vec<BuyerHistory>, StoreError> {
    let what = "reading buyers' earlier sales";
    let mut stmt = conn
        .prepare_cached(
            "SELECT buyer_key, first, at, district FROM ( \
               SELECT buyer_key, at, district, \
                      MIN(at) OVER (PARTITION BY buyer_key) AS first, \
                      ROW_NUMBER() OVER (PARTITION BY buyer_key ORDER BY at DESC, id DESC) AS n \
               FROM facts WHERE kind = 'sale' AND buyer_key IS NOT NULL AND at < ?1) \
             WHERE n = 1 ORDER BY buyer_key",
        )
        .ctx(what)?;
    let mut rows = stmt.query(params![before.millis()]).ctx(what)?;
    let mut out = Vec::new();
    while let Some(row) = rows.next().ctx(what)? {
        let key: String = row.get(0).ctx(what)?;
        let Some(buyer_key) = BuyerKey::parse(&key) else {
            tracing::error!(alert = "unreadable_fact", buyer_key = %key, "a sale's buyer key is malformed; left out");
            continue;
        };
        out.push(BuyerHistory {
            buyer_key,
            first_sale: Timestamp::from_millis(row.get(1).ctx(what)?),
            last_sale: Timestamp::from_millis(row.get(2).ctx(what)?),
            last_district: row.get(3).ctx(what)?,
        });
    }
    Ok(out)
}

/// One row as a fact, or why it is not one.
fn decode(row: &Row<'_>) -> Result<Fact, String> {
    fn text(row: &Row<'_>, i: usize) -> Result<String, String> {
        row.get::<_, String>(i).map_err(|e| e.to_string())
    }
    fn opt(row: &Row<'_>, i: usize) -> Result<Option<String>, String> {
        row.get::<_, Option<String>>(i).map_err(|e| e.to_string())
    }
    fn id<T: TryFrom<String>>(v: Option<String>) -> Result<Option<T>, String>
    where
        T::Error: std::fmt::Display,
    {
        v.map(|s| T::try_from(s).map_err(|e| e.to_string()))
            .transpose()
    }
    let fact_id = text(row, 0)?;
    let bad = |field: &str, v: &str| format!("fact {fact_id}: bad {field} {v:?}");
    let kind = text(row, 1)?;
    let flow = text(row, 7)?;
    let buyer = opt(row, 8)?;
    let amount: i64 = row.get(10).map_err(|e| e.to_string())?;
    let stock_after: Option<i64> = row.get(17).map_err(|e| e.to_string())?;
    Ok(Fact {
        kind: FactKind::parse(&kind).ok_or_else(|| bad("kind", &kind))?,
        at: Timestamp::from_millis(row.get(2).map_err(|e| e.to_string())?),
        device: id(Some(text(row, 3)?))?.ok_or_else(|| bad("device", ""))?,
        district: text(row, 4)?,
        location: opt(row, 5)?,
        session: id(Some(text(row, 6)?))?.ok_or_else(|| bad("session", ""))?,
        flow: Flow::parse(&flow).ok_or_else(|| bad("flow", &flow))?,
        buyer_key: match buyer {
            Some(k) => Some(BuyerKey::parse(&k).ok_or_else(|| bad("buyer_key", &k))?),
            None => None,
        },
        currency: id(Some(text(row, 9)?))?.ok_or_else(|| bad("currency", ""))?,
        amount: u64::try_from(amount).map_err(|_| bad("amount", &amount.to_string()))?,
        trade_no: id(opt(row, 11)?)?,
        request_id: id(opt(row, 12)?)?,
        refund_id: id(opt(row, 13)?)?,
        slot: id(opt(row, 14)?)?,
        sku: id(opt(row, 15)?)?,
        product: opt(row, 16)?,
        stock_after: stock_after
            .map(|s| u32::try_from(s).map_err(|_| bad("stock_after", &s.to_string())))
            .transpose()?,
        reason: opt(row, 18)?,
        status: opt(row, 19)?,
        id: fact_id,
    })
}
