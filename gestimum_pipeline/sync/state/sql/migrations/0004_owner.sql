-- description: the Gestimum host and company file the store belongs to
-- One row at most: a store describes what one company file holds, so it refuses
-- another (every movement would look sent, or be sent again).
CREATE TABLE {schema}.owner (
    singleton      boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    gestimum_host  text NOT NULL,
    company_file   text NOT NULL,
    claimed_at     timestamptz NOT NULL DEFAULT now(),
    claimed_by     text
);
