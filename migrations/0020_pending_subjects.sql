-- Issue 14: the dispatcher's instance and token passes cost what is pending, not what exists.
-- Before, each pass compared every instance target with what was observed and every token want
-- with the live tokens: a cost that grows with customers. A subject (a subscription's instance, a
-- customer's token) becomes pending when the fold journals an intent about it or its observed side
-- is written; the dispatcher removes it when a pass finds it in sync (only if nothing marked it
-- again meanwhile: `seq`).
-- What becomes due with time alone is found through indexes (token renewal, undelivered tokens)
-- or by the full sweep every EFFECT_SWEEP_SECS (grace deadlines; docs/effects.md).
CREATE SEQUENCE ledger.pending_subjects_seq;
CREATE TABLE ledger.pending_subjects (
  kind    text   NOT NULL,
  subject text   NOT NULL,
  seq     bigint NOT NULL,
  CONSTRAINT pending_subjects_pkey PRIMARY KEY (kind, subject),
  CONSTRAINT pending_subjects_kind_known CHECK (kind IN ('instance', 'token'))
);
COMMENT ON TABLE ledger.pending_subjects IS 'Instances (by subscription) and tokens (by customer) an intent asked about that the dispatcher has not yet found in sync. Kept by a trigger on ledger.intents; the dispatcher deletes what it found in sync.';

-- Runs as its owner: the projector and replay roles write these tables, not pending_subjects.
-- Marks: an intent about an instance or a token; any write to an instance's observed row or to a
-- customer's tokens (the dispatcher's own, an operator's re-arm), so the next pass checks it again.
CREATE FUNCTION ledger.track_pending_subject() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  pending_kind text;
  pending_subject text;
BEGIN
  -- One branch per table: a record's field is resolved when its statement is planned.
  IF TG_TABLE_NAME = 'intents' THEN
    pending_kind := NEW.kind;
    pending_subject := NEW.subject;
  ELSIF TG_TABLE_NAME = 'instances_observed' THEN
    pending_kind := 'instance';
    pending_subject := NEW.stripe_subscription_id;
  ELSE
    pending_kind := 'token';
    pending_subject := NEW.stripe_customer_id;
  END IF;
  INSERT INTO ledger.pending_subjects (kind, subject, seq)
  VALUES (pending_kind, pending_subject, nextval('ledger.pending_subjects_seq'))
  ON CONFLICT (kind, subject) DO UPDATE SET seq = EXCLUDED.seq;
  RETURN NULL;
END $$;
REVOKE ALL ON FUNCTION ledger.track_pending_subject() FROM PUBLIC;

CREATE TRIGGER intents_pending_subject AFTER INSERT ON ledger.intents
  FOR EACH ROW WHEN (NEW.kind IN ('instance', 'token')) EXECUTE FUNCTION ledger.track_pending_subject();
CREATE TRIGGER instances_observed_pending_subject AFTER INSERT OR UPDATE ON ledger.instances_observed
  FOR EACH ROW EXECUTE FUNCTION ledger.track_pending_subject();
CREATE TRIGGER api_tokens_pending_subject AFTER INSERT OR UPDATE ON ledger.api_tokens
  FOR EACH ROW EXECUTE FUNCTION ledger.track_pending_subject();

-- A customer's tokens, all of them (the next token's key counts them; before, a scan of the table).
CREATE INDEX api_tokens_customer_idx ON ledger.api_tokens (stripe_customer_id);
-- Tokens due with time: to renew, or not yet delivered.
CREATE INDEX api_tokens_expires_idx ON ledger.api_tokens (expires_at) WHERE revoked_at IS NULL;
CREATE INDEX api_tokens_undelivered_idx ON ledger.api_tokens (stripe_customer_id)
  WHERE revoked_at IS NULL AND delivered_at IS NULL;

GRANT SELECT, DELETE ON ledger.pending_subjects TO ledger_projector;
