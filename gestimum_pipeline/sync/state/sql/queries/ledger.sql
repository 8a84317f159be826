-- The request ledger (`requests`) and the outcomes it writes to `records` (ledger.py).
-- `d.sent` is always the hash of the line sent, from the request's ledger row: an answer
-- speaks for that version only; a version staged meanwhile is queued behind it (master
-- data: REQUEUE, or REQUEUE_INVALID when it failed local validation and carries no line).

-- name: pending_lines
SELECT source_key, line, group_key, content_hash, partition FROM {schema}.records
WHERE endpoint = %s AND status = 'pending'
ORDER BY group_key, sort_key, source_key

-- name: mark_in_flight
-- events: send
-- The marker: one durable row per request, built by the server from the records. A row is
-- marked only if it is still pending and (given the hash read) still holds that version.
INSERT INTO {schema}.requests (request_id, endpoint, company_file, generation, run_id, state, lines, keys, hashes)
SELECT %(request)s, %(endpoint)s, %(company)s, %(generation)s, %(run)s, 'in_flight', count(*),
       array_agg(d.key ORDER BY d.i), array_agg(r.content_hash ORDER BY d.i)
FROM unnest(%(keys)s::text[], %(wanted)s::text[]) WITH ORDINALITY AS d(key, wanted, i)
-- One primary-key lookup per line: a hash join would read the whole table, and the status
-- test inside would let the planner walk the pending index instead.
CROSS JOIN LATERAL (SELECT content_hash, status FROM {schema}.records
                    WHERE endpoint = %(endpoint)s AND source_key = d.key OFFSET 0) AS r
WHERE r.status = 'pending' AND (d.wanted IS NULL OR r.content_hash = d.wanted)
HAVING count(*) > 0
RETURNING id, CASE WHEN lines < %(n)s THEN keys END

-- name: open_ledger_ids
SELECT id FROM {schema}.requests
WHERE endpoint = %(endpoint)s AND state = 'in_flight'
  AND (%(request)s::text IS NULL OR request_id = %(request)s) AND keys && %(keys)s::text[]
ORDER BY id

-- name: sent_hashes
SELECT d.k, d.h FROM {schema}.requests q, unnest(q.keys, q.hashes) AS d(k, h)
WHERE q.id = ANY(%s) AND d.k = ANY(%s::text[])

-- name: open_requests
SELECT id, request_id, keys, hashes FROM {schema}.requests
WHERE endpoint = %s AND state = 'in_flight' ORDER BY id

-- name: outcome_imported_stock
-- events: answer_imported
-- A movement is never sent twice: a version staged while it was in flight is kept aside as
-- a divergence, for the check to report. A late answer overrides a writer's delivery_unknown.
UPDATE {schema}.records r SET
    status = 'imported', imported_hash = d.sent, content_hash = d.sent, imported_at = now(),
    reason = NULL, reason_source = NULL, document = d.document,
    diverged_hash = CASE WHEN r.content_hash = d.sent THEN r.diverged_hash ELSE r.content_hash END,
    diverged_at = CASE WHEN r.content_hash = d.sent THEN r.diverged_at ELSE now() END,
    attempts = r.attempts + 1, last_attempt_at = now(), sent_hash = d.sent, request_id = %(request)s,
    updated_at = now()
FROM (SELECT q.endpoint, k.key, k.sent, coalesce(x.document, %(document)s) AS document
      FROM {schema}.requests q
      CROSS JOIN LATERAL unnest(q.keys, q.hashes) AS k(key, sent)
      LEFT JOIN LATERAL (SELECT x.document FROM unnest(%(document_keys)s::text[], %(documents)s::text[])
                         AS x(key, document) WHERE x.key = k.key LIMIT 1) AS x ON true
      WHERE q.id = ANY(%(ids)s) AND NOT (k.key = ANY(%(rejected)s::text[]))) AS d
WHERE r.endpoint = d.endpoint AND r.source_key = d.key
  AND (r.status IN ('pending', 'rejected', 'in_flight')
       OR (r.status = 'delivery_unknown' AND r.reason_source = 'delivery'))

-- name: outcome_imported_master
-- events: answer_imported, requeue, requeue_invalid
UPDATE {schema}.records r SET
    status = CASE WHEN r.content_hash = d.sent THEN 'imported'
                  WHEN r.line IS NULL THEN 'rejected' ELSE 'pending' END,
    imported_hash = d.sent, imported_at = now(),
    reason = CASE WHEN r.content_hash = d.sent THEN NULL ELSE r.reason END,
    reason_source = CASE WHEN r.content_hash = d.sent THEN NULL ELSE r.reason_source END,
    document = d.document,
    attempts = r.attempts + 1, last_attempt_at = now(), sent_hash = d.sent, request_id = %(request)s,
    updated_at = now()
FROM (SELECT q.endpoint, k.key, k.sent, coalesce(x.document, %(document)s) AS document
      FROM {schema}.requests q
      CROSS JOIN LATERAL unnest(q.keys, q.hashes) AS k(key, sent)
      LEFT JOIN LATERAL (SELECT x.document FROM unnest(%(document_keys)s::text[], %(documents)s::text[])
                         AS x(key, document) WHERE x.key = k.key LIMIT 1) AS x ON true
      WHERE q.id = ANY(%(ids)s) AND NOT (k.key = ANY(%(rejected)s::text[]))) AS d
