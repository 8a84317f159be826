-- One row's whole story, for `gestimum-pipeline history` (history.py). Read-only; none of these
-- runs on a sync's path. The record log and the actions are read by key; requests by request id
-- or, while still holding their keys (open, failed, unknown, abandoned), by key.

-- name: history_record
SELECT r.endpoint, r.source_key, s.status, s.request_id, r.reason, r.reason_source, r.attempts, r.document,
       r.partition, r.run_id, r.first_seen_at, r.updated_at, r.last_attempt_at, r.imported_at,
       r.content_hash, r.imported_hash, r.sent_hash, r.parent_key, r.diverged_hash, r.diverged_at,
       r.line IS NOT NULL AS has_line
FROM {schema}.records r
JOIN {schema}.record_status s ON s.endpoint = r.endpoint AND s.source_key = r.source_key
WHERE r.endpoint = %(endpoint)s AND r.source_key = %(key)s

-- name: history_log
SELECT at, event, content_hash, run_id, partition, request_id, source_version, reason
FROM {schema}.record_log
WHERE endpoint = %(endpoint)s AND source_key = %(key)s
ORDER BY at, event

-- name: history_requests
-- A request that still holds its keys (not answered yet, or failed) carries the hash sent.
SELECT q.request_id, q.run_id, q.state, q.lines, q.sent_at, q.settled_at, q.imported, q.rejected, q.reason,
       (SELECT d.h FROM unnest(q.keys, q.hashes) AS d(k, h) WHERE d.k = %(key)s LIMIT 1) AS sent_hash
FROM {schema}.requests q
WHERE q.endpoint = %(endpoint)s
  AND (q.request_id = ANY(%(requests)s::text[]) OR q.keys && ARRAY[%(key)s]::text[])
ORDER BY q.sent_at, q.id

-- name: history_actions
SELECT at, actor, action, detail FROM {schema}.actions
WHERE endpoint = %(endpoint)s AND source_key = %(key)s
ORDER BY id
