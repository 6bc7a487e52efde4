-- Reconcile (docs/auditing.md, "Repairing data"): `replay reconcile --apply` appends a snapshot of
-- Stripe's current object as an event with source `reconcile`: unsigned like backfill, through
-- the same append function (ledger_replay or the owner; never the ingest role).
ALTER TABLE ledger.events DROP CONSTRAINT events_source_known;
ALTER TABLE ledger.events ADD CONSTRAINT events_source_known CHECK (source IN ('webhook', 'backfill', 'reconcile'));
COMMENT ON COLUMN ledger.events.source IS 'webhook (signed delivery), backfill (copied from GET /v1/events) or reconcile (a snapshot of the object fetched by replay reconcile --apply).';

-- One row per reconcile run: what it compares, where the next page starts, counts. A run that
-- stopped is resumed by the next run with the same objects, since and --apply.
CREATE TABLE ledger.reconcile_runs (
  id          bigint      GENERATED ALWAYS AS IDENTITY,
  objects     text[]      NOT NULL,
  since       timestamptz,
  apply       boolean     NOT NULL,
  kind        text,
  cursor      text,
  listed      boolean     NOT NULL DEFAULT false,
  compared    bigint      NOT NULL DEFAULT 0,
  newer_here  bigint      NOT NULL DEFAULT 0,
  drifted     bigint      NOT NULL DEFAULT 0,
  appended    bigint      NOT NULL DEFAULT 0,
  drift       jsonb       NOT NULL DEFAULT '{}',
  started_at  timestamptz NOT NULL DEFAULT now(),
  finished_at timestamptz,
  CONSTRAINT reconcile_runs_pkey PRIMARY KEY (id)
);
COMMENT ON TABLE ledger.reconcile_runs IS 'One row per replay reconcile run: objects compared, the kind and cursor of the next page, drift counts by kind, snapshots appended.';
COMMENT ON COLUMN ledger.reconcile_runs.listed IS 'The listing of `kind` is complete; what remains is checking our objects Stripe did not list.';

-- The ids a run saw in Stripe's listing: ours that are not among them are looked up one by one.
CREATE TABLE ledger.reconcile_seen (
  run       bigint NOT NULL REFERENCES ledger.reconcile_runs (id),
  object_id text   NOT NULL,
  CONSTRAINT reconcile_seen_pkey PRIMARY KEY (run, object_id)
);

GRANT SELECT, INSERT, UPDATE ON ledger.reconcile_runs TO ledger_replay;
GRANT SELECT, INSERT ON ledger.reconcile_seen TO ledger_replay;
CREATE VIEW audit.reconcile_runs AS SELECT * FROM ledger.reconcile_runs;
GRANT SELECT ON audit.reconcile_runs TO ledger_auditor;
GRANT USAGE ON SEQUENCE ledger.reconcile_runs_id_seq TO ledger_replay;
-- Reconcile compares with these two projections (replay rebuild grants it again on the new tables).
GRANT USAGE ON SCHEMA projection TO ledger_replay;
GRANT SELECT ON projection.subscriptions, projection.accounts TO ledger_replay;
