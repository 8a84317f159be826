-- Exact per-status counts from the trigger-kept deltas (counts.py), and the reads of records.

-- name: status_counts
SELECT endpoint, status, sum(delta) FROM {schema}.status_deltas
WHERE %(e)s::text IS NULL OR endpoint = %(e)s
GROUP BY endpoint, status HAVING sum(delta) <> 0

-- name: open_request_lines
-- Rows in an open request are in flight (their records still say pending).
SELECT endpoint, sum(lines) FROM {schema}.requests
WHERE state = 'in_flight' AND (%(e)s::text IS NULL OR endpoint = %(e)s)
GROUP BY endpoint

-- name: delta_rows
SELECT count(*) FROM {schema}.status_deltas

-- name: compact_deltas
-- Concurrent compactions are safe: each folds only the rows it deleted.
WITH gone AS (DELETE FROM {schema}.status_deltas RETURNING endpoint, status, delta)
INSERT INTO {schema}.status_deltas (endpoint, status, delta)
SELECT endpoint, status, sum(delta) FROM gone GROUP BY endpoint, status HAVING sum(delta) <> 0

-- name: waiting_records
SELECT status, count(*), min(updated_at) FROM {schema}.records
WHERE endpoint = %s AND status = ANY(%s) AND updated_at < now() - make_interval(secs => %s)
GROUP BY status

-- name: waiting_requests
SELECT sum(lines), min(sent_at) FROM {schema}.requests
WHERE endpoint = %s AND state = 'in_flight' AND sent_at < now() - make_interval(secs => %s)

-- name: records
SELECT endpoint, source_key, status, reason, reason_source, attempts, document,
       partition, first_seen_at, updated_at, last_attempt_at, imported_at, line
FROM {schema}.record_status
WHERE (%(endpoint)s::text IS NULL OR endpoint = %(endpoint)s)
  AND (%(keys)s::text[] IS NULL OR source_key = ANY(%(keys)s))
  AND (%(statuses)s::text[] IS NULL OR status = ANY(%(statuses)s))
  AND (%(reason)s::text IS NULL OR reason ILIKE %(reason)s)
  AND (%(older)s::float IS NULL OR updated_at < now() - make_interval(secs => %(older)s))
ORDER BY endpoint, updated_at, source_key
LIMIT %(limit)s

-- name: rows_to_act_on
-- Every endpoint's rows an operator must act on (the attention index), oldest first.
SELECT endpoint, source_key, status, reason, reason_source, parent_key, updated_at
FROM {schema}.records
WHERE status IN ('rejected', 'held', 'delivery_unknown')
ORDER BY updated_at, endpoint, source_key
LIMIT %s

-- name: diverged
SELECT count(*) OVER (), source_key, status, document, diverged_at FROM {schema}.records
WHERE endpoint = %s AND diverged_hash IS NOT NULL
ORDER BY diverged_at, source_key LIMIT %s

-- name: missing_keys
SELECT k FROM unnest(%s::text[]) AS k
WHERE NOT EXISTS (SELECT 1 FROM {schema}.records r WHERE r.endpoint = %s AND r.source_key = k)

-- name: sendable_keys
SELECT source_key, line IS NOT NULL FROM {schema}.records WHERE endpoint = %s AND source_key = ANY(%s)

-- name: imported_keys
-- Every row Gestimum holds, for the deletions check: compared with the CRM by key, in chunks.
SELECT source_key, document, imported_at FROM {schema}.records
WHERE endpoint = %s AND status = 'imported'
