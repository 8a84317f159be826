-- Staging: CRM versions into `records`, and the moves made before sending (staging.py).

-- name: stage_temp_table
CREATE TEMP TABLE IF NOT EXISTS staged_rows (
    source_key text, line text, content_hash text, parent_key text, group_key text, sort_key bigint, reason text,
    partition text
) ON COMMIT DELETE ROWS

-- name: stage_master
-- events: stage, stage_invalid
-- Master data: a changed version is taken whatever was sent (an idempotent upsert), except
-- a row whose delivery is unknown. A row stored in flight (stores before migration 7) takes
-- the new version and stays in flight: the outcome of the line sent is recorded against
-- `sent_hash`, then the change is sent next. `force` re-stages unchanged rows too.
-- `settled`: staged rows the upsert would leave alone, dropped before it (one primary-key
-- lookup each), because the upsert locks every existing row it meets: a WAL record and a
-- dirtied page per unchanged row. The upsert's own WHERE still decides, on the latest
-- version, for every row that gets there. OFFSET 0 keeps it a lookup per staged row (an
-- anti-join could hash every record). `known` false (the previous chunk was taken whole: a
-- first staging) skips the lookups, which would find nothing.
WITH settled AS (
    SELECT s.source_key FROM staged_rows s
    WHERE %(known)s AND EXISTS (SELECT 1 FROM {schema}.records o
                                WHERE o.endpoint = %(endpoint)s AND o.source_key = s.source_key
                                  AND (o.content_hash = s.content_hash AND NOT %(force)s
                                       OR o.status = 'delivery_unknown')
                                OFFSET 0)
), taken AS (
INSERT INTO {schema}.records AS r (endpoint, source_key, status, line, content_hash,
    parent_key, group_key, sort_key, reason, reason_source, partition, run_id, source_version)
SELECT %(endpoint)s, s.source_key,
       CASE WHEN s.line IS NULL THEN 'rejected' ELSE 'pending' END,
       s.line, s.content_hash, s.parent_key, s.group_key, s.sort_key, s.reason,
       CASE WHEN s.line IS NULL THEN 'local' END, coalesce(s.partition, %(partition)s), %(run_id)s,
       %(version)s::numeric
FROM staged_rows s
WHERE NOT EXISTS (SELECT 1 FROM settled d WHERE d.source_key = s.source_key)
ON CONFLICT (endpoint, source_key) DO UPDATE SET
    status = CASE WHEN r.status = 'in_flight' THEN 'in_flight' ELSE EXCLUDED.status END,
    line = EXCLUDED.line, content_hash = EXCLUDED.content_hash,
    parent_key = EXCLUDED.parent_key, group_key = EXCLUDED.group_key,
    sort_key = EXCLUDED.sort_key, reason = EXCLUDED.reason,
    reason_source = EXCLUDED.reason_source, partition = EXCLUDED.partition,
    run_id = EXCLUDED.run_id, source_version = EXCLUDED.source_version, updated_at = now()
WHERE r.status <> 'delivery_unknown'
  AND (r.content_hash IS DISTINCT FROM EXCLUDED.content_hash
       OR (%(force)s AND r.status NOT IN ('ignored', 'in_flight')))
  -- Never an older CRM version over a newer one (a backfill's snapshot beside the hourly run's).
  AND (%(version)s::numeric IS NULL OR r.source_version IS NULL OR r.source_version <= %(version)s::numeric)
RETURNING source_key, status, content_hash, reason, partition
), logged AS (
    -- The record log (migration 0009): each version taken, for `history`.
    INSERT INTO {schema}.record_log (endpoint, source_key, event, content_hash, run_id, partition, source_version,
        reason)
    SELECT %(endpoint)s, t.source_key, CASE WHEN t.reason IS NULL THEN 'stage' ELSE 'stage_invalid' END,
           t.content_hash, %(run_id)s, t.partition, %(version)s::numeric, t.reason
    FROM taken t
)
SELECT status, partition FROM taken

