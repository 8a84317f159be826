-- The operator's moves and their audit trail (audit.py).

-- name: operator_move
-- events: retry, ignore, reconcile-delivered, reconcile-release
-- The target and the statuses it applies to are parameters: apply_action checks each
-- (from, action) → to against TRANSITIONS before running this. A row in an open request
-- is never moved (the caller first waits for markings in progress: wait_for_markings).
UPDATE {schema}.records SET status = %(to)s, updated_at = now(),
    reason = coalesce(%(reason)s, reason),
    reason_source = CASE WHEN %(reason)s::text IS NULL THEN reason_source ELSE 'operator' END,
    document = coalesce(%(document)s, document),
    -- Delivered: Gestimum holds the line sent (sent_hash), whatever version was staged since.
    imported_hash = CASE WHEN %(to)s = 'imported' THEN coalesce(sent_hash, content_hash) ELSE imported_hash END,
    imported_at = CASE WHEN %(to)s = 'imported' THEN now() ELSE imported_at END
WHERE endpoint = %(endpoint)s AND source_key = ANY(%(keys)s) AND status = ANY(%(from)s)
  AND NOT EXISTS (SELECT 1 FROM {schema}.requests q WHERE q.state = 'in_flight'
                  AND q.endpoint = %(endpoint)s AND q.keys && ARRAY[records.source_key])
RETURNING source_key

-- name: record_action
INSERT INTO {schema}.actions (actor, action, endpoint, source_key, detail) VALUES (%s, %s, %s, %s, %s)

-- name: actions
SELECT id, at, actor, action, endpoint, source_key, detail FROM {schema}.actions ORDER BY id DESC LIMIT %s
