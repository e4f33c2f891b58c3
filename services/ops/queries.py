"""Named SQL of `orderstatus doctor` and `watch`: the runbook's queries, in working form.

Fixed from the seed runbook:
- AVG_CHANGE_INTERVAL: the seed put LAG() inside AVG(); PostgreSQL refuses window functions inside
  aggregates, so the intervals are computed in a subquery first.
- SLOWEST_STATEMENTS: pg_stat_statements' total_time/mean_time are total_exec_time/mean_exec_time
  since PostgreSQL 13.
- INDEXES: the seed looked for orders_status_created_idx among order_status_events' indexes; it is
  an index of orders. Both tables are listed.
- TABLE_SIZES: the partitioned tables (migration 0015) are summed over their partitions (the
  seed's pg_total_relation_size of a partitioned table is 0).
The operator's own queries carry /* orderstatus-ops */ and are left out of the slowest statements
(by their aliases too: pg_stat_statements keeps the text of a statement's first run)."""

from typing import LiteralString

PING: LiteralString = "SELECT 1"

CONFLICTS_24H: LiteralString = """
SELECT /* orderstatus-ops */ count(*) AS conflicts_24h
FROM public.widget_events
WHERE type = 'order_status_conflict'
  AND created_at > now() - interval '24 hours'
"""

CHANGES_PER_RESTAURANT_7D: LiteralString = """
SELECT /* orderstatus-ops */ restaurant_id, count(*) AS changes_7d
FROM public.order_status_events
WHERE created_at > now() - interval '7 days'
GROUP BY restaurant_id
ORDER BY changes_7d DESC
LIMIT %(limit)s
"""

AVG_CHANGE_INTERVAL_1H: LiteralString = """
SELECT /* orderstatus-ops */ avg(interval_seconds) AS avg_interval_seconds, count(*) AS changes_1h
FROM (
  SELECT EXTRACT(EPOCH FROM (created_at - lag(created_at) OVER (ORDER BY created_at)))
         AS interval_seconds
  FROM public.order_status_events
  WHERE created_at > now() - interval '1 hour'
) AS gaps
"""

INDEXES: LiteralString = """
SELECT tablename, indexname
FROM pg_indexes
WHERE schemaname = 'public' AND tablename IN ('orders', 'order_status_events')
ORDER BY tablename, indexname
"""

# A partitioned table (migration 0015) has no storage of its own: its size is its partitions'.
TABLE_SIZES: LiteralString = """
SELECT schemaname, tablename, pg_size_pretty(bytes) AS size, bytes
FROM (
  SELECT schemaname, tablename,
         (SELECT sum(pg_total_relation_size(tree.relid))::bigint
          FROM pg_partition_tree((quote_ident(schemaname) || '.' || quote_ident(tablename))::regclass)
            AS tree) AS bytes
  FROM pg_tables
  WHERE schemaname = 'public'
    AND tablename IN ('orders', 'order_status_events', 'command_outcomes', 'widget_events')
) AS sized
ORDER BY bytes DESC
"""

PG_STAT_STATEMENTS_INSTALLED: LiteralString = """
SELECT EXISTS (SELECT FROM pg_extension WHERE extname = 'pg_stat_statements')
"""

SLOWEST_STATEMENTS: LiteralString = """
SELECT left(regexp_replace(query, '\\s+', ' ', 'g'), 160) AS query, calls,
       round(total_exec_time::numeric, 2) AS total_exec_ms,
       round(mean_exec_time::numeric, 3) AS mean_exec_ms
FROM pg_stat_statements
WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND query ~ '\\m(orders|order_status_events|command_outcomes)\\M'
  AND query !~ 'pg_stat_statements|pg_catalog|pg_indexes|orderstatus-ops|changes_7d|avg_interval_seconds|conflicts_24h|make_interval'
  AND query !~* '\\m(create|alter|drop|comment on|grant|revoke)\\M'
ORDER BY mean_exec_time DESC
LIMIT %(limit)s
"""

OUTCOMES_SINCE: LiteralString = """
SELECT /* orderstatus-ops */ command_type, outcome, count(*) AS commands
FROM public.command_outcomes
WHERE created_at > now() - make_interval(secs => %(seconds)s)
GROUP BY command_type, outcome
"""

# ---- retention (services/ops/retention.py) -------------------------------------------------------
# One batch per statement, so no statement holds many row locks for long. (No FOR UPDATE SKIP
# LOCKED: it needs UPDATE, which the services' role must not have; two purges at once just wait.)

PURGE_OUTCOMES: LiteralString = """
WITH doomed AS (
    SELECT /* orderstatus-ops */ command_id FROM public.command_outcomes
    WHERE created_at < greatest(%(all_before)s, %(refused_before)s)
      AND (created_at < %(all_before)s OR outcome = ANY(%(refused)s))
    LIMIT %(batch)s
)
DELETE FROM public.command_outcomes AS o USING doomed WHERE o.command_id = doomed.command_id
"""

PURGE_WIDGET_EVENTS: LiteralString = """
WITH doomed AS (
    SELECT /* orderstatus-ops */ id FROM public.widget_events
    WHERE created_at < %(before)s
    LIMIT %(batch)s
)
DELETE FROM public.widget_events AS w USING doomed WHERE w.id = doomed.id
"""

# ---- partitions (services/ops/partitions.py; functions of migration 0014), as the owner ---------

CREATE_PARTITIONS: LiteralString = """
SELECT /* orderstatus-ops */ created
FROM public.partition_create_days(%(parent)s::regclass, %(first_day)s, %(last_day)s) AS created
"""

DROP_PARTITIONS_BEFORE: LiteralString = """
SELECT /* orderstatus-ops */ dropped
FROM public.partition_drop_before(%(parent)s::regclass, %(cutoff)s) AS dropped
"""

# How far ahead each partitioned table is covered, and what its default partition caught.
PARTITION_COVERAGE: LiteralString = """
SELECT /* orderstatus-ops */ parent.relname AS parent,
       (SELECT max(day) FROM public.partition_days(parent.oid)) AS last_day,
       (SELECT count(*) FROM public.partition_days(parent.oid)) AS partitions,
       CASE WHEN to_regclass('public.' || quote_ident(parent.relname || '_default')) IS NOT NULL
            THEN (xpath('/row/c/text()', query_to_xml(
                     format('SELECT count(*) AS c FROM public.%I', parent.relname || '_default'),
                     false, true, '')))[1]::text::bigint
            ELSE 0 END AS default_rows
FROM pg_partitioned_table pt JOIN pg_class parent ON parent.oid = pt.partrelid
WHERE parent.relnamespace = 'public'::regnamespace
ORDER BY parent.relname
"""
