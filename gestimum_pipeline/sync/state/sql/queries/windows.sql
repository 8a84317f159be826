-- Window signatures and windows staged in full (windows.py).

-- name: window_signature
SELECT row_count, row_versions FROM {schema}.window_signatures
WHERE endpoint = %s AND mapping = %s AND window_start = %s AND window_end = %s

-- name: record_window_signature
-- Two runs of the same window: the signature of the newer snapshot stays, whichever commits last.
INSERT INTO {schema}.window_signatures AS w
    (endpoint, mapping, window_start, window_end, row_count, row_versions, run_id, source_version)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s::numeric)
ON CONFLICT (endpoint, mapping, window_start, window_end) DO UPDATE SET
    row_count = EXCLUDED.row_count, row_versions = EXCLUDED.row_versions,
    run_id = EXCLUDED.run_id, source_version = EXCLUDED.source_version, recorded_at = now()
WHERE EXCLUDED.source_version IS NULL OR w.source_version IS NULL OR w.source_version <= EXCLUDED.source_version

-- name: record_staged_window
INSERT INTO {schema}.staged_windows (endpoint, window_start, window_end, run_id)
VALUES (%s, %s, %s, %s)
ON CONFLICT (endpoint, window_start, window_end) DO UPDATE SET run_id = EXCLUDED.run_id, recorded_at = now()

-- name: staged_windows
SELECT window_start, window_end FROM {schema}.staged_windows WHERE endpoint = %s
ORDER BY window_start, window_end

-- name: coverage_signatures
SELECT window_start, window_end, row_count, row_versions FROM {schema}.window_signatures WHERE endpoint = %s

-- name: record_coverage_signatures
INSERT INTO {schema}.window_signatures AS w
    (endpoint, mapping, window_start, window_end, row_count, row_versions, run_id)
SELECT %s, %s, s, e, n, v, %s
FROM unnest(%s::timestamptz[], %s::timestamptz[], %s::bigint[], %s::numeric[]) AS d(s, e, n, v)
ON CONFLICT (endpoint, mapping, window_start, window_end) DO UPDATE SET
    row_count = EXCLUDED.row_count, row_versions = EXCLUDED.row_versions,
    run_id = EXCLUDED.run_id, recorded_at = now()
