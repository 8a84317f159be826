-- description: records and operator actions
CREATE TABLE {schema}.records (
    endpoint        text NOT NULL,
    source_key      text NOT NULL,
    status          text NOT NULL CHECK (status IN
        ('pending','in_flight','imported','rejected','held','delivery_unknown','ignored')),
    line            text,
    content_hash    text NOT NULL,
    imported_hash   text,
    parent_key      text,
    group_key       text NOT NULL DEFAULT '',
    sort_key        bigint NOT NULL DEFAULT 0,
    reason          text,
    reason_source   text,
    attempts        integer NOT NULL DEFAULT 0,
    document        text,
    partition       text,
    request_id      text,
    run_id          text,
    first_seen_at   timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    last_attempt_at timestamptz,
    imported_at     timestamptz,
    PRIMARY KEY (endpoint, source_key)
);
CREATE INDEX records_to_send ON {schema}.records (endpoint, group_key, sort_key, source_key)
    WHERE status = 'pending';
CREATE INDEX records_attention ON {schema}.records (endpoint, status)
    WHERE status IN ('in_flight', 'rejected', 'held', 'delivery_unknown');
CREATE INDEX records_parent ON {schema}.records (endpoint, parent_key)
    WHERE status IN ('held', 'rejected');
CREATE TABLE {schema}.actions (
    id          bigserial PRIMARY KEY,
    at          timestamptz NOT NULL DEFAULT now(),
    actor       text NOT NULL,
    action      text NOT NULL,
    endpoint    text,
    source_key  text,
    detail      jsonb
);
