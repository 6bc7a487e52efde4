-- Issue 32: erasure of a customer's personal data in an append-only log (docs/auditing.md,
-- "Erasure"). An erasure is a fact: a row of ledger.erasures (who, when, why, which customer) and
-- one row of ledger.redactions per body it redacted, with the sha256 of the redacted body. Both
-- are append-only like the log. A body is rewritten only by ledger.redact_event, and only to the
-- exact bytes a redaction row committed to: the guard on ledger.events refuses every other UPDATE,
-- for every role. The chain does not move: it covers body_sha256, the original body's hash, which
-- stays; `replay verify` checks a redacted body against its redaction row instead.
CREATE TABLE ledger.erasures (
  id                 bigint      GENERATED ALWAYS AS IDENTITY,
  stripe_customer_id text        NOT NULL,
  reason             text        NOT NULL,
  requested_by       text        NOT NULL,
  erased_at          timestamptz NOT NULL DEFAULT now(),
  positions          bigint[]    NOT NULL,
  CONSTRAINT erasures_pkey PRIMARY KEY (id),
  CONSTRAINT erasures_reason_given CHECK (length(btrim(reason)) > 0)
);
COMMENT ON TABLE ledger.erasures IS 'Each erasure of a customer''s personal data (replay erase): who, when, why, the positions it redacted (each with its hash in ledger.redactions). Append-only.';

CREATE TABLE ledger.redactions (
  erasure_id      bigint NOT NULL REFERENCES ledger.erasures (id),
  "position"      bigint NOT NULL,
  redacted_sha256 bytea  NOT NULL,
  CONSTRAINT redactions_pkey PRIMARY KEY ("position", erasure_id),
  CONSTRAINT redactions_sha256_is_sha256 CHECK (octet_length(redacted_sha256) = 32)
);
COMMENT ON TABLE ledger.redactions IS 'The bodies an erasure redacted: position and the sha256 of the redacted body the log holds since. Append-only.';

CREATE TRIGGER erasures_no_update_delete BEFORE UPDATE OR DELETE ON ledger.erasures
  FOR EACH ROW EXECUTE FUNCTION ledger.forbid_mutation();
CREATE TRIGGER erasures_no_truncate BEFORE TRUNCATE ON ledger.erasures
  FOR EACH STATEMENT EXECUTE FUNCTION ledger.forbid_mutation();
CREATE TRIGGER redactions_no_update_delete BEFORE UPDATE OR DELETE ON ledger.redactions
  FOR EACH ROW EXECUTE FUNCTION ledger.forbid_mutation();
CREATE TRIGGER redactions_no_truncate BEFORE TRUNCATE ON ledger.redactions
  FOR EACH STATEMENT EXECUTE FUNCTION ledger.forbid_mutation();
ALTER TABLE ledger.erasures ENABLE ALWAYS TRIGGER erasures_no_update_delete;
ALTER TABLE ledger.erasures ENABLE ALWAYS TRIGGER erasures_no_truncate;
ALTER TABLE ledger.redactions ENABLE ALWAYS TRIGGER redactions_no_update_delete;
ALTER TABLE ledger.redactions ENABLE ALWAYS TRIGGER redactions_no_truncate;

-- The guard of ledger.events: DELETE is refused; an UPDATE passes only inside ledger.redact_event
-- (which names its erasure in the transaction-local setting ledger.redacting), only if raw_body
-- is the only column that changes, and only to the bytes that erasure's redaction row names.
CREATE FUNCTION ledger.guard_events() RETURNS trigger
  LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
  IF TG_OP = 'UPDATE'
     AND (to_jsonb(NEW) - 'raw_body') = (to_jsonb(OLD) - 'raw_body')
     AND EXISTS (SELECT 1 FROM ledger.redactions r
                 WHERE r.erasure_id::text = current_setting('ledger.redacting', true)
                   AND r."position" = OLD."position"
                   AND r.redacted_sha256 = sha256(NEW.raw_body)) THEN
    RETURN NEW;
  END IF;
  RAISE EXCEPTION 'ledger.% is append-only: % rejected', TG_TABLE_NAME, TG_OP
    USING ERRCODE = 'insufficient_privilege';
END $$;
DROP TRIGGER events_no_update_delete ON ledger.events;
CREATE TRIGGER events_no_update_delete BEFORE UPDATE OR DELETE ON ledger.events
  FOR EACH ROW EXECUTE FUNCTION ledger.guard_events();
ALTER TABLE ledger.events ENABLE ALWAYS TRIGGER events_no_update_delete;

-- Writes the redacted body of `pos` for erasure `erasure`: the one way a body changes.
CREATE FUNCTION ledger.redact_event(erasure bigint, pos bigint, body bytea) RETURNS void
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
  PERFORM set_config('ledger.redacting', erasure::text, true);
  UPDATE ledger.events SET raw_body = body WHERE "position" = pos;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'no event at position %', pos;
  END IF;
  PERFORM set_config('ledger.redacting', '', true);
END $$;
REVOKE ALL ON FUNCTION ledger.redact_event(bigint, bigint, bytea) FROM PUBLIC;
REVOKE ALL ON FUNCTION ledger.guard_events() FROM PUBLIC;

GRANT SELECT ON ledger.erasures, ledger.redactions TO ledger_replay;
GRANT SELECT ON ledger.erasures, ledger.redactions TO ledger_projector;

CREATE VIEW audit.erasures AS
SELECT id, stripe_customer_id, reason, requested_by, erased_at, positions FROM ledger.erasures;
GRANT SELECT ON audit.erasures TO ledger_auditor;
