-- vendpay sales report, section 6 "tags" (docs/sales.md). Athena engine v3 (Trino SQL).
-- Parameters (Athena execution parameters, in this order, each a quoted string; infra/athena/README.md):
--   1 from: the period's first day, 'YYYY-MM-DD'   2 to: its last day (included), 'YYYY-MM-DD'
--   3 REPORT_TZ: the fixed UTC offset the days are in, '+08:00' (±HH:MM, or 'Z')
--   e.g. aws athena start-query-execution ... --execution-parameters "'2026-11-01'" "'2026-11-30'" "'+08:00'"
-- Long form: `level` = 'all' (one row: `buyers` and the five counts of every buyer kept), then
-- 'district' (one row per buyer district, ordered by name). Unlike the other sections this one reads
-- every partition up to the period's end: `new` needs each buyer's first sale ever.
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
per_level AS (
    SELECT 'all' AS "level", CAST(NULL AS VARCHAR) AS district, count(*) AS buyers,
           coalesce(sum(is_new), 0) AS "new", coalesce(sum(is_regular), 0) AS regular,
           coalesce(sum(is_loyal), 0) AS loyal, coalesce(sum(is_big_spender), 0) AS big_spender,
           coalesce(sum(is_lapsed), 0) AS lapsed
    FROM kept
    UNION ALL
    SELECT 'district', district, count(*),
           sum(is_new), sum(is_regular), sum(is_loyal), sum(is_big_spender), sum(is_lapsed)
    FROM kept
    GROUP BY district
)
SELECT "level", district, buyers, "new", regular, loyal, big_spender, lapsed
FROM per_level
CROSS JOIN bounds b  -- no period, no totals
ORDER BY CASE "level" WHEN 'all' THEN 0 ELSE 1 END, district
