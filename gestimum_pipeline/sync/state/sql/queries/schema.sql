-- Schema versions and the store's owner (schema.py).

-- name: migrate_lock
SELECT pg_advisory_xact_lock(hashtext(%s))

-- name: create_schema
CREATE SCHEMA IF NOT EXISTS {schema}

-- name: create_schema_migrations
CREATE TABLE IF NOT EXISTS {schema}.schema_migrations (
    version     integer PRIMARY KEY,
    description text NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now()
)

-- name: schema_version
SELECT coalesce(max(version), 0) FROM {schema}.schema_migrations

-- name: record_migration
INSERT INTO {schema}.schema_migrations (version, description) VALUES (%s, %s)

-- name: store_exists
SELECT to_regclass(%s) IS NOT NULL

-- name: claim_owner
INSERT INTO {schema}.owner (gestimum_host, company_file, claimed_by) VALUES (%s, %s, %s)
ON CONFLICT (singleton) DO NOTHING

-- name: owner
SELECT gestimum_host, company_file FROM {schema}.owner
