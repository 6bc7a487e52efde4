-- Effects (docs/effects.md): the dispatcher's journal and the outside world's state as the
-- dispatcher observed it. Both live in `ledger`: a rebuild replaces the projection schema, never
-- what was done to the outside world.

-- The append-only journal: one row per attempt and outcome of an effect.
CREATE TABLE ledger.effects (
  id              bigint      GENERATED ALWAYS AS IDENTITY,
  key             text        NOT NULL,
  kind            text        NOT NULL,
  attempt         integer     NOT NULL,
  request         text        NOT NULL,
  response_status integer,
  outcome         text        NOT NULL,
  error           text,
  at              timestamptz NOT NULL DEFAULT now(),
  CONSTRAINT effects_pkey PRIMARY KEY (id),
  CONSTRAINT effects_outcome_known CHECK (outcome IN ('succeeded', 'retry', 'failed', 'skipped'))
);
CREATE INDEX effects_key_idx ON ledger.effects (key, id);
COMMENT ON TABLE ledger.effects IS 'Every attempt of every effect, under the idempotency key sent with it. Append-only. succeeded, failed and skipped end an effect; retry is followed by another attempt.';
COMMENT ON COLUMN ledger.effects.request IS 'What was asked (method, path, subject); never a token or a secret.';
CREATE TRIGGER effects_no_update_delete BEFORE UPDATE OR DELETE ON ledger.effects
  FOR EACH ROW EXECUTE FUNCTION ledger.forbid_mutation();
CREATE TRIGGER effects_no_truncate BEFORE TRUNCATE ON ledger.effects
  FOR EACH STATEMENT EXECUTE FUNCTION ledger.forbid_mutation();
ALTER TABLE ledger.effects ENABLE ALWAYS TRIGGER effects_no_update_delete;
ALTER TABLE ledger.effects ENABLE ALWAYS TRIGGER effects_no_truncate;

-- The latest instance intent of a subscription (its key is the provisioner's Idempotency-Key).
CREATE INDEX intents_subject_idx ON ledger.intents (kind, split_part(key, ':', 2), position)
  WHERE kind IN ('instance', 'token');

-- Instances as the provisioner last reported them.
CREATE TABLE ledger.instances_observed (
  stripe_subscription_id text        NOT NULL,
  status                 text        NOT NULL,
  app_name               text,
  subdomain              text,
  frontend_url           text,
  backend_url            text,
  tier                   text,
  limit_agents           double precision,
  limit_messages_per_day double precision,
  limit_memory_mb        double precision,
  limit_cpu              double precision,
  key                    text        NOT NULL,
  attempts               integer     NOT NULL DEFAULT 0,
  last_error             text,
  torn_down_by_grace     timestamptz,
  updated_at             timestamptz NOT NULL DEFAULT now(),
  CONSTRAINT instances_observed_pkey PRIMARY KEY (stripe_subscription_id),
  CONSTRAINT instances_observed_status_known CHECK (status IN
    ('provisioning', 'running', 'updating', 'deprovisioning', 'deprovisioned', 'failed'))
);
COMMENT ON COLUMN ledger.instances_observed.key IS 'Idempotency key of the operation in progress or last done.';
COMMENT ON COLUMN ledger.instances_observed.torn_down_by_grace IS 'The grace deadline that tore it down (a later payment restores it under a key of its own).';

-- API tokens: only the SHA-256 of the plaintext, which reaches the customer once, by email.
CREATE TABLE ledger.api_tokens (
  token_sha256       bytea       NOT NULL,
  stripe_customer_id text        NOT NULL,
  tier               text        NOT NULL,
  key                text        NOT NULL,
  issued_at          timestamptz NOT NULL,
  expires_at         timestamptz NOT NULL,
  delivered_at       timestamptz,
  revoked_at         timestamptz,
  CONSTRAINT api_tokens_pkey PRIMARY KEY (token_sha256),
  CONSTRAINT api_tokens_key_unique UNIQUE (key),
  CONSTRAINT api_tokens_sha256_length CHECK (octet_length(token_sha256) = 32)
);
CREATE UNIQUE INDEX api_tokens_one_live_idx ON ledger.api_tokens (stripe_customer_id) WHERE revoked_at IS NULL;
COMMENT ON TABLE ledger.api_tokens IS 'Issued API tokens by hash. At most one unrevoked token per customer; expiry is checked on use.';

-- projection.instances becomes the desired side (a table the fold writes) joined with the
-- observed side. `replay rebuild` recreates the views of the projection schema after its swap.
ALTER TABLE projection.instances RENAME TO instance_targets;
ALTER TABLE projection.instance_targets RENAME CONSTRAINT instances_pkey TO instance_targets_pkey;
ALTER TABLE projection.instance_targets RENAME CONSTRAINT instances_desired_known TO instance_targets_desired_known;
COMMENT ON TABLE projection.instance_targets IS 'Desired instance per subscription, folded from the log.';
CREATE VIEW projection.instances AS
SELECT t.stripe_subscription_id,
       t.stripe_customer_id,
       t.desired,
       t.tier,
       t.limit_agents,
       t.limit_messages_per_day,
       t.limit_memory_mb,
       t.limit_cpu,
       coalesce(o.status, CASE WHEN t.desired = 'running' THEN 'provisioning' END) AS status,
       o.app_name,
       o.subdomain,
       o.frontend_url,
       o.backend_url,
       o.tier AS observed_tier,
       o.limit_agents AS observed_limit_agents,
       o.limit_messages_per_day AS observed_limit_messages_per_day,
       o.limit_memory_mb AS observed_limit_memory_mb,
       o.limit_cpu AS observed_limit_cpu,
       coalesce(o.attempts, 0) AS attempts,
       o.last_error,
       o.updated_at AS observed_at
FROM projection.instance_targets t
LEFT JOIN ledger.instances_observed o USING (stripe_subscription_id);
COMMENT ON VIEW projection.instances IS 'Desired (folded) and observed (dispatcher) state of each instance.';

GRANT SELECT, INSERT ON ledger.effects TO ledger_projector;
GRANT SELECT, INSERT, UPDATE ON ledger.instances_observed, ledger.api_tokens TO ledger_projector;
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA projection TO ledger_projector;
