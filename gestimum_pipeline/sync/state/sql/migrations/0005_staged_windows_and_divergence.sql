-- description: windows staged in full; stock versions that diverged after sending
-- What a coverage check compares with the CRM: every row changed inside a window
-- staged in full must be in `records` (a row missing there was never seen).
CREATE TABLE {schema}.staged_windows (
    endpoint     text NOT NULL,
    window_start timestamptz NOT NULL,
    window_end   timestamptz NOT NULL,
    run_id       text,
    recorded_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (endpoint, window_start, window_end)
);
-- A stock movement is never re-sent once known; a later CRM version is kept aside
-- here so a check reports the divergence (the movement was edited after sending).
ALTER TABLE {schema}.records ADD COLUMN diverged_hash text, ADD COLUMN diverged_at timestamptz;
