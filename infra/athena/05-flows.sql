-- vendpay sales report, section 5 "flows" (docs/sales.md). Athena engine v3 (Trino SQL).
-- Parameters (Athena execution parameters, in this order, each a quoted string; infra/athena/README.md):
--   1 from: the period's first day, 'YYYY-MM-DD'   2 to: its last day (included), 'YYYY-MM-DD'
--   3 REPORT_TZ: the fixed UTC offset the days are in, '+08:00' (±HH:MM, or 'Z')
--   e.g. aws athena start-query-execution ... --execution-parameters "'2026-11-01'" "'2026-11-30'" "'+08:00'"
-- Long form, one row per JSON value:
--   part 'flows': one row per (flow, currency) with a payment in the period, in the order pay_first,
--     purchase_first, refused, then currency; money as <field>_minor in `currency`; refund_share 4 decimals.
--   part 'failed_vends' | 'unconfirmed_holds' | 'refunds_failed': one row, the count in `n`.
--   part 'refused_payments' | 'anomalies': one row per map key (`key`, `n`), ordered by key; keys
--     absent from the map are 0. A refused payment's key is its refund reason without `refused:`.
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
pay AS (
    SELECT flow, currency,
           count(DISTINCT "session") AS sessions,
           count(*) AS payments,
           sum(amount) AS paid
    FROM cur
    WHERE kind = 'payment'
    GROUP BY flow, currency
),
other AS (
    SELECT flow, currency,
           sum(CASE WHEN kind = 'sale' THEN amount ELSE 0 END) AS spent,
           sum(CASE WHEN kind = 'refund' AND status = 'issued' THEN amount ELSE 0 END) AS refunded
    FROM cur
    GROUP BY flow, currency
),
flow_rows AS (
    SELECT p.flow, p.currency, p.sessions, p.payments,
           CAST(floor(CAST(p.paid AS DOUBLE) / p.payments) AS BIGINT) AS average_payment_minor,
           CAST(floor(CAST(coalesce(o.spent, 0) AS DOUBLE) / p.sessions) AS BIGINT) AS average_spent_minor,
           -- refunded / paid, half away from zero, 4 decimals, in exact integers (README, "Rounding").
           CASE WHEN p.paid > 0
                THEN CAST(CAST(floor(CAST(2 * coalesce(o.refunded, 0) * 10000 + p.paid AS DOUBLE) / (2 * p.paid))
                               AS DOUBLE) / 10000 AS DECIMAL(20, 4))
                ELSE CAST(0 AS DECIMAL(20, 4)) END AS refund_share
    FROM pay p
    LEFT JOIN other o ON o.flow = p.flow AND o.currency = p.currency
),
counts AS (
    SELECT 'failed_vends' AS part, CAST(NULL AS VARCHAR) AS "key",
           sum(CASE WHEN kind = 'vend_failed' THEN 1 ELSE 0 END) AS n
    FROM cur
    UNION ALL
    SELECT 'unconfirmed_holds', CAST(NULL AS VARCHAR),
           sum(CASE WHEN kind = 'anomaly' AND reason = 'unconfirmed_vend' THEN 1 ELSE 0 END)
    FROM cur
    UNION ALL
    SELECT 'refunds_failed', CAST(NULL AS VARCHAR),
           sum(CASE WHEN kind = 'refund' AND status = 'failed' THEN 1 ELSE 0 END)
    FROM cur
    UNION ALL
    SELECT 'refused_payments', substr(reason, 9), count(*)
    FROM cur
    WHERE kind = 'refund' AND status = 'issued' AND reason LIKE 'refused:%'
    GROUP BY substr(reason, 9)
    UNION ALL
    SELECT 'anomalies', reason, count(*)
    FROM cur
    WHERE kind = 'anomaly'
    GROUP BY reason
)
SELECT part, flow, currency, sessions, payments, average_payment_minor, average_spent_minor, refund_share,
       "key", n
FROM (
    SELECT 'flows' AS part, 0 AS part_order,
           CASE flow WHEN 'pay_first' THEN 1 WHEN 'purchase_first' THEN 2 WHEN 'refused' THEN 3 ELSE 4 END
               AS flow_order,
           flow, currency, sessions, payments, average_payment_minor, average_spent_minor, refund_share,
           CAST(NULL AS VARCHAR) AS "key", CAST(NULL AS BIGINT) AS n
    FROM flow_rows
    UNION ALL
    SELECT part,
           CASE part WHEN 'failed_vends' THEN 1 WHEN 'unconfirmed_holds' THEN 2 WHEN 'refused_payments' THEN 3
                     WHEN 'refunds_failed' THEN 4 ELSE 5 END,
           0, CAST(NULL AS VARCHAR), CAST(NULL AS VARCHAR), CAST(NULL AS BIGINT), CAST(NULL AS BIGINT),
           CAST(NULL AS BIGINT), CAST(NULL AS BIGINT), CAST(NULL AS DECIMAL(20, 4)),
           "key", CAST(coalesce(n, 0) AS BIGINT)
    FROM counts
) t
CROSS JOIN bounds b  -- no period, no counts
ORDER BY part_order, flow_order, currency, "key"
