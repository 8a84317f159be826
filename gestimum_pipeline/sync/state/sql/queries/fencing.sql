-- One writer per company file: the lease and its generation (fencing.py).

-- name: try_company_lock
SELECT pg_try_advisory_lock(hashtext(%s))

-- name: take_lease
-- Bumps the generation: every earlier writer is fenced off from now on. The UPDATE waits
-- for a marking transaction of the previous writer (it holds the lease row FOR SHARE).
INSERT INTO {schema}.leases AS l (company_file, generation, holder) VALUES (%s, 1, %s)
ON CONFLICT (company_file) DO UPDATE SET
    generation = l.generation + 1, holder = EXCLUDED.holder, acquired_at = now()
RETURNING generation

-- name: check_lease
SELECT generation, holder FROM {schema}.leases WHERE company_file = %s FOR SHARE

-- name: wait_for_markings
-- An operator's action waits for every marking transaction in progress (they hold their
-- lease row FOR SHARE): its UPDATE then sees their requests (open) or none, never half.
SELECT 1 FROM {schema}.leases FOR UPDATE
