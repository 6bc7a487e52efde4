-- The auditors' interface (docs/auditing.md): read-only views, the only thing ledger_auditor may
-- read. Views run with their owner's rights, so the auditor needs no grant on the tables below,
-- and sees no column the views leave out (token hashes). `replay rebuild` re-points the views over
-- projection tables at the rebuilt ones.
CREATE SCHEMA audit;
COMMENT ON SCHEMA audit IS 'Read-only views for auditors over the log, the effects journal and the projections.';

-- The subscription an event concerns, as far as its payload says.
CREATE FUNCTION audit.subscription_of(p_object_type text, p_object_id text, p_payload jsonb) RETURNS text
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
  SELECT CASE p_object_type
    WHEN 'subscription' THEN p_object_id
    -- Before 2025-03-31.basil: invoice.subscription (an id, or an expanded object); from basil:
    -- invoice.parent.subscription_details.subscription.
    WHEN 'invoice' THEN coalesce(
      p_payload #>> '{data,object,parent,subscription_details,subscription}',
      CASE jsonb_typeof(p_payload #> '{data,object,subscription}')
        WHEN 'string' THEN p_payload #>> '{data,object,subscription}'
        WHEN 'object' THEN p_payload #>> '{data,object,subscription,id}'
      END)
    WHEN 'checkout.session' THEN p_payload #>> '{data,object,subscription}'
  END
$$;
COMMENT ON FUNCTION audit.subscription_of(text, text, jsonb) IS 'sub_ id an event concerns: the subscription itself, an invoice''s subscription (both API shapes), a checkout session''s.';

CREATE VIEW audit.events AS
SELECT position, stripe_event_id, event_type, api_version, livemode, created, received_at, source,
       received_by, object_type, object_id, customer_id,
       audit.subscription_of(object_type, object_id, payload) AS subscription_id,
       raw_body, convert_from(raw_body, 'UTF8') AS body_text, payload, stripe_signature,
       body_sha256, prev_hash, chain_hash
FROM ledger.events;
COMMENT ON VIEW audit.events IS 'Every event as stored: exact raw body (and as text), the Stripe-Signature header (an HMAC, not a secret), hashes.';

CREATE VIEW audit.customer_timeline AS
SELECT customer_id AS stripe_customer_id, position, created, received_at, event_type, stripe_event_id,
       object_type, object_id, audit.subscription_of(object_type, object_id, payload) AS subscription_id, source
FROM ledger.events
WHERE customer_id IS NOT NULL;
COMMENT ON VIEW audit.customer_timeline IS 'Events per customer, in log order (ORDER BY position).';

CREATE VIEW audit.subscription_timeline AS
SELECT s.subscription_id AS stripe_subscription_id, e.position, e.created, e.received_at, e.event_type,
       e.stripe_event_id, e.object_type, e.object_id, e.customer_id AS stripe_customer_id, e.source
FROM ledger.events e
CROSS JOIN LATERAL (SELECT audit.subscription_of(e.object_type, e.object_id, e.payload) AS subscription_id) s
WHERE s.subscription_id IS NOT NULL;
COMMENT ON VIEW audit.subscription_timeline IS 'Events per subscription (the subscription''s own, its invoices'', its checkout''s), in log order.';

CREATE VIEW audit.intents AS
SELECT i.key, i.kind, i.detail, i.position, i.recorded_at,
       coalesce(substring(i.key FROM 'sub_[A-Za-z0-9_]+'), substring(i.detail FROM 'sub_[A-Za-z0-9_]+')) AS stripe_subscription_id,
       substring(i.key FROM 'cus_[A-Za-z0-9_]+') AS stripe_customer_id
FROM ledger.intents i;
COMMENT ON VIEW audit.intents IS 'Effects the fold asked for, with the log position that asked.';

CREATE VIEW audit.effects AS
SELECT e.id, e.key, e.kind, e.attempt, e.request, e.response_status, e.outcome, e.error, e.at,
       coalesce(substring(e.key FROM 'sub_[A-Za-z0-9_]+'), substring(i.detail FROM 'sub_[A-Za-z0-9_]+')) AS stripe_subscription_id,
       coalesce(substring(e.key FROM 'cus_[A-Za-z0-9_]+'), substring(e.request FROM 'cus_[A-Za-z0-9_]+')) AS stripe_customer_id,
       i.position AS intent_position
FROM ledger.effects e
LEFT JOIN ledger.intents i ON i.key = e.key;
COMMENT ON VIEW audit.effects IS 'Every attempt of every effect (provisioner calls, mails, tokens), with the subscription or customer it concerns.';

CREATE VIEW audit.anomalies AS
SELECT key, kind, detail, position FROM projection.anomalies;

CREATE VIEW audit.accounts AS
SELECT stripe_customer_id, email, name, deleted FROM projection.accounts;

CREATE VIEW audit.subscriptions AS
SELECT stripe_subscription_id, stripe_customer_id, price_id, tier, status, current_period_end, trial_end,
       cancel_at_period_end, canceled_at, ended_at, deleted, last_paid_at, last_payment_failed_at, grace_until,
       limit_agents, limit_messages_per_day, limit_memory_mb, limit_cpu
FROM projection.subscriptions;

CREATE VIEW audit.instances AS
SELECT * FROM projection.instances;

CREATE VIEW audit.credits AS
SELECT c.stripe_customer_id, c.balance,
       (SELECT count(*) FROM projection.credit_grants g WHERE g.stripe_customer_id = c.stripe_customer_id) AS grants
FROM projection.credits c;

CREATE VIEW audit.credit_grants AS
SELECT key, stripe_customer_id, credits, rollover_cap, granted_for FROM projection.credit_grants;

-- Tokens without their hashes.
CREATE VIEW audit.tokens AS
SELECT stripe_customer_id, tier, key, issued_at, expires_at, delivered_at, revoked_at
FROM ledger.api_tokens;
COMMENT ON VIEW audit.tokens IS 'Issued API tokens: who, which tier, when; never the hash.';

GRANT USAGE ON SCHEMA audit TO ledger_auditor;
GRANT SELECT ON ALL TABLES IN SCHEMA audit TO ledger_auditor;
GRANT EXECUTE ON FUNCTION audit.subscription_of(text, text, jsonb) TO ledger_auditor;

-- `replay backfill` runs: the cursor after the last appended page makes a stopped run resumable.
CREATE TABLE ledger.backfill_runs (
  id          bigint      GENERATED ALWAYS AS IDENTITY,
  started_at  timestamptz NOT NULL DEFAULT now(),
  finished_at timestamptz,
  since       timestamptz,
  types       text[]      NOT NULL DEFAULT '{}',
  cursor      text,
  fetched     bigint      NOT NULL DEFAULT 0,
  appended    bigint      NOT NULL DEFAULT 0,
  present     bigint      NOT NULL DEFAULT 0,
  CONSTRAINT backfill_runs_pkey PRIMARY KEY (id)
);
COMMENT ON TABLE ledger.backfill_runs IS 'One row per replay backfill run: filters, the id of the oldest event fetched so far (starting_after of the next page), counts.';
COMMENT ON COLUMN ledger.backfill_runs.present IS 'Fetched events the log already held (delivered by webhook or an earlier run).';

CREATE VIEW audit.backfill_runs AS SELECT * FROM ledger.backfill_runs;
GRANT SELECT ON audit.backfill_runs TO ledger_auditor;
