-- Effects name what they act on in columns of their own (docs/effects.md), so no query parses an
-- idempotency key: `subject_type` ('subscription' or 'customer') and `subject` (its id) on the
-- outbox and the journal. The dispatcher keeps its own state in its own tables: admin alerts move
-- from the fold's outbox to `ledger.alerts`, and failed effects are no longer copied into the
-- fold's `projection.anomalies` (a view shows them; see below).
--
-- The backfill is the one place that reads old keys in SQL, once; the function doing it is
-- dropped at the end.

CREATE FUNCTION ledger.migration_0010_subject(k text) RETURNS text[] LANGUAGE plpgsql STABLE AS $$
BEGIN
  IF k LIKE 'email:alert:%' THEN
    RETURN ledger.migration_0010_subject(regexp_replace(substr(k, 13), '#[0-9]+$', ''));
  ELSIF k LIKE 'email:payment_failed:%' THEN
    -- The invoice is in the key; the subscription in the intent's detail.
    RETURN ARRAY['subscription',
                 (SELECT substring(i.detail FROM '^payment failed for ([^;]+);') FROM ledger.intents i WHERE i.key = k)];
  ELSIF split_part(k, ':', 1) IN ('instance', 'grace', 'restore') THEN
    RETURN ARRAY['subscription', split_part(k, ':', 2)];
  ELSIF split_part(k, ':', 1) = 'token' THEN
    RETURN ARRAY['customer', split_part(k, ':', 2)];
  ELSIF split_part(k, ':', 1) IN ('revoke', 'retier', 'renew') OR k LIKE 'email:token:%' THEN
    RETURN ARRAY['customer', split_part(k, ':', 3)];
  ELSIF k LIKE 'email:welcome:%' OR k LIKE 'email:canceled:%' THEN
    RETURN ARRAY['subscription', split_part(k, ':', 3)];
  END IF;
  RETURN NULL;
END
$$;

ALTER TABLE ledger.intents ADD COLUMN subject_type text, ADD COLUMN subject text;
ALTER TABLE ledger.effects ADD COLUMN subject_type text, ADD COLUMN subject text;
-- The append-only guards stand aside for the backfill only (this transaction).
ALTER TABLE ledger.intents DISABLE TRIGGER intents_no_update_delete;
ALTER TABLE ledger.effects DISABLE TRIGGER effects_no_update_delete;
UPDATE ledger.intents
   SET subject_type = (ledger.migration_0010_subject(key))[1], subject = (ledger.migration_0010_subject(key))[2];
UPDATE ledger.effects
   SET subject_type = (ledger.migration_0010_subject(key))[1], subject = (ledger.migration_0010_subject(key))[2],
       kind = CASE WHEN key LIKE 'email:alert:%' THEN 'alert' ELSE kind END;

-- Admin alerts: the dispatcher's, not the fold's.
CREATE TABLE ledger.alerts (
  key          text        NOT NULL,
  subject_type text        NOT NULL,
  subject      text        NOT NULL,
  detail       text        NOT NULL,
  position     bigint      NOT NULL,
  recorded_at  timestamptz NOT NULL DEFAULT now(),
  CONSTRAINT alerts_pkey PRIMARY KEY (key),
  CONSTRAINT alerts_subject_type_known CHECK (subject_type IN ('subscription', 'customer'))
);
COMMENT ON TABLE ledger.alerts IS 'Admin alerts of effects that failed for good (email:alert:<key>[#n]), mailed to ADMIN_EMAIL like intents; written by the dispatcher.';
INSERT INTO ledger.alerts (key, subject_type, subject, detail, position, recorded_at)
SELECT key, subject_type, subject, detail, position, recorded_at FROM ledger.intents WHERE kind = 'email' AND key LIKE 'email:alert:%';
DELETE FROM ledger.intents WHERE kind = 'email' AND key LIKE 'email:alert:%';
CREATE TRIGGER alerts_no_update_delete BEFORE UPDATE OR DELETE ON ledger.alerts
  FOR EACH ROW EXECUTE FUNCTION ledger.forbid_mutation();
CREATE TRIGGER alerts_no_truncate BEFORE TRUNCATE ON ledger.alerts
  FOR EACH STATEMENT EXECUTE FUNCTION ledger.forbid_mutation();
ALTER TABLE ledger.alerts ENABLE ALWAYS TRIGGER alerts_no_update_delete;
ALTER TABLE ledger.alerts ENABLE ALWAYS TRIGGER alerts_no_truncate;

