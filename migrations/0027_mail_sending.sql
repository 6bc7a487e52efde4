-- A mail is journaled `sending` before its SMTP call (issue 29): a dispatcher killed between the
-- SMTP answer and the journal row leaves `sending` as the latest row, and the next leader records
-- "delivery unknown" (failed, the admin alerted) instead of deciding the mail is no longer
-- needed. A `sending` row keeps the key pending, as `retry` does.
ALTER TABLE ledger.effects DROP CONSTRAINT effects_outcome_known;
ALTER TABLE ledger.effects ADD CONSTRAINT effects_outcome_known
  CHECK (outcome IN ('succeeded', 'retry', 'failed', 'skipped', 'sending'));

CREATE OR REPLACE FUNCTION ledger.track_pending_effect() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
  -- Nested: a record's field is resolved when its expression is planned, and only effects rows
  -- have an outcome.
  IF TG_TABLE_NAME = 'effects' THEN
    IF NEW.outcome NOT IN ('retry', 'sending') THEN
      DELETE FROM ledger.pending_effects WHERE key = NEW.key;
      RETURN NULL;
    END IF;
  END IF;
  INSERT INTO ledger.pending_effects (key) VALUES (NEW.key) ON CONFLICT DO NOTHING;
  RETURN NULL;
END $$;
