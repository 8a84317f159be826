-- description: Gestimum access proven, per company file
-- When Gestimum last accepted a request for these credentials, so a run with nothing to
-- send need not open the company file just to check them. `fingerprint` is a salted,
-- slow hash (see access_fingerprint): the password is never stored, not even hashed alone.
CREATE TABLE {schema}.gestimum_access (
    company_file  text PRIMARY KEY,
    gestimum_host text NOT NULL,
    fingerprint   text NOT NULL,
    salt          text NOT NULL,
    verified_at   timestamptz NOT NULL DEFAULT now(),
    run_id        text
);
