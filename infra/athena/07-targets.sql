-- vendpay sales report, section 7 "targets" (docs/sales.md). Athena engine v3 (Trino SQL).
-- Parameters (Athena execution parameters, in this order, each a quoted string; infra/athena/README.md):
--   1 from: the period's first day, 'YYYY-MM-DD'   2 to: its last day (included), 'YYYY-MM-DD'
--   3 REPORT_TZ: the fixed UTC offset the days are in, '+08:00' (±HH:MM, or 'Z')
--   e.g. aws athena start-query-execution ... --execution-parameters "'2026-11-01'" "'2026-11-30'" "'+08:00'"
-- One row per (target, top item): `place` = the target's position (1-5: the first district rows by
-- rank, then currency), its district, currency, rank, buyers and tag counts (section 6, by district),
-- and `item_place` (1-3) with sku, slot, product, units of one of its 3 items with most units in the
-- period (sales in that district and currency; ties: sku or slot ascending). A target without sales
-- has one row with item_place null. Reads every partition up to the period's end (for the tags).
WITH digits AS (
    SELECT d FROM (VALUES (0), (1), (2), (3), (4), (5), (6), (7), (8), (9)) AS t (d)
),
day_numbers AS (
    -- 0 .. 99999: days since 1970-01-01 (through the year 2243).
    SELECT CAST(a.d * 10000 + b.d * 1000 + c.d * 100 + e.d * 10 + g.d AS BIGINT) AS n
    FROM digits a CROSS JOIN digits b CROSS JOIN digits c CROSS JOIN digits e CROSS JOIN digits g
),
offsets AS (
    -- Every UTC offset ±HH:MM up to ±14:59, and Z, with its minutes east of UTC.
    SELECT s.sgn || lpad(CAST(h.hh AS VARCHAR), 2, '0') || ':' || lpad(CAST(m.mm AS VARCHAR), 2, '0') AS label,
           CAST(s.factor * (h.hh * 60 + m.mm) AS BIGINT) AS minutes
    FROM (VALUES ('+', 1), ('-', -1)) AS s (sgn, factor)
    CROSS JOIN (SELECT a.d * 10 + b.d AS hh FROM digits a CROSS JOIN digits b WHERE a.d * 10 + b.d <= 14) h
    CROSS JOIN (SELECT a.d * 10 + b.d AS mm FROM digits a CROSS JOIN digits b WHERE a.d * 10 + b.d <= 59) m
    UNION ALL
    SELECT 'Z', CAST(0 AS BIGINT)
),
params AS (
    -- The three parameters, each bound once. Athena takes `?` in WHERE clauses only, so each picks its
    -- row out of a relation of every value it can take. A string that is not a date fails the query
    -- (the CAST); a reversed period, one longer than 366 days or an unknown offset selects no row, and
    -- every section then comes back empty.
    SELECT f.n AS from_day, t.n - f.n + 1 AS days, o.minutes AS offset_min
    FROM day_numbers f CROSS JOIN day_numbers t CROSS JOIN offsets o
    WHERE f.n = date_diff('day', DATE '1970-01-01', CAST(? AS DATE))
      AND t.n = date_diff('day', DATE '1970-01-01', CAST(? AS DATE))
      AND o.label = ?
      AND t.n >= f.n AND t.n - f.n < 366
),
bounds AS (
    -- The period [start_ms, end_ms) and the previous one [prev_ms, start_ms), Unix ms: midnights at the offset.
    SELECT p.days, p.offset_min,
           p.from_day * 86400000 - p.offset_min * 60000 AS start_ms,
           (p.from_day + p.days) * 86400000 - p.offset_min * 60000 AS end_ms,
           (p.from_day - p.days) * 86400000 - p.offset_min * 60000 AS prev_ms
    FROM params p
),
partitions AS (
    -- Tags look back to each buyer's first sale ever: every partition (`dt`, the UTC day Firehose
    -- delivered on) up to the day after the period ends. Joined on `dt` (an equi-join), so Trino
    -- prunes the later partitions by this list (dynamic partition pruning).
    SELECT CAST(CAST(date_add('day', n.n, DATE '1970-01-01') AS DATE) AS VARCHAR) AS dt
    FROM day_numbers n CROSS JOIN bounds b
    WHERE n.n <= CAST(floor(CAST(b.end_ms AS DOUBLE) / 86400000) AS BIGINT) + 1
),
once AS (
    -- Each fact once: Firehose may deliver a record twice.
    SELECT * FROM (
        SELECT f.*, row_number() OVER (PARTITION BY f.id ORDER BY f.dt) AS copy_no
        FROM facts f JOIN partitions p ON p.dt = f.dt
    ) WHERE copy_no = 1
),
cur AS (
    SELECT o.* FROM once o CROSS JOIN bounds b WHERE o."at" >= b.start_ms AND o."at" < b.end_ms
),
nets AS (
    SELECT district, currency,
           count(DISTINCT device) AS machines,
           sum(CASE WHEN kind = 'payment' THEN amount
                    WHEN kind = 'refund' AND status = 'issued' THEN -amount
                    ELSE 0 END) AS net
    FROM cur
    GROUP BY district, currency
),
ranked AS (
    -- Section 2's rank: net_per_machine_day = floor(net / (machines × days)) descending, net
    -- descending, district ascending.
    SELECT district, currency,
           row_number() OVER (PARTITION BY currency
                              ORDER BY CAST(floor(CAST(n.net AS DOUBLE) / (n.machines * b.days)) AS BIGINT) DESC,
                                       n.net DESC, n.district ASC) AS "rank"
    FROM nets n CROSS JOIN bounds b
),
targets AS (
    SELECT district, currency, "rank", place FROM (
        SELECT district, currency, "rank", row_number() OVER (ORDER BY "rank", currency) AS place
        FROM ranked
    ) WHERE place <= 5
),
buyer_sales AS (
    -- Sales with a buyer key up to the period's end; local_day = the date at REPORT_TZ (days since 1970).
    SELECT o.buyer_key, o.district, o."at", o.id, o.currency, o.amount,
           CAST(floor(CAST(o."at" + b.offset_min * 60000 AS DOUBLE) / 86400000) AS BIGINT) AS local_day
    FROM once o CROSS JOIN bounds b
    WHERE o.kind = 'sale' AND o.buyer_key IS NOT NULL AND o."at" < b.end_ms
),
buyers AS (
    SELECT s.buyer_key,
           min(s."at") AS first_at,
           count(DISTINCT CASE WHEN s."at" >= b.start_ms THEN s.local_day END) AS days,
           sum(CASE WHEN s."at" >= b.start_ms THEN 1 ELSE 0 END) AS sales_in_period,
           -- the period's last 14 days start at end − 14 days (to + 1 day − 14 days)
           sum(CASE WHEN s."at" < b.end_ms - 14 * 86400000 THEN 1 ELSE 0 END) AS sales_before_last14,
           sum(CASE WHEN s."at" >= b.end_ms - 14 * 86400000 THEN 1 ELSE 0 END) AS sales_in_last14
    FROM buyer_sales s CROSS JOIN bounds b
    GROUP BY s.buyer_key
),
home AS (
    -- The buyer's district: that of their latest sale up to the period's end (ties: greatest id).
    SELECT buyer_key, district FROM (
        SELECT buyer_key, district,
               row_number() OVER (PARTITION BY buyer_key ORDER BY "at" DESC, id DESC) AS recent
        FROM buyer_sales
    ) WHERE recent = 1
),
spend AS (
    SELECT s.buyer_key, s.currency, sum(s.amount) AS spend
    FROM buyer_sales s CROSS JOIN bounds b
    WHERE s."at" >= b.start_ms
    GROUP BY s.buyer_key, s.currency
    HAVING sum(s.amount) > 0
),
spend_ranked AS (
    SELECT buyer_key,
           row_number() OVER (PARTITION BY currency ORDER BY spend DESC, buyer_key ASC) AS place,
           count(*) OVER (PARTITION BY currency) AS spenders
    FROM spend
),
big AS (
    -- The first ceil(n / 10) of each currency: place ≤ ceil(n / 10) ⇔ 10 · (place − 1) < n.
    SELECT DISTINCT buyer_key FROM spend_ranked WHERE 10 * (place - 1) < spenders
),
tagged AS (
    SELECT u.buyer_key, h.district, u.sales_in_period,
           CASE WHEN u.first_at >= b.start_ms THEN 1 ELSE 0 END AS is_new,
           CASE WHEN u.days >= 3 THEN 1 ELSE 0 END AS is_regular,
           CASE WHEN u.days >= 8 THEN 1 ELSE 0 END AS is_loyal,
           CASE WHEN g.buyer_key IS NOT NULL THEN 1 ELSE 0 END AS is_big_spender,
           CASE WHEN u.sales_before_last14 > 0 AND u.sales_in_last14 = 0 THEN 1 ELSE 0 END AS is_lapsed
    FROM buyers u
    JOIN home h ON h.buyer_key = u.buyer_key
    LEFT JOIN big g ON g.buyer_key = u.buyer_key
    CROSS JOIN bounds b
),
kept AS (
    -- A buyer with no tag and no sale in the period is left out.
    SELECT * FROM tagged
    WHERE sales_in_period > 0 OR is_new + is_regular + is_loyal + is_big_spender + is_lapsed > 0
),
district_tags AS (
    SELECT district, count(*) AS buyers,
           sum(is_new) AS is_new, sum(is_regular) AS is_regular, sum(is_loyal) AS is_loyal,
           sum(is_big_spender) AS is_big_spender, sum(is_lapsed) AS is_lapsed
    FROM kept
    GROUP BY district
),
item_sales AS (
    SELECT c.district, c.currency, c.sku, CASE WHEN c.sku IS NULL THEN c.slot END AS item_slot,
           c.product, c."at", c.id
    FROM cur c
    WHERE c.kind = 'sale'
),
item_units AS (
    SELECT district, currency, sku, item_slot, count(*) AS units,
           max(CASE WHEN recent = 1 THEN product END) AS product
    FROM (
        SELECT s.*, row_number() OVER (PARTITION BY s.district, s.currency, s.sku, s.item_slot
                                       ORDER BY s."at" DESC, s.id DESC) AS recent
        FROM item_sales s
    ) r
    GROUP BY district, currency, sku, item_slot
),
top_items AS (
    SELECT i.*, row_number() OVER (PARTITION BY i.district, i.currency
                                   ORDER BY i.units DESC, coalesce(i.sku, i.item_slot) ASC,
                                            CASE WHEN i.sku IS NULL THEN 1 ELSE 0 END) AS item_place
    FROM item_units i
)
SELECT t.place,
       t.district,
       t.currency,
       t."rank",
       coalesce(d.buyers, 0) AS buyers,
       coalesce(d.is_new, 0) AS "new",
       coalesce(d.is_regular, 0) AS regular,
       coalesce(d.is_loyal, 0) AS loyal,
       coalesce(d.is_big_spender, 0) AS big_spender,
       coalesce(d.is_lapsed, 0) AS lapsed,
       i.item_place,
       i.sku,
       i.item_slot AS slot,
       i.product,
       i.units
FROM targets t
LEFT JOIN district_tags d ON d.district = t.district
LEFT JOIN top_items i ON i.district = t.district AND i.currency = t.currency AND i.item_place <= 3
ORDER BY t.place, i.item_place