-- name: stage_stock
-- events: stage, stage_invalid
-- Stock movements are immutable once known: only a pending or rejected movement (by our
-- validation, or by Gestimum line by line: provably not imported) or one withdrawn (never
-- sent) is re-staged. A movement in an open request keeps the line sent,
-- whatever the staging's snapshot (not_in_open_request, migration 0008, evaluated last): a
-- new version is noted aside (stage_stock_diverged), never sent after it.
-- `settled`: as stage_master's, the rows the upsert would refuse on the snapshot's version
-- (unchanged, or already sent); the upsert's WHERE still decides for the others.
WITH settled AS (
    SELECT s.source_key FROM staged_rows s
    WHERE %(known)s AND EXISTS (
        SELECT 1 FROM {schema}.records o
        WHERE o.endpoint = %(endpoint)s AND o.source_key = s.source_key
          AND NOT ((o.status = 'pending' OR (o.status = 'rejected' AND o.reason_source IN ('local', 'gestimum')))
                   AND o.content_hash IS DISTINCT FROM s.content_hash
                   OR (o.status = 'ignored' AND o.reason_source = 'crm'))
        OFFSET 0)
), taken AS (
INSERT INTO {schema}.records AS r (endpoint, source_key, status, line, content_hash,
    parent_key, group_key, sort_key, reason, reason_source, partition, run_id, source_version)
SELECT %(endpoint)s, s.source_key,
       CASE WHEN s.line IS NULL THEN 'rejected' ELSE 'pending' END,
       s.line, s.content_hash, s.parent_key, s.group_key, s.sort_key, s.reason,
       CASE WHEN s.line IS NULL THEN 'local' END, coalesce(s.partition, %(partition)s), %(run_id)s,
       %(version)s::numeric
FROM staged_rows s
WHERE NOT EXISTS (SELECT 1 FROM settled d WHERE d.source_key = s.source_key)
ON CONFLICT (endpoint, source_key) DO UPDATE SET
    status = EXCLUDED.status,
    line = EXCLUDED.line, content_hash = EXCLUDED.content_hash,
    parent_key = EXCLUDED.parent_key, group_key = EXCLUDED.group_key,
    sort_key = EXCLUDED.sort_key, reason = EXCLUDED.reason,
    reason_source = EXCLUDED.reason_source, partition = EXCLUDED.partition,
    run_id = EXCLUDED.run_id, source_version = EXCLUDED.source_version, updated_at = now()
WHERE ((r.status = 'pending' OR (r.status = 'rejected' AND r.reason_source IN ('local', 'gestimum')))
       AND r.content_hash IS DISTINCT FROM EXCLUDED.content_hash
       -- Withdrawn because it was gone from the CRM at send time (never sent): back, it reopens.
       OR (r.status = 'ignored' AND r.reason_source = 'crm'))
  AND (%(version)s::numeric IS NULL OR r.source_version IS NULL OR r.source_version <= %(version)s::numeric)
  AND {schema}.not_in_open_request(r.endpoint, r.source_key)
RETURNING source_key, status, content_hash, reason, partition
), logged AS (
    -- The record log (migration 0009): each version taken, for `history`.
    INSERT INTO {schema}.record_log (endpoint, source_key, event, content_hash, run_id, partition, source_version,
        reason)
    SELECT %(endpoint)s, t.source_key, CASE WHEN t.reason IS NULL THEN 'stage' ELSE 'stage_invalid' END,
           t.content_hash, %(run_id)s, t.partition, %(version)s::numeric, t.reason
    FROM taken t
)
SELECT status, partition FROM taken

-- name: stage_stock_diverged
-- Movements already sent keep their line; a different CRM version is noted aside (and
-- cleared when the CRM reverts), for the divergence check.
UPDATE {schema}.records r SET
    diverged_hash = CASE WHEN r.content_hash = s.content_hash THEN NULL ELSE s.content_hash END,
    diverged_at = CASE WHEN r.content_hash = s.content_hash THEN NULL ELSE coalesce(r.diverged_at, now()) END
