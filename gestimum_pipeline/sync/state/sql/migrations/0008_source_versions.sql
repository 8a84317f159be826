-- description: source versions: a staged row or a window signature never replaces a newer one
-- The version of a staged row (and of a window signature) is the order of the CRM snapshot it
-- was read in (crm.queries.snapshot_version): a staging from an older snapshot (a backfill
-- that read before the hourly run) never replaces what a newer one staged. NULL: staged
-- before this migration, or by a caller that read no snapshot (taken as older than any).
ALTER TABLE {schema}.records ADD COLUMN source_version numeric;
ALTER TABLE {schema}.window_signatures ADD COLUMN source_version numeric;
-- A stock movement in an open request keeps the line sent. Evaluated by a staging after it
-- has locked the record (so after any wait for it) with a fresh snapshot (VOLATILE), and
-- only then: it first waits for every marking in progress (each holds its lease row FOR
-- SHARE), so a request committed meanwhile is seen, and holds the leases until the staging
-- commits, so a marking that starts later reads the new version (and its compare-and-set
-- refuses the line the sink read).
CREATE FUNCTION {schema}.not_in_open_request(p_endpoint text, p_key text) RETURNS boolean
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM 1 FROM {schema}.leases FOR UPDATE;
    RETURN NOT EXISTS (SELECT 1 FROM {schema}.requests q WHERE q.state = 'in_flight'
                       AND q.endpoint = p_endpoint AND q.keys && ARRAY[p_key]);
END $$;
-- A key as SQL Server's usual collations compare it: without case or trailing spaces, per
-- component for a composite key (a JSON array of its codes, sync.mapping.source_key: a run of
-- spaces right before an unescaped quote that closes a component). One plain expression, so
-- the planner inlines it (a function call per row would double the refusal's cost).
CREATE FUNCTION {schema}.folded_key(p_key text, p_composite boolean) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT lower(CASE WHEN p_composite THEN regexp_replace(p_key, ' +"(?=[,\]])', '"', 'g') ELSE rtrim(p_key) END)
$$;
