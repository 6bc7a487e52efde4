-- Issue 31: quota windows (docs/usage.md). A tier limit `<metric>_per_<window>` is a quota per
-- billing period, UTC day, UTC hour or UTC minute; one metric may have several, and a request
-- counts only if every window of its metric has room, then in all of them, in one transaction.

-- The billing period the `_per_period` windows follow (filled by the fold; a rebuild fills the
-- rows folded before this migration).
ALTER TABLE projection.subscriptions ADD COLUMN current_period_start timestamptz;

-- One counter per customer, metric and window (its name and start). `day` stays: the UTC day the
-- window starts on (what retention and compaction go by).
ALTER TABLE ledger.usage_counters ADD COLUMN quota_window text, ADD COLUMN starts_at timestamptz;
UPDATE ledger.usage_counters SET quota_window = 'day', starts_at = day::timestamp AT TIME ZONE 'UTC';
ALTER TABLE ledger.usage_counters
  ALTER COLUMN quota_window SET NOT NULL,
  ALTER COLUMN starts_at SET NOT NULL,
  DROP CONSTRAINT usage_counters_pkey,
  ADD CONSTRAINT usage_counters_pkey PRIMARY KEY (stripe_customer_id, metric, quota_window, starts_at),
  ADD CONSTRAINT usage_counters_window_known CHECK (quota_window IN ('period', 'day', 'hour', 'minute'));
COMMENT ON TABLE ledger.usage_counters IS 'Per customer, metric and quota window (period, day, hour, minute; its start): the sum of the ledger.usage quantities counted in it.';

-- Each counted request keeps every window it counted in ({window, starts_at, resets_at, used,
-- limit}), so a repeated key gets the first answer whole; used_after and quota keep the tightest.
ALTER TABLE ledger.usage ADD COLUMN windows jsonb;
CREATE OR REPLACE VIEW audit.usage AS
SELECT id, stripe_customer_id, metric, quantity, idempotency_key, caller, day, recorded_at, applies_at, used_after, quota,
       consumed_after, balance_after, windows
FROM ledger.usage;

-- The advisory lock of one counter, taken by every writer of quota counters.
CREATE FUNCTION ledger.usage_window_lock(p_customer text, p_metric text, p_window text, p_starts timestamptz)
RETURNS bigint LANGUAGE sql IMMUTABLE AS $$
  SELECT hashtextextended(jsonb_build_array(p_customer, p_metric, p_window, extract(epoch FROM p_starts))::text, 13)
$$;
GRANT EXECUTE ON FUNCTION ledger.usage_window_lock(text, text, text, timestamptz) TO ledger_projector;

-- The customer's counters an answer may show at a moment: this day's, hour's and minute's, and
-- every period counter (one per billing period; the caller picks the current one).
CREATE FUNCTION ledger.current_counters(p_customer text, p_day timestamptz, p_hour timestamptz, p_minute timestamptz)
RETURNS jsonb LANGUAGE sql STABLE AS $$
  SELECT coalesce(jsonb_agg(jsonb_build_object('metric', u.metric, 'window', u.quota_window,
                                               'starts_at', u.starts_at, 'used', u.used)), '[]')
  FROM ledger.usage_counters u
  WHERE u.stripe_customer_id = p_customer
    AND ((u.quota_window = 'day' AND u.starts_at = p_day) OR (u.quota_window = 'hour' AND u.starts_at = p_hour)
         OR (u.quota_window = 'minute' AND u.starts_at = p_minute) OR u.quota_window = 'period')
$$;
GRANT EXECUTE ON FUNCTION ledger.current_counters(text, timestamptz, timestamptz, timestamptz) TO ledger_projector;