WHERE r.endpoint = d.endpoint AND r.source_key = d.key
  AND (r.status IN ('pending', 'rejected', 'in_flight')
       OR (r.status = 'delivery_unknown' AND r.reason_source = 'delivery'))

-- name: outcome_rejected
-- events: answer_rejected, requeue, requeue_invalid
-- Only rejected lines carry data of their own: their reasons, logged per line (migration 0009,
-- for `history`) whatever the record became since (a version queued behind the line sent).
WITH logged AS (
    INSERT INTO {schema}.record_log (endpoint, source_key, event, content_hash, request_id, reason)
    SELECT %(endpoint)s, d.source_key, 'answer_rejected', nullif(d.sent, ''), %(request)s, d.reason
    FROM unnest(%(keys)s::text[], %(reasons)s::text[], %(sent)s::text[]) AS d(source_key, reason, sent)
)
UPDATE {schema}.records r SET
    status = CASE WHEN r.content_hash = d.sent THEN 'rejected'
                  WHEN r.line IS NULL THEN 'rejected' ELSE 'pending' END,
    reason = CASE WHEN r.content_hash = d.sent THEN d.reason ELSE r.reason END,
    reason_source = CASE WHEN r.content_hash = d.sent THEN 'gestimum' ELSE r.reason_source END,
    attempts = r.attempts + 1, last_attempt_at = now(), sent_hash = d.sent, request_id = %(request)s,
    updated_at = now()
FROM unnest(%(keys)s::text[], %(reasons)s::text[], %(sent)s::text[]) AS d(source_key, reason, sent)
WHERE r.endpoint = %(endpoint)s AND r.source_key = d.source_key
  AND (r.status IN ('pending', 'rejected', 'in_flight')
       OR (r.status = 'delivery_unknown' AND r.reason_source = 'delivery'))

-- name: close_answered
-- Closed in the same transaction as the outcomes: a request still open after a crash is one
-- whose outcomes were lost, settled by the next run like any interrupted request. Its keys
-- and hashes now live in the records (request_id, sent_hash): dropped, so a backfill does
-- not keep a second copy of every key.
UPDATE {schema}.requests SET state = 'answered', settled_at = now(), imported = %s, rejected = %s,
    keys = '{}', hashes = '{}'
WHERE id = ANY(%s)

-- name: settle_unknown
-- events: delivery_unknown
-- Whatever version is staged now, the line sent may have become a document.
UPDATE {schema}.records r SET status = 'delivery_unknown', reason = %(reason)s, reason_source = 'delivery',
    request_id = coalesce(%(request)s, r.request_id),
    attempts = r.attempts + 1, last_attempt_at = now(), sent_hash = d.sent, updated_at = now()
FROM unnest(%(keys)s::text[], %(sent)s::text[]) AS d(source_key, sent)
WHERE r.endpoint = %(endpoint)s AND r.source_key = d.source_key
  AND (r.status IN ('pending', 'in_flight') OR (r.status = 'rejected' AND r.reason_source = 'local'))

-- name: settle_requeue
-- events: requeue, requeue_invalid
-- The rows are still waiting (a row left in flight by an earlier version goes back); a
-- queued version that failed local validation keeps its own reason.
UPDATE {schema}.records r SET status = CASE WHEN r.line IS NULL THEN 'rejected' ELSE 'pending' END,
    reason = CASE WHEN r.line IS NULL THEN r.reason ELSE %(reason)s END,
    reason_source = CASE WHEN r.line IS NULL THEN r.reason_source ELSE 'delivery' END,
    attempts = r.attempts + 1, last_attempt_at = now(), sent_hash = d.sent, updated_at = now()
FROM unnest(%(keys)s::text[], %(sent)s::text[]) AS d(source_key, sent)
WHERE r.endpoint = %(endpoint)s AND r.source_key = d.source_key
  AND r.status IN ('pending', 'in_flight')

-- name: close_settled
UPDATE {schema}.requests SET state = %s, settled_at = now(), reason = %s
WHERE id = ANY(%s) AND state = 'in_flight'

-- name: abandon_request
-- Master data left open by a run that died: its rows simply wait to be sent again.
UPDATE {schema}.requests SET state = 'abandoned', settled_at = now(), reason = %s WHERE id = %s

-- name: recover_stored_in_flight_stock
-- events: delivery_unknown
-- Rows an earlier version of this store marked in flight one by one.
UPDATE {schema}.records SET status = 'delivery_unknown', reason_source = 'delivery',
    reason = 'the run sending request ' || coalesce(request_id, '?')
             || ' stopped before Gestimum''s answer was recorded',
    updated_at = now()
WHERE endpoint = %s AND status = 'in_flight'

-- name: recover_stored_in_flight_master
-- events: requeue, requeue_invalid
UPDATE {schema}.records r SET status = CASE WHEN r.line IS NULL THEN 'rejected' ELSE 'pending' END,
    updated_at = now()
WHERE endpoint = %s AND status = 'in_flight'
