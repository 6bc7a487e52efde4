-- Issue 32: an event about an erased customer that arrives after the erasure (a webhook Stripe
-- still sends, a backfill, a reconcile or a fetched fact) is stored redacted, in the append that
-- stores it (docs/auditing.md, "Erasure"). Ingest verified its signature on the original bytes
-- before the append; `body_sha256` and the chain keep the original body's hash, as for `replay
-- erase`, and a ledger.redactions row (naming the customer's latest erasure) marks the row
-- redacted, so `replay verify` proves it like any other redacted body.
--
-- The redaction rule lives here, once: `replay erase` calls ledger.redact_body too.

CREATE INDEX erasures_customer ON ledger.erasures (stripe_customer_id, id);

-- `v` as an erased value: "[erased]", unless nothing was there (null) or it already is.
CREATE FUNCTION ledger.erased_value(v jsonb) RETURNS jsonb
  LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
  SELECT CASE WHEN v = 'null'::jsonb OR v = '"[erased]"'::jsonb THEN v ELSE '"[erased]"'::jsonb END
$$;

-- `v` with every value under a personal key, at any depth, and every value of a `metadata`
-- object erased; everything else as it was.
CREATE FUNCTION ledger.redacted_json(v jsonb) RETURNS jsonb
  LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
  CASE jsonb_typeof(v)
  WHEN 'object' THEN
    RETURN coalesce((
      SELECT jsonb_object_agg(o.key, CASE
        WHEN o.key = 'metadata' AND jsonb_typeof(o.value) = 'object' THEN
          coalesce((SELECT jsonb_object_agg(m.key, ledger.erased_value(m.value)) FROM jsonb_each(o.value) AS m),
                   o.value)
        WHEN o.key = 'metadata' THEN o.value
        WHEN o.key IN ('email', 'name', 'phone', 'address', 'shipping', 'customer_email', 'customer_name',
                       'customer_phone', 'customer_address', 'customer_details', 'billing_details',
                       'receipt_email', 'description') THEN ledger.erased_value(o.value)
        ELSE ledger.redacted_json(o.value) END)
      FROM jsonb_each(v) AS o), v);
  WHEN 'array' THEN
    RETURN coalesce((
      SELECT jsonb_agg(ledger.redacted_json(a.value) ORDER BY a.i)
      FROM jsonb_array_elements(v) WITH ORDINALITY AS a (value, i)), v);
  ELSE
    RETURN v;
  END CASE;
END $$;

-- The redacted body of `raw` (jsonb's text form: keys ordered by length then bytes, `": "` and
-- `", "` separators, numbers as written), or NULL when it holds nothing to erase or is not JSON
-- PostgreSQL can read (no personal value can be told apart in it; such a body is never folded).
CREATE FUNCTION ledger.redact_body(raw bytea) RETURNS bytea
  LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  v_before jsonb;
  v_after  jsonb;
BEGIN
  BEGIN
    v_before := convert_from(raw, 'UTF8')::jsonb;
  EXCEPTION WHEN others THEN
    RETURN NULL;
  END;
  v_after := ledger.redacted_json(v_before);
  IF v_after = v_before THEN
    RETURN NULL;
  END IF;
  RETURN convert_to(v_after::text, 'UTF8');
END $$;

-- After each append: the new rows about an erased customer (their `customer` or the object
-- itself) are redacted under that customer's latest erasure, through ledger.redact_event, inside
-- the append's transaction and lock (so no reader ever sees the original body). One indexed
-- look-up per new row; nothing else when no erasure names them.
CREATE FUNCTION ledger.redact_on_arrival() RETURNS trigger
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  r      record;
  v_body bytea;
BEGIN
  FOR r IN
    SELECT n."position", n.raw_body, e.id AS erasure
    FROM new_rows n
    CROSS JOIN LATERAL (
      SELECT max(x.id) AS id FROM ledger.erasures x
      WHERE x.stripe_customer_id = n.customer_id OR x.stripe_customer_id = n.object_id) e
    WHERE e.id IS NOT NULL
    ORDER BY n."position"
  LOOP
    v_body := ledger.redact_body(r.raw_body);
    CONTINUE WHEN v_body IS NULL;
    INSERT INTO ledger.redactions (erasure_id, "position", redacted_sha256)
    VALUES (r.erasure, r."position", sha256(v_body));
    PERFORM ledger.redact_event(r.erasure, r."position", v_body);
  END LOOP;
  RETURN NULL;
END $$;
REVOKE ALL ON FUNCTION ledger.redact_on_arrival() FROM PUBLIC;
REVOKE ALL ON FUNCTION ledger.redact_body(bytea) FROM PUBLIC;
REVOKE ALL ON FUNCTION ledger.redacted_json(jsonb) FROM PUBLIC;
REVOKE ALL ON FUNCTION ledger.erased_value(jsonb) FROM PUBLIC;

CREATE TRIGGER events_redact_on_arrival AFTER INSERT ON ledger.events
  REFERENCING NEW TABLE AS new_rows
  FOR EACH STATEMENT EXECUTE FUNCTION ledger.redact_on_arrival();
ALTER TABLE ledger.events ENABLE ALWAYS TRIGGER events_redact_on_arrival;