-- The single count (pgbench's reference, tests): a day window, as before.
CREATE OR REPLACE FUNCTION ledger.count_usage(p_customer text, p_metric text, p_quantity bigint, p_key text,
  p_caller text, p_day date, p_at timestamptz, p_live boolean, p_quota bigint)
RETURNS TABLE(outcome text, r_metric text, r_quantity bigint, r_day date, r_used bigint, r_quota bigint, r_balance bigint)
LANGUAGE plpgsql AS $$
DECLARE
  prior ledger.usage;
  counted bigint;
  v_start timestamptz := p_day::timestamp AT TIME ZONE 'UTC';
BEGIN
  PERFORM pg_advisory_xact_lock(hashtextextended(p_customer || '/' || p_key, 12));
  PERFORM pg_advisory_xact_lock(ledger.usage_window_lock(p_customer, p_metric, 'day', v_start));
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
    INSERT INTO ledger.usage_counters AS c (stripe_customer_id, metric, quota_window, starts_at, day, used)
    VALUES (p_customer, p_metric, 'day', v_start, p_day, p_quantity)
    ON CONFLICT (stripe_customer_id, metric, quota_window, starts_at) DO UPDATE SET used = c.used + excluded.used
      WHERE p_quota IS NULL OR c.used + excluded.used <= p_quota
    RETURNING c.used INTO counted;
  END IF;
  IF counted IS NULL THEN
    RETURN QUERY SELECT 'refused', p_metric, p_quantity, p_day,
      COALESCE((SELECT c.used FROM ledger.usage_counters c
                WHERE c.stripe_customer_id = p_customer AND c.metric = p_metric AND c.quota_window = 'day'
                  AND c.starts_at = v_start), 0),
      p_quota, NULL::bigint;
    RETURN;
  END IF;
  INSERT INTO ledger.usage (stripe_customer_id, metric, quantity, idempotency_key, caller, day, recorded_at,
                            used_after, quota)
  VALUES (p_customer, p_metric, p_quantity, p_key, p_caller, p_day, p_at, counted, p_quota);
  RETURN QUERY SELECT 'counted', p_metric, p_quantity, p_day, counted, p_quota, NULL::bigint;
END
$$;

DROP FUNCTION ledger.count_usage_batch(text[], text[], bigint[], text[], text[], date[], timestamptz[], boolean[], bigint[]);
DROP FUNCTION ledger.usage_counter_lock(text, text, date);

-- A batch of requests, each with its windows (w_ords: the request's ordinal, ascending; NULL
-- quota: unlimited). Locks its keys and its counters once (in hash order), reads the earlier
-- rows of its keys and its counters in one statement each, decides every request in arrival
-- order (a key seen before, even earlier in the batch, is replayed; no live tier counts nothing;
-- a request counts only if every window stays within its quota, and then in all of them), and
-- writes the rows in one INSERT and the counters in one upsert.
CREATE FUNCTION ledger.count_usage_batch(
  p_customers text[], p_metrics text[], p_quantities bigint[], p_keys text[], p_callers text[], p_days date[],
  p_ats timestamptz[], p_lives boolean[],
  w_ords integer[], w_windows text[], w_starts timestamptz[], w_resets timestamptz[], w_quotas bigint[])
RETURNS TABLE(ord integer, outcome text, r_metric text, r_quantity bigint, r_day date, r_used bigint, r_quota bigint,
              r_balance bigint, r_windows jsonb)
LANGUAGE plpgsql
-- Key lookups, never a scan of the usage log (a generic plan over arrays cannot tell their size).
SET enable_seqscan = off
AS $$
DECLARE
  n          integer := coalesce(cardinality(p_customers), 0);
  m          integer := coalesce(cardinality(w_ords), 0);
  h          bigint;
  i          integer;
  j          integer;
  js         integer;
  jp         integer := 1;
  k          text;
  v_fits     boolean;
  v_used     bigint;
  v_left     bigint;
  v_prior    jsonb;
  v_priors   jsonb;
  v_counted  jsonb := '{}';
  v_windows  jsonb;
  o_outcome  text[] := '{}';
  o_metric   text[] := '{}';
  o_quantity bigint[] := '{}';
  o_day      date[] := '{}';
  o_used     bigint[] := '{}';
  o_quota    bigint[] := '{}';
  o_balance  bigint[] := '{}';
  o_windows  jsonb[] := '{}';
  w_idx      integer[] := '{}';
  cw_idx     integer[] := '{}';
  c_idx      integer[];
  c_used     bigint[];
BEGIN
  IF n = 0 THEN
    RETURN;
  END IF;
  FOR h IN SELECT DISTINCT hashtextextended(t.c || '/' || t.k, 12) FROM unnest(p_customers, p_keys) AS t(c, k) ORDER BY 1
  LOOP
    PERFORM pg_advisory_xact_lock(h);
  END LOOP;
  FOR h IN SELECT DISTINCT ledger.usage_window_lock(p_customers[t.o], p_metrics[t.o], t.w, t.s)
           FROM unnest(w_ords, w_windows, w_starts) AS t(o, w, s) ORDER BY 1
  LOOP
    PERFORM pg_advisory_xact_lock(h);
  END LOOP;
  SELECT coalesce(jsonb_object_agg(jsonb_build_array(u.stripe_customer_id, u.idempotency_key)::text, to_jsonb(u)), '{}')
    INTO v_priors
  FROM unnest(p_customers, p_keys) AS b(c, k)
  JOIN LATERAL (SELECT * FROM ledger.usage x WHERE x.stripe_customer_id = b.c AND x.idempotency_key = b.k) u ON true;
  -- The batch's distinct counters, numbered: c_idx[j] is window j's, c_used[n] counter n's count
  -- (arrays, so that counting is an element update, not a copy of a map).
  SELECT coalesce(array_agg(x.n ORDER BY x.j), '{}') INTO c_idx
  FROM (SELECT t.j, dense_rank() OVER (ORDER BY p_customers[t.o], p_metrics[t.o], t.w, t.s) AS n
        FROM unnest(w_ords, w_windows, w_starts) WITH ORDINALITY AS t(o, w, s, j)) x;
  SELECT coalesce(array_agg(coalesce(u.used, 0) ORDER BY b.n), '{}') INTO c_used
  FROM (SELECT DISTINCT p_customers[t.o] AS c, p_metrics[t.o] AS m, t.w, t.s,
               dense_rank() OVER (ORDER BY p_customers[t.o], p_metrics[t.o], t.w, t.s) AS n
        FROM unnest(w_ords, w_windows, w_starts) AS t(o, w, s)) b
  LEFT JOIN LATERAL (SELECT x.used FROM ledger.usage_counters x
                     WHERE x.stripe_customer_id = b.c AND x.metric = b.m AND x.quota_window = b.w AND x.starts_at = b.s) u
    ON true;

  FOR i IN 1 .. n LOOP
    -- This request's windows: js .. jp - 1.
    js := jp;
    WHILE jp <= m AND w_ords[jp] = i LOOP
      jp := jp + 1;
    END LOOP;
    k := jsonb_build_array(p_customers[i], p_keys[i])::text;
    -- Counted earlier in this batch: the same answer (v_counted holds its index only: copying
    -- whole answers into it made each batch quadratic in its size).
    IF v_counted ? k THEN
      j := (v_counted ->> k)::integer;
      o_outcome[i] := 'replayed';
      o_metric[i] := o_metric[j];
      o_quantity[i] := o_quantity[j];
      o_day[i] := o_day[j];
      o_used[i] := o_used[j];
      o_quota[i] := o_quota[j];
      o_windows[i] := o_windows[j];
      CONTINUE;
    END IF;
    v_prior := v_priors -> k;
    IF v_prior IS NOT NULL THEN
      o_outcome[i] := 'replayed';
      o_metric[i] := v_prior ->> 'metric';
      o_quantity[i] := (v_prior ->> 'quantity')::bigint;
      o_day[i] := (v_prior ->> 'day')::date;
      o_used[i] := (v_prior ->> 'used_after')::bigint;
      o_quota[i] := (v_prior ->> 'quota')::bigint;
      o_balance[i] := (v_prior ->> 'balance_after')::bigint;
      o_windows[i] := v_prior -> 'windows';
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
    v_fits := true;
    FOR j IN js .. jp - 1 LOOP
      IF w_quotas[j] IS NOT NULL AND c_used[c_idx[j]] + p_quantities[i] > w_quotas[j] THEN
        v_fits := false;
      END IF;
    END LOOP;
    o_outcome[i] := CASE WHEN v_fits THEN 'counted' ELSE 'refused' END;
    v_windows := '[]';
    v_left := NULL;
    FOR j IN js .. jp - 1 LOOP
      v_used := c_used[c_idx[j]];
      IF v_fits THEN
        v_used := v_used + p_quantities[i];
        c_used[c_idx[j]] := v_used;
        cw_idx := cw_idx || j;
      END IF;
      v_windows := v_windows || jsonb_build_array(jsonb_build_object(
        'window', w_windows[j], 'starts_at', w_starts[j], 'resets_at', w_resets[j], 'used', v_used,
        'limit', w_quotas[j]));
      -- The tightest window (least left; the first of equals) speaks for used_after and quota.
      IF j = js OR (w_quotas[j] IS NOT NULL AND (v_left IS NULL OR w_quotas[j] - v_used < v_left)) THEN
        o_used[i] := v_used;
        o_quota[i] := w_quotas[j];
        v_left := w_quotas[j] - v_used;
      END IF;
    END LOOP;
    o_windows[i] := v_windows;
    IF v_fits THEN
      w_idx := w_idx || i;
      v_counted := v_counted || jsonb_build_object(k, i);
    END IF;
  END LOOP;

  IF cardinality(w_idx) > 0 THEN
    INSERT INTO ledger.usage (stripe_customer_id, metric, quantity, idempotency_key, caller, day, recorded_at,
                              used_after, quota, windows)
    SELECT p_customers[x], p_metrics[x], p_quantities[x], p_keys[x], p_callers[x], p_days[x], p_ats[x], o_used[x],
           o_quota[x], o_windows[x]
    FROM unnest(w_idx) WITH ORDINALITY AS w(x, o) ORDER BY w.o;
    INSERT INTO ledger.usage_counters AS u (stripe_customer_id, metric, quota_window, starts_at, day, used)
    SELECT p_customers[w_ords[x]], p_metrics[w_ords[x]], w_windows[x], w_starts[x],
           (w_starts[x] AT TIME ZONE 'UTC')::date, sum(p_quantities[w_ords[x]])
    FROM unnest(cw_idx) AS w(x) GROUP BY 1, 2, 3, 4, 5 ORDER BY 1, 2, 3, 4
    ON CONFLICT (stripe_customer_id, metric, quota_window, starts_at) DO UPDATE SET used = u.used + excluded.used;
  END IF;
  RETURN QUERY SELECT g.i, o_outcome[g.i], o_metric[g.i], o_quantity[g.i], o_day[g.i], o_used[g.i], o_quota[g.i],
                      o_balance[g.i], o_windows[g.i]
               FROM generate_series(1, n) AS g(i);
END
$$;
REVOKE ALL ON FUNCTION ledger.count_usage_batch FROM PUBLIC;
GRANT EXECUTE ON FUNCTION ledger.count_usage_batch TO ledger_projector;
