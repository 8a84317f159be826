-- When Gestimum last accepted a request, per company file (access.py).

-- name: record_access
INSERT INTO {schema}.gestimum_access AS a (company_file, gestimum_host, fingerprint, salt, verified_at, run_id)
VALUES (%s, %s, %s, %s, now(), %s)
ON CONFLICT (company_file) DO UPDATE SET
    gestimum_host = EXCLUDED.gestimum_host, fingerprint = EXCLUDED.fingerprint,
    salt = EXCLUDED.salt, verified_at = EXCLUDED.verified_at, run_id = EXCLUDED.run_id

-- name: access_proof
SELECT fingerprint, salt, verified_at, run_id, extract(epoch FROM now() - verified_at)
FROM {schema}.gestimum_access WHERE company_file = %s
