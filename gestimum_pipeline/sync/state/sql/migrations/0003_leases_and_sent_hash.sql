-- description: fenced writers; the hash of the line in flight
-- A writer proves its authority over a company file inside each transaction that
-- marks rows in flight: it holds the lease row (FOR SHARE) and checks the generation
-- it was given; a new writer bumps the generation (its UPDATE waits for any marking
-- transaction of the old one), so a writer whose lock session died stops before its
-- next POST. `sent_hash` is the hash of the line actually sent: a CRM change staged
-- while the row is in flight updates `line`/`content_hash` and is queued behind it.
CREATE TABLE {schema}.leases (
    company_file text PRIMARY KEY,
    generation   bigint NOT NULL,
    holder       text,
    acquired_at  timestamptz NOT NULL DEFAULT now()
);
ALTER TABLE {schema}.records ADD COLUMN sent_hash text;
