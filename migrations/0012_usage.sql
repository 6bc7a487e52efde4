-- Usage and quotas (docs/usage.md): what the product reports through POST /v1/usage. Facts from
-- the product, not from Stripe: they live in `ledger`, so a rebuild never erases them.

-- One row per counted request, append-only. A refused request counts nothing and leaves no row.
CREATE TABLE ledger.usage (
  id                 bigint      GENERATED ALWAYS AS IDENTITY,
  stripe_customer_id text        NOT NULL,
  metric             text        NOT NULL,
  quantity           bigint      NOT NULL,
  idempotency_key    text        NOT NULL,
  caller             text        NOT NULL,
  day                date        NOT NULL,
  recorded_at        timestamptz NOT NULL,
  applies_at         timestamptz,
  used_after         bigint      NOT NULL,
  quota              bigint,
  consumed_after     bigint,
  balance_after      bigint,
  CONSTRAINT usage_pkey PRIMARY KEY (id),
  CONSTRAINT usage_idempotency_unique UNIQUE (stripe_customer_id, idempotency_key),
  CONSTRAINT usage_quantity_positive CHECK (quantity > 0),
  CONSTRAINT usage_key_length CHECK (length(idempotency_key) BETWEEN 1 AND 255),
  CONSTRAINT usage_credit_columns
    CHECK ((metric = 'credits') = (consumed_after IS NOT NULL AND balance_after IS NOT NULL AND applies_at IS NOT NULL))
);
-- The credit curve: consumption before a grant's time is one index probe.
CREATE INDEX usage_credits_idx ON ledger.usage (stripe_customer_id, applies_at, consumed_after)
  WHERE metric = 'credits';
COMMENT ON TABLE ledger.usage IS 'Usage the product reported (POST /v1/usage), one row per counted request; append-only, never rebuilt.';
COMMENT ON COLUMN ledger.usage.used_after IS 'The customer''s count of this metric on this UTC day after this request.';
COMMENT ON COLUMN ledger.usage.quota IS 'The daily quota in force; NULL: unlimited, or metric credits.';
COMMENT ON COLUMN ledger.usage.applies_at IS 'Credits only: where the debit sits among grants: its time, but never before the previous debit or a grant it was checked against.';
COMMENT ON COLUMN ledger.usage.consumed_after IS 'Credits only: every credit the customer consumed, up to and including this debit.';
COMMENT ON COLUMN ledger.usage.balance_after IS 'Credits only: the balance this debit left.';
CREATE TRIGGER usage_no_update_delete BEFORE UPDATE OR DELETE ON ledger.usage
  FOR EACH ROW EXECUTE FUNCTION ledger.forbid_mutation();
CREATE TRIGGER usage_no_truncate BEFORE TRUNCATE ON ledger.usage
  FOR EACH STATEMENT EXECUTE FUNCTION ledger.forbid_mutation();
ALTER TABLE ledger.usage ENABLE ALWAYS TRIGGER usage_no_update_delete;
ALTER TABLE ledger.usage ENABLE ALWAYS TRIGGER usage_no_truncate;

-- The per-day counter beside the rows: the sum of their quantities, kept by the one conditional
-- write that counts (ledger.count_usage).
CREATE TABLE ledger.usage_counters (
  stripe_customer_id text   NOT NULL,
  metric             text   NOT NULL,
  day                date   NOT NULL,
  used               bigint NOT NULL,
  CONSTRAINT usage_counters_pkey PRIMARY KEY (stripe_customer_id, metric, day),
  CONSTRAINT usage_counters_used CHECK (used >= 0)
);
COMMENT ON TABLE ledger.usage_counters IS 'Per customer, metric and UTC day: the sum of ledger.usage quantities.';

-- Counts one request against a daily quota in one statement: the same idempotency key again
-- returns the first count ('replayed'); without a live subscription ('no_live_subscription') or
-- over the quota ('refused') nothing is written. The counter's conditional upsert is what makes
-- concurrent requests unable to overshoot. p_quota NULL: unlimited.
CREATE FUNCTION ledger.count_usage(
  p_customer text, p_metric text, p_quantity bigint, p_key text, p_caller text,
  p_day date, p_at timestamptz, p_live boolean, p_quota bigint
) RETURNS TABLE (outcome text, r_metric text, r_quantity bigint, r_day date, r_used bigint, r_quota bigint,
                 r_balance bigint)
LANGUAGE plpgsql AS $$
DECLARE
  prior ledger.usage;
  counted bigint;
