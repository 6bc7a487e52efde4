-- Issue 29, item 12: effects failed for good are kept as pending effects are (0018), by a trigger
-- on the journal, instead of a DISTINCT ON over the whole journal on every read. Before, the
-- console's overview and failed-effects page, `replay effects failed` and audit.anomalies each
-- sorted every journal row by key to find each key's latest one (docs/benchmarks.md, "Failed
-- effects on a journal of 1M rows").
--
-- ledger.open_failures holds, per key whose latest journal row is `failed` and not settled since,
-- a copy of that row (what the readers show: a read never touches the journal). Settled means what the view always said: any later row of the key (a retry, a
-- success, a skip), or, for an instance call, a later successful call on the same subject.
CREATE TABLE ledger.open_failures (
  key text NOT NULL,
  id bigint NOT NULL,
  kind text NOT NULL,
  subject_type text NOT NULL,
  subject text NOT NULL,
  attempt integer NOT NULL,
  error text,
  at timestamptz NOT NULL,
  CONSTRAINT open_failures_pkey PRIMARY KEY (key)
);
CREATE INDEX open_failures_id_idx ON ledger.open_failures (id);
CREATE INDEX open_failures_subject_idx ON ledger.open_failures (subject, subject_type);
COMMENT ON TABLE ledger.open_failures IS 'Effects failed for good and not settled since: a copy of the failing journal row per key. Kept by a trigger on ledger.effects; derived, never written by a service.';

-- Runs as its owner: the projector and replay roles write the journal, not this table. Ids only
-- grow, but two transactions may commit out of id order: every change compares ids, so the row
-- that is latest by id decides, whichever commits first. Its statements are planned once per
-- session, possibly while the table is empty: sequential scans are forbidden so a plan made then
-- still finds keys and subjects through the indexes when thousands of failures are open (as the
-- append function does, 0022).
CREATE FUNCTION ledger.track_open_failure() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET enable_seqscan = off
AS $$
BEGIN
  IF NEW.outcome = 'failed' THEN
    INSERT INTO ledger.open_failures (key, id, kind, subject_type, subject, attempt, error, at)
    VALUES (NEW.key, NEW.id, NEW.kind, NEW.subject_type, NEW.subject, NEW.attempt, NEW.error, NEW.at)
    ON CONFLICT (key) DO UPDATE
      SET id = EXCLUDED.id, kind = EXCLUDED.kind, subject_type = EXCLUDED.subject_type, subject = EXCLUDED.subject,
          attempt = EXCLUDED.attempt, error = EXCLUDED.error, at = EXCLUDED.at
      WHERE ledger.open_failures.id < EXCLUDED.id;
  ELSE
    DELETE FROM ledger.open_failures WHERE key = NEW.key AND id < NEW.id;
  END IF;
  IF NEW.outcome = 'succeeded' AND NEW.kind IN ('provision', 'update', 'deprovision') THEN
    DELETE FROM ledger.open_failures
    WHERE subject = NEW.subject AND subject_type = NEW.subject_type AND id < NEW.id
      AND kind IN ('provision', 'update', 'deprovision');
  END IF;
  RETURN NULL;
END $$;
REVOKE ALL ON FUNCTION ledger.track_open_failure() FROM PUBLIC;

CREATE TRIGGER effects_open_failures AFTER INSERT ON ledger.effects
  FOR EACH ROW EXECUTE FUNCTION ledger.track_open_failure();

-- What the old view listed, once.
INSERT INTO ledger.open_failures (key, id, kind, subject_type, subject, attempt, error, at)
SELECT f.key, f.id, f.kind, f.subject_type, f.subject, f.attempt, f.error, f.at
FROM (SELECT DISTINCT ON (key) * FROM ledger.effects ORDER BY key, id DESC) f
WHERE f.outcome = 'failed'
  AND NOT (f.kind IN ('provision', 'update', 'deprovision') AND EXISTS (
    SELECT 1 FROM ledger.effects s
    WHERE s.subject = f.subject AND s.subject_type = f.subject_type AND s.id > f.id
      AND s.kind IN ('provision', 'update', 'deprovision') AND s.outcome = 'succeeded'));

-- Same name, same columns: every reader (console, replay, audit.anomalies) reads the table now.
CREATE OR REPLACE VIEW ledger.effect_failures AS
SELECT key, kind, subject_type, subject, attempt, error, at, id FROM ledger.open_failures;
