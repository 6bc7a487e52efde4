-- Issue 33, item 1: the usage batch decided as a set. Before, ledger.count_usage_batch called
-- ledger.count_usage once per request (a key lookup, a conditional upsert and an insert each).
-- Now a batch takes its idempotency-key locks and its counters' locks once (both in hash order:
-- no deadlock between batches), reads the earlier rows of its keys and its counters in one
-- statement each, decides every request in memory in arrival order (the same rules: a key seen
-- before is replayed, no live tier counts nothing, a request counts only if the counter stays
-- within the quota, else it is refused with the count as it is), then writes the usage rows in
-- one INSERT and each counter's growth in one upsert. Same signature and answers, so the API's
-- group commit (api/src/counter.rs) is unchanged. Counters are locked by advisory locks on
-- (customer, metric, day) besides their row locks, because a batch may be the first to count a
-- day; the per-request ledger.count_usage stays for single counts and takes the same lock.
-- The advisory lock of one counter (customer, metric, day), taken by every writer of quota counters.
CREATE FUNCTION ledger.usage_counter_lock(p_customer text, p_metric text, p_day date) RETURNS bigint
LANGUAGE sql IMMUTABLE AS $$
  SELECT hashtextextended(jsonb_build_array(p_customer, p_metric, p_day)::text, 13)
$$;
GRANT EXECUTE ON FUNCTION ledger.usage_counter_lock(text, text, date) TO ledger_projector;

CREATE OR REPLACE FUNCTION ledger.count_usage(p_customer text, p_metric text, p_quantity bigint, p_key text,
  p_caller text, p_day date, p_at timestamptz, p_live boolean, p_quota bigint)
RETURNS TABLE(outcome text, r_metric text, r_quantity bigint, r_day date, r_used bigint, r_quota bigint, r_balance bigint)
LANGUAGE plpgsql AS $$
DECLARE
  prior ledger.usage;
  counted bigint;
BEGIN
  PERFORM pg_advisory_xact_lock(hashtextextended(p_customer || '/' || p_key, 12));
  PERFORM pg_advisory_xact_lock(ledger.usage_counter_lock(p_customer, p_metric, p_day));
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

CREATE OR REPLACE FUNCTION ledger.count_usage_batch(
  p_customers text[], p_metrics text[], p_quantities bigint[], p_keys text[], p_callers text[], p_days date[],
  p_ats timestamptz[], p_lives boolean[], p_quotas bigint[])
RETURNS TABLE(ord integer, outcome text, r_metric text, r_quantity bigint, r_day date, r_used bigint, r_quota bigint,
              r_balance bigint)
LANGUAGE plpgsql
-- Key lookups, never a scan of the usage log (a generic plan over arrays cannot tell their size).
SET enable_seqscan = off
AS $$
DECLARE
  n          integer := coalesce(cardinality(p_customers), 0);
  h          bigint;
  i          integer;
  k          text;
  c          text;
  v_used     bigint;
  v_prior    jsonb;
  v_priors   jsonb;
  v_counters jsonb;
  v_counted  jsonb := '{}';
  o_outcome  text[] := '{}';
  o_metric   text[] := '{}';
  o_quantity bigint[] := '{}';
  o_day      date[] := '{}';
  o_used     bigint[] := '{}';
  o_quota    bigint[] := '{}';
  o_balance  bigint[] := '{}';
  w_idx      integer[] := '{}';
