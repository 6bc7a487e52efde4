-- Issue 14: the dispatcher's mail and fetch passes cost what is pending, not what was ever asked.
-- Before, each pass read every email and fetch intent and every alert, and looked up each one's
-- latest journal row: a cost that grows with history. ledger.pending_effects holds the keys whose
-- effect has no ending journal row (none yet, or the latest is `retry`), kept by triggers on the
-- three tables that change it, so no writer can forget it. The passes read it, and still check the
-- latest journal row of what they read.
CREATE TABLE ledger.pending_effects (
  key text NOT NULL,
  CONSTRAINT pending_effects_pkey PRIMARY KEY (key)
);
COMMENT ON TABLE ledger.pending_effects IS 'Keys of mails, alerts and fetches with no ending journal row (none yet, or the latest is retry). Kept by triggers on ledger.intents, ledger.alerts and ledger.effects; derived, never written by a service.';

-- Runs as its owner: the projector and replay roles write the three tables, not this one.
CREATE FUNCTION ledger.track_pending_effect() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
  -- Nested: a record's field is resolved when its expression is planned, and only effects rows
  -- have an outcome.
  IF TG_TABLE_NAME = 'effects' THEN
    IF NEW.outcome <> 'retry' THEN
      DELETE FROM ledger.pending_effects WHERE key = NEW.key;
      RETURN NULL;
    END IF;
  END IF;
  INSERT INTO ledger.pending_effects (key) VALUES (NEW.key) ON CONFLICT DO NOTHING;
  RETURN NULL;
END $$;
REVOKE ALL ON FUNCTION ledger.track_pending_effect() FROM PUBLIC;

CREATE TRIGGER intents_pending AFTER INSERT ON ledger.intents
  FOR EACH ROW WHEN (NEW.kind IN ('email', 'fetch')) EXECUTE FUNCTION ledger.track_pending_effect();
CREATE TRIGGER alerts_pending AFTER INSERT ON ledger.alerts
  FOR EACH ROW EXECUTE FUNCTION ledger.track_pending_effect();
CREATE TRIGGER effects_pending AFTER INSERT ON ledger.effects
  FOR EACH ROW WHEN (NEW.kind IN ('email', 'alert', 'fetch')) EXECUTE FUNCTION ledger.track_pending_effect();

INSERT INTO ledger.pending_effects (key)
SELECT m.key
FROM (SELECT key FROM ledger.intents WHERE kind IN ('email', 'fetch') UNION SELECT key FROM ledger.alerts) m
WHERE coalesce((SELECT e.outcome FROM ledger.effects e WHERE e.key = m.key ORDER BY e.id DESC LIMIT 1), 'retry') = 'retry';

GRANT SELECT ON ledger.pending_effects TO ledger_projector;
