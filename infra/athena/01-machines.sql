-- vendpay sales report, section 1 "machines" (docs/sales.md). Athena engine v3 (Trino SQL).
-- Parameters (Athena execution parameters, in this order, each a quoted string; infra/athena/README.md):
--   1 from: the period's first day, 'YYYY-MM-DD'   2 to: its last day (included), 'YYYY-MM-DD'
--   3 REPORT_TZ: the fixed UTC offset the days are in, '+08:00' (±HH:MM, or 'Z')
--   e.g. aws athena start-query-execution ... --execution-parameters "'2026-11-01'" "'2026-11-30'" "'+08:00'"
-- One row per (device, currency) with any fact in the period; money as <field>_minor in `currency`.
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
    -- The partitions that can hold the facts of [prev_ms, end_ms): `dt` is the UTC day Firehose delivered
    -- on, from the day before the previous period starts to the day after the period ends. Joined on
    -- `dt` (an equi-join), so Trino prunes the partitions by this list (dynamic partition pruning).
    SELECT CAST(CAST(date_add('day', n.n, DATE '1970-01-01') AS DATE) AS VARCHAR) AS dt
    FROM day_numbers n CROSS JOIN bounds b
    WHERE n.n >= CAST(floor(CAST(b.prev_ms AS DOUBLE) / 86400000) AS BIGINT) - 1
      AND n.n <= CAST(floor(CAST(b.end_ms AS DOUBLE) / 86400000) AS BIGINT) + 1
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
place AS (
    -- Where the machine stood: its latest fact in the period (ties: greatest id), any currency.
    SELECT device, district, location FROM (
        SELECT device, district, location,
               row_number() OVER (PARTITION BY device ORDER BY "at" DESC, id DESC) AS recent
        FROM cur
    ) WHERE recent = 1
),
agg AS (
    SELECT device, currency,
           sum(CASE WHEN kind = 'sale' THEN 1 ELSE 0 END) AS sales,
           sum(CASE WHEN kind = 'sale' THEN amount ELSE 0 END) AS revenue,
           sum(CASE WHEN kind = 'payment' THEN amount ELSE 0 END) AS gross,
           sum(CASE WHEN kind = 'refund' AND status = 'issued' THEN amount ELSE 0 END) AS refunds,
           count(DISTINCT CASE WHEN kind = 'sale' THEN "session" END) AS baskets
    FROM cur
    GROUP BY device, currency
)
SELECT a.device,
       p.district,
       p.location,
       a.currency,
       a.sales,
       a.revenue AS revenue_minor,
       a.gross AS gross_minor,
       a.refunds AS refunds_minor,
       a.gross - a.refunds AS net_minor,
       -- floor(revenue / baskets): exact for |revenue| < 2^53 (README, "Integer division").
       CASE WHEN a.baskets = 0 THEN 0
            ELSE CAST(floor(CAST(a.revenue AS DOUBLE) / a.baskets) AS BIGINT) END AS average_basket_minor
FROM agg a
JOIN place p ON p.device = a.device
ORDER BY a.device, a.currency