ALTER TABLE ledger.intents ENABLE ALWAYS TRIGGER intents_no_update_delete;
ALTER TABLE ledger.effects ENABLE ALWAYS TRIGGER effects_no_update_delete;
ALTER TABLE ledger.intents
  ALTER COLUMN subject_type SET NOT NULL, ALTER COLUMN subject SET NOT NULL,
  ADD CONSTRAINT intents_kind_known CHECK (kind IN ('instance', 'token', 'email')),
  ADD CONSTRAINT intents_subject_type_known CHECK (subject_type IN ('subscription', 'customer'));
ALTER TABLE ledger.effects
  ALTER COLUMN subject_type SET NOT NULL, ALTER COLUMN subject SET NOT NULL,
  ADD CONSTRAINT effects_kind_known CHECK (kind IN ('provision', 'update', 'deprovision', 'token', 'email', 'alert')),
  ADD CONSTRAINT effects_subject_type_known CHECK (subject_type IN ('subscription', 'customer'));
COMMENT ON COLUMN ledger.intents.subject IS 'The subscription or customer (subject_type) the effect acts on.';
COMMENT ON COLUMN ledger.effects.subject IS 'The subscription or customer (subject_type) the effect acts on.';
DROP INDEX ledger.intents_subject_idx;
CREATE INDEX intents_subject_idx ON ledger.intents (kind, subject, position);
CREATE INDEX effects_subject_idx ON ledger.effects (subject, id);
DROP FUNCTION ledger.migration_0010_subject(text);

-- Effects that failed for good and are still open: the journal's last row of the key is `failed`,
-- and for an instance no later call on the same subscription succeeded (that settles it).
CREATE VIEW ledger.effect_failures AS
SELECT f.key, f.kind, f.subject_type, f.subject, f.attempt, f.error, f.at, f.id
FROM (SELECT DISTINCT ON (key) * FROM ledger.effects ORDER BY key, id DESC) f
WHERE f.outcome = 'failed'
  AND NOT (f.kind IN ('provision', 'update', 'deprovision') AND EXISTS (
    SELECT 1 FROM ledger.effects s
    WHERE s.subject = f.subject AND s.subject_type = f.subject_type AND s.id > f.id
      AND s.kind IN ('provision', 'update', 'deprovision') AND s.outcome = 'succeeded'));
COMMENT ON VIEW ledger.effect_failures IS 'Effects failed for good and not settled since (`replay effects failed`).';

DELETE FROM projection.anomalies WHERE kind = 'effect_failed';

-- Operators and auditors see one list: what the fold could not project, and effects that failed.
CREATE OR REPLACE VIEW audit.anomalies AS
SELECT key, kind, detail, position FROM projection.anomalies
UNION ALL
SELECT 'effect_failed:' || f.key, 'effect_failed', f.key || ': ' || coalesce(f.error, '-'), coalesce(i.position, 0)
FROM ledger.effect_failures f LEFT JOIN ledger.intents i ON i.key = f.key;
COMMENT ON VIEW audit.anomalies IS 'Open anomalies: the fold''s (projection.anomalies) and effects failed for good (kind effect_failed).';

CREATE OR REPLACE VIEW audit.intents AS
SELECT i.key, i.kind, i.detail, i.position, i.recorded_at,
       CASE WHEN i.subject_type = 'subscription' THEN i.subject END AS stripe_subscription_id,
       CASE WHEN i.subject_type = 'customer' THEN i.subject END AS stripe_customer_id
FROM ledger.intents i;

CREATE OR REPLACE VIEW audit.effects AS
SELECT e.id, e.key, e.kind, e.attempt, e.request, e.response_status, e.outcome, e.error, e.at,
       CASE WHEN e.subject_type = 'subscription' THEN e.subject END AS stripe_subscription_id,
       CASE WHEN e.subject_type = 'customer' THEN e.subject END AS stripe_customer_id,
       i.position AS intent_position
FROM ledger.effects e
LEFT JOIN ledger.intents i ON i.key = e.key;

CREATE VIEW audit.alerts AS SELECT key, subject_type, subject, detail, position, recorded_at FROM ledger.alerts;
GRANT SELECT ON audit.alerts TO ledger_auditor;
GRANT SELECT, INSERT ON ledger.alerts TO ledger_projector;
GRANT SELECT ON ledger.effect_failures TO ledger_projector;
