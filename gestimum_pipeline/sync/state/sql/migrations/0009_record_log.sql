-- description: the record log: each CRM version staged and each rejection, per key
-- What `gestimum-pipeline history` reads beside `records`, `requests` and `actions`: one row
-- per version a staging took (its hash, run and partition; a local refusal's reason) and per
-- line refused (Gestimum's answer with its request, or a colliding key). Imported lines write
-- nothing here: the send path stays one UPDATE per line, and the record keeps the request
-- that imported the version Gestimum holds.
CREATE TABLE {schema}.record_log (
    endpoint       text NOT NULL,
    source_key     text NOT NULL,
    at             timestamptz NOT NULL DEFAULT now(),
    event          text NOT NULL,
    content_hash   text,
    run_id         text,
    partition      text,
    request_id     text,
    source_version numeric,
    reason         text
);
CREATE INDEX record_log_key ON {schema}.record_log (endpoint, source_key);
