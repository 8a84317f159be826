-- description: status counts kept by triggers; window signatures
-- Exact per-status counts without scanning millions of records: statement-level
-- triggers append one delta row per (endpoint, status) a statement changes (no
-- counter row is updated, so concurrent writers never wait on each other), and
-- counts() sums them, compacting now and then. The signature of a CRM window
-- (row count and a hash over the rows' row versions) lets a rerun skip re-reading
-- a window nothing has touched; removing records forgets the signatures.
CREATE TABLE {schema}.status_deltas (
    endpoint text NOT NULL,
    status   text NOT NULL,
    delta    bigint NOT NULL
);
CREATE FUNCTION {schema}.count_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO {schema}.status_deltas (endpoint, status, delta)
        SELECT endpoint, status, count(*) FROM new_rows GROUP BY endpoint, status;
    RETURN NULL;
END $$;
CREATE FUNCTION {schema}.count_updated() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO {schema}.status_deltas (endpoint, status, delta)
        SELECT endpoint, status, sum(d) FROM (
            SELECT endpoint, status, 1 AS d FROM new_rows
            UNION ALL SELECT endpoint, status, -1 FROM old_rows
        ) AS changes GROUP BY endpoint, status HAVING sum(d) <> 0;
    RETURN NULL;
END $$;
CREATE FUNCTION {schema}.count_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO {schema}.status_deltas (endpoint, status, delta)
        SELECT endpoint, status, -count(*) FROM old_rows GROUP BY endpoint, status;
    DELETE FROM {schema}.window_signatures WHERE endpoint IN (SELECT endpoint FROM old_rows);
    RETURN NULL;
END $$;
CREATE FUNCTION {schema}.count_truncated() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM {schema}.status_deltas;
    DELETE FROM {schema}.window_signatures;
    RETURN NULL;
END $$;
CREATE TRIGGER records_count_inserted AFTER INSERT ON {schema}.records
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION {schema}.count_inserted();
CREATE TRIGGER records_count_updated AFTER UPDATE ON {schema}.records
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION {schema}.count_updated();
CREATE TRIGGER records_count_deleted AFTER DELETE ON {schema}.records
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION {schema}.count_deleted();
CREATE TRIGGER records_count_truncated AFTER TRUNCATE ON {schema}.records
    FOR EACH STATEMENT EXECUTE FUNCTION {schema}.count_truncated();
-- The triggers lock out writers until this commits: the seed is exact.
INSERT INTO {schema}.status_deltas (endpoint, status, delta)
    SELECT endpoint, status, count(*) FROM {schema}.records GROUP BY endpoint, status;
CREATE TABLE {schema}.window_signatures (
    endpoint     text NOT NULL,
    mapping      text NOT NULL,
    window_start timestamptz NOT NULL,
    window_end   timestamptz NOT NULL,
    row_count    bigint NOT NULL,
    row_versions numeric NOT NULL,
    run_id       text,
    recorded_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (endpoint, mapping, window_start, window_end)
);
