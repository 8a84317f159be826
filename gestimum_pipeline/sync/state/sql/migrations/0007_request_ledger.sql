-- description: the request ledger: one durable row per request
-- The in-flight marker is one row per request (its keys and the hashes of the lines
-- sent), not an update of each of its records: one durable write per request, and
-- the records are written once more only by the outcome. A row is in flight while it
-- belongs to an open request; `record_status` shows records with that status derived.
CREATE TABLE {schema}.requests (
    id           bigserial PRIMARY KEY,
    request_id   text NOT NULL,
    endpoint     text NOT NULL,
    company_file text,
    generation   bigint,
    run_id       text,
    state        text NOT NULL CHECK (state IN ('in_flight', 'answered', 'failed', 'unknown', 'abandoned')),
    lines        integer NOT NULL,
    keys         text[] NOT NULL,
    hashes       text[] NOT NULL,
    sent_at      timestamptz NOT NULL DEFAULT now(),
    settled_at   timestamptz,
    imported     integer,
    rejected     integer,
    reason       text
);
CREATE INDEX requests_open ON {schema}.requests (endpoint) WHERE state = 'in_flight';
CREATE VIEW {schema}.record_status AS
    SELECT r.endpoint, r.source_key,
           CASE WHEN o.request_id IS NULL THEN r.status ELSE 'in_flight' END AS status,
           coalesce(o.request_id, r.request_id) AS request_id,
           r.reason, r.reason_source, r.attempts, r.document, r.partition, r.first_seen_at,
           r.updated_at, r.last_attempt_at, r.imported_at, r.line
    FROM {schema}.records r
    LEFT JOIN (SELECT q.endpoint, k.source_key, q.request_id FROM {schema}.requests q,
               unnest(q.keys) AS k(source_key) WHERE q.state = 'in_flight') o
           ON o.endpoint = r.endpoint AND o.source_key = r.source_key;