BEGIN
  IF n = 0 THEN
    RETURN;
  END IF;
  FOR h IN SELECT DISTINCT hashtextextended(t.c || '/' || t.k, 12) FROM unnest(p_customers, p_keys) AS t(c, k) ORDER BY 1
  LOOP
    PERFORM pg_advisory_xact_lock(h);
  END LOOP;
  FOR h IN SELECT DISTINCT ledger.usage_counter_lock(t.c, t.m, t.d)
           FROM unnest(p_customers, p_metrics, p_days) AS t(c, m, d) ORDER BY 1
  LOOP
    PERFORM pg_advisory_xact_lock(h);
  END LOOP;
  SELECT coalesce(jsonb_object_agg(jsonb_build_array(u.stripe_customer_id, u.idempotency_key)::text, to_jsonb(u)), '{}')
    INTO v_priors
  FROM unnest(p_customers, p_keys) AS b(c, k)
  JOIN LATERAL (SELECT * FROM ledger.usage x WHERE x.stripe_customer_id = b.c AND x.idempotency_key = b.k) u ON true;
  SELECT coalesce(jsonb_object_agg(jsonb_build_array(u.stripe_customer_id, u.metric, u.day)::text, u.used), '{}')
    INTO v_counters
  FROM (SELECT DISTINCT t.c, t.m, t.d FROM unnest(p_customers, p_metrics, p_days) AS t(c, m, d)) b
  JOIN LATERAL (SELECT * FROM ledger.usage_counters x WHERE x.stripe_customer_id = b.c AND x.metric = b.m AND x.day = b.d) u
    ON true;

  FOR i IN 1 .. n LOOP
    k := jsonb_build_array(p_customers[i], p_keys[i])::text;
    v_prior := coalesce(v_priors -> k, v_counted -> k);
    IF v_prior IS NOT NULL THEN
      o_outcome[i] := 'replayed';
      o_metric[i] := v_prior ->> 'metric';
      o_quantity[i] := (v_prior ->> 'quantity')::bigint;
      o_day[i] := (v_prior ->> 'day')::date;
      o_used[i] := (v_prior ->> 'used_after')::bigint;
      o_quota[i] := (v_prior ->> 'quota')::bigint;
      o_balance[i] := (v_prior ->> 'balance_after')::bigint;
      CONTINUE;
    END IF;
    o_metric[i] := p_metrics[i];
    o_quantity[i] := p_quantities[i];
    o_day[i] := p_days[i];
    IF NOT p_lives[i] THEN
      o_outcome[i] := 'no_live_subscription';
      o_used[i] := 0;
      CONTINUE;
    END IF;
    c := jsonb_build_array(p_customers[i], p_metrics[i], p_days[i])::text;
    v_used := coalesce((v_counters ->> c)::bigint, 0);
    o_quota[i] := p_quotas[i];
    IF p_quotas[i] IS NULL OR v_used + p_quantities[i] <= p_quotas[i] THEN
      v_used := v_used + p_quantities[i];
      v_counters := jsonb_set(v_counters, ARRAY[c], to_jsonb(v_used));
      o_outcome[i] := 'counted';
      o_used[i] := v_used;
      w_idx := w_idx || i;
      v_counted := v_counted || jsonb_build_object(k, jsonb_build_object(
        'metric', p_metrics[i], 'quantity', p_quantities[i], 'day', p_days[i], 'used_after', v_used,
        'quota', p_quotas[i], 'balance_after', NULL));
    ELSE
      o_outcome[i] := 'refused';
      o_used[i] := v_used;
    END IF;
  END LOOP;

  IF cardinality(w_idx) > 0 THEN
    INSERT INTO ledger.usage (stripe_customer_id, metric, quantity, idempotency_key, caller, day, recorded_at,
                              used_after, quota)
    SELECT p_customers[j], p_metrics[j], p_quantities[j], p_keys[j], p_callers[j], p_days[j], p_ats[j], o_used[j],
           o_quota[j]
    FROM unnest(w_idx) WITH ORDINALITY AS w(j, o) ORDER BY w.o;
    INSERT INTO ledger.usage_counters AS u (stripe_customer_id, metric, day, used)
    SELECT p_customers[j], p_metrics[j], p_days[j], sum(p_quantities[j])
    FROM unnest(w_idx) AS w(j) GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
    ON CONFLICT (stripe_customer_id, metric, day) DO UPDATE SET used = u.used + excluded.used;
  END IF;
  RETURN QUERY SELECT g.i, o_outcome[g.i], o_metric[g.i], o_quantity[g.i], o_day[g.i], o_used[g.i], o_quota[g.i],
                      o_balance[g.i]
               FROM generate_series(1, n) AS g(i);
END
$$;

