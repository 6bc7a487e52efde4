-- Issue 30, GET /v1/analytics/mrr at 100,000 customers: per currency and UTC day, the sums of the
-- day's movements, kept beside projection.mrr_movements by a statement trigger on it, so a year's
-- answer reads at most 366 rows per currency and the MRR before the range is a sum over days, not
-- over every movement (docs/analytics.md, figures in docs/benchmarks.md). Not a fold table: a
-- rebuild creates it empty with the others and fills it from the new movements before the swap
-- commits (store::rebuild), and the trigger is carried over like the others.
CREATE TABLE projection.mrr_days (
  currency     text   NOT NULL,
  day          date   NOT NULL,
  new          bigint NOT NULL DEFAULT 0,
  expansion    bigint NOT NULL DEFAULT 0,
  contraction  bigint NOT NULL DEFAULT 0,
  churn        bigint NOT NULL DEFAULT 0,
  reactivation bigint NOT NULL DEFAULT 0,
  starts       bigint NOT NULL DEFAULT 0,
  CONSTRAINT mrr_days_pkey PRIMARY KEY (currency, day)
);
COMMENT ON TABLE projection.mrr_days IS 'Per currency and UTC day: the sums of projection.mrr_movements by kind, and starts (new and reactivation count +1, churn -1). Kept by a trigger on mrr_movements.';

-- Adds the movements given as parallel arrays, each times its sign (+1 a row that came, -1 one
-- that went), to projection.mrr_days. The one place the sums are written.
CREATE FUNCTION ledger.add_mrr_days(currencies text[], days date[], kinds text[], amounts bigint[], signs integer[])
RETURNS void LANGUAGE sql AS $$
  INSERT INTO projection.mrr_days AS d (currency, day, new, expansion, contraction, churn, reactivation, starts)
  SELECT m.currency, m.day,
         coalesce(sum(m.sign * m.amount) FILTER (WHERE m.kind = 'new'), 0),
         coalesce(sum(m.sign * m.amount) FILTER (WHERE m.kind = 'expansion'), 0),
         coalesce(sum(m.sign * m.amount) FILTER (WHERE m.kind = 'contraction'), 0),
         coalesce(sum(m.sign * m.amount) FILTER (WHERE m.kind = 'churn'), 0),
         coalesce(sum(m.sign * m.amount) FILTER (WHERE m.kind = 'reactivation'), 0),
         sum(m.sign * CASE m.kind WHEN 'new' THEN 1 WHEN 'reactivation' THEN 1 WHEN 'churn' THEN -1 ELSE 0 END)
  FROM unnest(currencies, days, kinds, amounts, signs) AS m (currency, day, kind, amount, sign)
  WHERE m.day IS NOT NULL
  GROUP BY m.currency, m.day
  ON CONFLICT (currency, day) DO UPDATE SET
    new = d.new + EXCLUDED.new, expansion = d.expansion + EXCLUDED.expansion,
    contraction = d.contraction + EXCLUDED.contraction, churn = d.churn + EXCLUDED.churn,
    reactivation = d.reactivation + EXCLUDED.reactivation, starts = d.starts + EXCLUDED.starts
$$;

CREATE FUNCTION ledger.follow_mrr_movements() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP IN ('UPDATE', 'DELETE') THEN
    PERFORM ledger.add_mrr_days(array_agg(currency), array_agg(day), array_agg(kind), array_agg(amount),
                                array_agg(-1)) FROM old_rows;
  END IF;
  IF TG_OP IN ('INSERT', 'UPDATE') THEN
    PERFORM ledger.add_mrr_days(array_agg(currency), array_agg(day), array_agg(kind), array_agg(amount),
                                array_agg(1)) FROM new_rows;
  END IF;
  RETURN NULL;
END
$$;
REVOKE ALL ON FUNCTION ledger.add_mrr_days(text[], date[], text[], bigint[], integer[]) FROM PUBLIC;
REVOKE ALL ON FUNCTION ledger.follow_mrr_movements() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION ledger.add_mrr_days(text[], date[], text[], bigint[], integer[]) TO ledger_projector;
GRANT EXECUTE ON FUNCTION ledger.follow_mrr_movements() TO ledger_projector;

CREATE TRIGGER mrr_movements_follow_insert AFTER INSERT ON projection.mrr_movements
  REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION ledger.follow_mrr_movements();
CREATE TRIGGER mrr_movements_follow_update AFTER UPDATE ON projection.mrr_movements
  REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION ledger.follow_mrr_movements();
CREATE TRIGGER mrr_movements_follow_delete AFTER DELETE ON projection.mrr_movements
  REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION ledger.follow_mrr_movements();

GRANT SELECT, INSERT, UPDATE ON projection.mrr_days TO ledger_projector;
GRANT SELECT ON projection.mrr_days TO ledger_replay;

SELECT ledger.add_mrr_days(array_agg(currency), array_agg(day), array_agg(kind), array_agg(amount), array_agg(1))
FROM projection.mrr_movements;