BEGIN
  PERFORM pg_advisory_xact_lock(hashtextextended(p_customer || '/' || p_key, 12));
  SELECT * INTO prior FROM ledger.usage u WHERE u.stripe_customer_id = p_customer AND u.idempotency_key = p_key;
  IF FOUND THEN
    RETURN QUERY SELECT 'replayed', prior.metric, prior.quantity, prior.day, prior.used_after, prior.quota,
                        prior.balance_after;
    RETURN;
  END IF;
  IF NOT p_live THEN
    RETURN QUERY SELECT 'no_live_subscription', p_metric, p_quantity, p_day, 0::bigint, NULL::bigint, NULL::bigint;
    RETURN;
  END IF;
  IF p_quota IS NULL OR p_quantity <= p_quota THEN
    INSERT INTO ledger.usage_counters AS c (stripe_customer_id, metric, day, used)
    VALUES (p_customer, p_metric, p_day, p_quantity)
    ON CONFLICT (stripe_customer_id, metric, day) DO UPDATE SET used = c.used + excluded.used
      WHERE p_quota IS NULL OR c.used + excluded.used <= p_quota
    RETURNING c.used INTO counted;
  END IF;
  IF counted IS NULL THEN
    RETURN QUERY SELECT 'refused', p_metric, p_quantity, p_day,
      COALESCE((SELECT c.used FROM ledger.usage_counters c
                WHERE c.stripe_customer_id = p_customer AND c.metric = p_metric AND c.day = p_day), 0),
      p_quota, NULL::bigint;
    RETURN;
  END IF;
  INSERT INTO ledger.usage (stripe_customer_id, metric, quantity, idempotency_key, caller, day, recorded_at,
                            used_after, quota)
  VALUES (p_customer, p_metric, p_quantity, p_key, p_caller, p_day, p_at, counted, p_quota);
  RETURN QUERY SELECT 'counted', p_metric, p_quantity, p_day, counted, p_quota, NULL::bigint;
END
$$;
REVOKE ALL ON FUNCTION ledger.count_usage FROM PUBLIC;
GRANT EXECUTE ON FUNCTION ledger.count_usage TO ledger_projector;

-- Group commit: the API counts the requests that arrived together in one call and one commit
-- (one WAL flush for all of them), each as ledger.count_usage would. Every idempotency key's lock
-- is taken first, in one global order, then the counters in theirs (requests sorted by customer,
-- metric, day, key): two batches never wait on each other in a cycle. `ord` is the request's
-- place in the arrays.
CREATE FUNCTION ledger.count_usage_batch(
  p_customers text[], p_metrics text[], p_quantities bigint[], p_keys text[], p_callers text[],
  p_days date[], p_ats timestamptz[], p_lives boolean[], p_quotas bigint[]
) RETURNS TABLE (ord integer, outcome text, r_metric text, r_quantity bigint, r_day date, r_used bigint,
                 r_quota bigint, r_balance bigint)
LANGUAGE plpgsql AS $$
DECLARE
  h bigint;
  i integer;
BEGIN
  FOR h IN SELECT DISTINCT hashtextextended(c || '/' || k, 12) FROM unnest(p_customers, p_keys) AS t(c, k) ORDER BY 1
  LOOP
    PERFORM pg_advisory_xact_lock(h);
  END LOOP;
  FOR i IN SELECT t.n::integer FROM unnest(p_customers, p_metrics, p_days, p_keys) WITH ORDINALITY AS t(c, m, d, k, n)
           ORDER BY t.c, t.m, t.d, t.k, t.n
  LOOP
    RETURN QUERY SELECT i, u.* FROM ledger.count_usage(p_customers[i], p_metrics[i], p_quantities[i], p_keys[i],
      p_callers[i], p_days[i], p_ats[i], p_lives[i], p_quotas[i]) u;
  END LOOP;
END
$$;
REVOKE ALL ON FUNCTION ledger.count_usage_batch FROM PUBLIC;
GRANT EXECUTE ON FUNCTION ledger.count_usage_batch TO ledger_projector;
GRANT SELECT, INSERT ON ledger.usage TO ledger_projector;
GRANT SELECT, INSERT, UPDATE ON ledger.usage_counters TO ledger_projector;

-- The balance is no longer a projection: it is grants (projection.credit_grants) minus debits
-- (ledger.usage), with rollover caps in time order, computed where it is read (docs/usage.md).
DROP VIEW audit.credits;
DROP TABLE projection.credits;

CREATE VIEW audit.credits AS
SELECT customer AS stripe_customer_id,
       sum(granted)::bigint AS granted, sum(consumed)::bigint AS consumed, sum(grants)::bigint AS grants
FROM (
  SELECT stripe_customer_id AS customer, credits AS granted, 0 AS consumed, 1 AS grants
  FROM projection.credit_grants
  UNION ALL
  SELECT stripe_customer_id, 0, quantity, 0 FROM ledger.usage WHERE metric = 'credits'
) t
GROUP BY customer;
COMMENT ON VIEW audit.credits IS 'Credits granted and consumed per customer. The balance applies rollover caps in time order: GET /v1/customers/{id}.';
GRANT SELECT ON audit.credits TO ledger_auditor;

CREATE VIEW audit.usage AS
SELECT id, stripe_customer_id, metric, quantity, idempotency_key, caller, day, recorded_at, applies_at, used_after, quota,
       consumed_after, balance_after
FROM ledger.usage;
GRANT SELECT ON audit.usage TO ledger_auditor;