FROM staged_rows s
WHERE r.endpoint = %(endpoint)s AND r.source_key = s.source_key
  AND (%(version)s::numeric IS NULL OR r.source_version IS NULL OR r.source_version <= %(version)s::numeric)
  AND (r.content_hash IS DISTINCT FROM s.content_hash OR r.diverged_hash IS NOT NULL)
  AND r.diverged_hash IS DISTINCT FROM (CASE WHEN r.content_hash = s.content_hash THEN NULL ELSE s.content_hash END)

-- name: stage_count_refused
-- Rows left alone are unchanged, or a version the store refused (a stock movement already
-- sent or in flight, or an older version than the one staged): after the upsert only the
-- latter still differ.
SELECT count(*) FROM staged_rows s
JOIN {schema}.records r ON r.endpoint = %s AND r.source_key = s.source_key
WHERE r.content_hash IS DISTINCT FROM s.content_hash

-- name: reject_case_collisions
-- events: collide
-- Mid-backfill the records are rarely analyzed, and a nested loop on the folded key is
-- quadratic (minutes at 10k rows): the caller turns nested loops off, so both sides hash.
WITH collisions AS (
    SELECT n.source_key, min(o.source_key) AS other
    FROM {schema}.records n
    JOIN {schema}.records o ON o.endpoint = n.endpoint AND o.source_key <> n.source_key
         AND {schema}.folded_key(o.source_key, %(composite)s) = {schema}.folded_key(n.source_key, %(composite)s)
    -- Every partner counts, whatever its status: one rejected or ignored today may be fixed
    -- or re-queued tomorrow, and then overwrite the other in Gestimum.
    WHERE n.endpoint = %(e)s AND n.status = 'pending'
    GROUP BY n.source_key
), refused AS (
UPDATE {schema}.records r SET status = 'rejected', reason_source = 'local', updated_at = now(),
    reason = %(e)s || ' record ' || r.source_key || ' field ' || %(f)s
        || ': the code differs only by case or trailing spaces from record ' || c.other
        || ', and Gestimum would store both as one record; rename one of them in the CRM,'
        || ' then re-queue the other with `gestimum-pipeline retry`'
FROM collisions c
WHERE r.endpoint = %(e)s AND r.source_key = c.source_key
RETURNING r.source_key, r.reason, r.content_hash, r.partition
), logged AS (
    INSERT INTO {schema}.record_log (endpoint, source_key, event, content_hash, partition, reason)
    SELECT %(e)s, f.source_key, 'collide', f.content_hash, f.partition, f.reason FROM refused f
)
SELECT source_key, reason, partition FROM refused

-- name: hold_orphans
-- events: hold
UPDATE {schema}.records c SET status = 'held', reason_source = 'parent', updated_at = now(),
    reason = 'held until ' || p.endpoint || ' record ' || p.source_key || ' imports (it is '
             || p.status || coalesce(': ' || p.reason, '') || ')'
FROM {schema}.records p
WHERE c.endpoint = %s AND c.status = 'pending'
  AND p.endpoint = %s AND p.source_key = c.parent_key
  AND p.status IN ('rejected', 'held', 'ignored')

-- name: release_children
-- events: release
UPDATE {schema}.records c SET status = 'pending', reason = NULL, reason_source = NULL, updated_at = now()
FROM {schema}.records p
WHERE c.endpoint = %s AND p.endpoint = %s AND p.source_key = c.parent_key
  AND p.status = 'imported'
  AND (c.status = 'held'
       OR (c.status = 'rejected' AND c.reason_source = 'gestimum' AND p.imported_at > c.last_attempt_at))

-- name: withdraw
-- events: withdraw
UPDATE {schema}.records SET status = 'ignored', reason = %s, reason_source = 'crm', updated_at = now()
WHERE endpoint = %s AND source_key = ANY(%s) AND status = 'pending'
RETURNING source_key
