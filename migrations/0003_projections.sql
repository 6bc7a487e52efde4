-- Projections: a pure function of (ledger.events, catalog), rebuilt at will (docs/projector.md).
-- Timestamps that come from Stripe (unix seconds there) are timestamptz here, under Stripe's names.
-- Limits are numbers with -1 meaning unlimited, as in the catalog.
CREATE SCHEMA projection;
COMMENT ON SCHEMA projection IS 'State folded from ledger.events by the projector; rebuildable, never the system of record.';

CREATE TABLE projection.checkpoint (
  name          text        NOT NULL,
  position      bigint      NOT NULL,
  catalog_hash  text        NOT NULL,
  updated_at    timestamptz NOT NULL DEFAULT now(),
  CONSTRAINT checkpoint_pkey PRIMARY KEY (name)
);
COMMENT ON TABLE projection.checkpoint IS 'Last folded log position, written in the same transaction as the rows it produced. Lives inside the schema so a rebuild swaps it with the data.';
COMMENT ON COLUMN projection.checkpoint.catalog_hash IS 'Catalog the rows were built with: a projector with another catalog reports it and a rebuild settles it.';

CREATE TABLE projection.accounts (
  stripe_customer_id text    NOT NULL,
  email              text,
  name               text,
  deleted            boolean NOT NULL,
  version_created    bigint,
  version_rank       smallint,
  version_position   bigint,
  CONSTRAINT accounts_pkey PRIMARY KEY (stripe_customer_id)
);
COMMENT ON COLUMN projection.accounts.version_created IS 'Version (created, rank, position) of the applied snapshot; NULL while the customer is only known from references.';

CREATE TABLE projection.subscriptions (
  stripe_subscription_id text        NOT NULL,
  stripe_customer_id     text,
  price_id               text,
  tier                   text        NOT NULL,
  status                 text        NOT NULL,
  current_period_end     timestamptz,
  trial_end              timestamptz,
  cancel_at_period_end   boolean     NOT NULL,
  canceled_at            timestamptz,
  ended_at               timestamptz,
  deleted                boolean     NOT NULL,
  last_paid_at           timestamptz,
  last_payment_failed_at timestamptz,
  grace_until            timestamptz,
  limit_agents           double precision,
  limit_messages_per_day double precision,
  limit_memory_mb        double precision,
  limit_cpu              double precision,
  version_created        bigint,
  version_rank           smallint,
  version_position       bigint,
  CONSTRAINT subscriptions_pkey PRIMARY KEY (stripe_subscription_id)
);
CREATE INDEX subscriptions_customer_idx ON projection.subscriptions (stripe_customer_id);
COMMENT ON COLUMN projection.subscriptions.tier IS 'Tier through the catalog, or `unknown` (never a silent free tier).';
COMMENT ON COLUMN projection.subscriptions.grace_until IS 'A failed payment keeps the instance running until then, unless paid.';

CREATE TABLE projection.instances (
  stripe_subscription_id text NOT NULL,
  stripe_customer_id     text,
  desired                text NOT NULL,
  tier                   text NOT NULL,
  limit_agents           double precision,
  limit_messages_per_day double precision,
  limit_memory_mb        double precision,
  limit_cpu              double precision,
  CONSTRAINT instances_pkey PRIMARY KEY (stripe_subscription_id),
  CONSTRAINT instances_desired_known CHECK (desired IN ('absent', 'running', 'deprovisioned'))
);
COMMENT ON TABLE projection.instances IS 'Desired instance per subscription; the observed side (URLs, status) belongs to the dispatcher.';

CREATE TABLE projection.tokens (
  stripe_customer_id text    NOT NULL,
  wanted             boolean NOT NULL,
  tier               text,
  CONSTRAINT tokens_pkey PRIMARY KEY (stripe_customer_id)
);
COMMENT ON TABLE projection.tokens IS 'Whether a customer should hold a live API token, and its tier. Token hashes are issued by the dispatcher, elsewhere.';

CREATE TABLE projection.credit_grants (
  key                text        NOT NULL,
  stripe_customer_id text        NOT NULL,
  credits            bigint      NOT NULL,
  rollover_cap       bigint,
  granted_for        timestamptz NOT NULL,
  CONSTRAINT credit_grants_pkey PRIMARY KEY (key)
);
CREATE INDEX credit_grants_customer_idx ON projection.credit_grants (stripe_customer_id);
COMMENT ON COLUMN projection.credit_grants.key IS 'invoice:<in_...> or checkout:<cs_...>: each grants once.';
COMMENT ON COLUMN projection.credit_grants.rollover_cap IS 'Cycle grants cap the carried balance first; NULL for packs.';

CREATE TABLE projection.credits (
  stripe_customer_id text   NOT NULL,
  balance            bigint NOT NULL,
  CONSTRAINT credits_pkey PRIMARY KEY (stripe_customer_id)
);

CREATE TABLE projection.anomalies (
  key      text   NOT NULL,
  kind     text   NOT NULL,
  detail   text   NOT NULL,
  position bigint NOT NULL,
  CONSTRAINT anomalies_pkey PRIMARY KEY (key)
);
CREATE INDEX anomalies_kind_idx ON projection.anomalies (kind);
COMMENT ON TABLE projection.anomalies IS 'What could not be projected faithfully (unknown price, undecodable payload, ...). Resolved rows disappear when a later event or a rebuild with a fixed catalog settles them.';

-- The outbox of effects: never rebuilt, so a replay re-creating a key does nothing.
CREATE TABLE ledger.intents (
  key         text        NOT NULL,
  kind        text        NOT NULL,
  detail      text        NOT NULL,
  position    bigint      NOT NULL,
  recorded_at timestamptz NOT NULL DEFAULT now(),
  CONSTRAINT intents_pkey PRIMARY KEY (key)
);
COMMENT ON TABLE ledger.intents IS 'Effects the fold asked for, under deterministic idempotency keys (instance:<sub>:<position>, token:<cus>:<position>, email:...). Inserted ON CONFLICT DO NOTHING.';
CREATE TRIGGER intents_no_update_delete BEFORE UPDATE OR DELETE ON ledger.intents
  FOR EACH ROW EXECUTE FUNCTION ledger.forbid_mutation();
CREATE TRIGGER intents_no_truncate BEFORE TRUNCATE ON ledger.intents
  FOR EACH STATEMENT EXECUTE FUNCTION ledger.forbid_mutation();
ALTER TABLE ledger.intents ENABLE ALWAYS TRIGGER intents_no_update_delete;
ALTER TABLE ledger.intents ENABLE ALWAYS TRIGGER intents_no_truncate;

GRANT USAGE ON SCHEMA projection TO ledger_projector;
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA projection TO ledger_projector;
GRANT SELECT, INSERT ON ledger.intents TO ledger_projector;
