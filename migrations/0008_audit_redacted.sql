-- What auditors see (docs/auditing.md, docs/security.md):
-- 1. Bodies with Stripe's secrets redacted. Checkout Sessions, PaymentIntents and SetupIntents
--    carry a `client_secret` (it lets a browser complete the payment), webhook endpoint events a
--    `secret`: an auditor needs neither. audit.events now shows every body through audit.redact();
--    the exact bytes stay in ledger.events for the owner (body_sha256 is of those exact bytes).
-- 2. A view that never fails: a body PostgreSQL cannot parse (invalid UTF-8, a \u0000 escape; ingest
--    stores such a body when it is signed and names an event id) shows NULL bodies on its own row
--    instead of breaking the query for every other row.

-- Replaces the value of every key named in audit.secret_keys(), at any depth.
CREATE FUNCTION audit.redact(p jsonb) RETURNS jsonb
LANGUAGE sql IMMUTABLE STRICT
SET search_path = pg_catalog, pg_temp
AS $$
  SELECT CASE jsonb_typeof(p)
    WHEN 'object' THEN (
      SELECT coalesce(jsonb_object_agg(k, CASE WHEN k IN ('client_secret', 'secret')
                                               THEN to_jsonb('[redacted]'::text)
                                               ELSE audit.redact(v) END), '{}'::jsonb)
      FROM jsonb_each(p) AS e(k, v))
    WHEN 'array' THEN (
      SELECT coalesce(jsonb_agg(audit.redact(v) ORDER BY i), '[]'::jsonb)
      FROM jsonb_array_elements(p) WITH ORDINALITY AS a(v, i))
    ELSE p
  END
$$;
COMMENT ON FUNCTION audit.redact(jsonb) IS 'The JSON with the values of client_secret and secret keys (any depth) replaced by "[redacted]".';

CREATE OR REPLACE VIEW audit.events AS
SELECT position, stripe_event_id, event_type, api_version, livemode, created, received_at, source,
       received_by, object_type, object_id, customer_id,
       audit.subscription_of(object_type, object_id, payload) AS subscription_id,
       convert_to(audit.redact(payload)::text, 'UTF8') AS raw_body,
       audit.redact(payload)::text COLLATE "C" AS body_text,
       audit.redact(payload) AS payload,
       stripe_signature, body_sha256, prev_hash, chain_hash
FROM ledger.events;
COMMENT ON VIEW audit.events IS 'Every event: envelope columns, the body with secrets redacted (raw_body, body_text and payload are the same redacted JSON; NULL when the stored body is not JSON PostgreSQL can hold), the Stripe-Signature header, and the hashes of the exact stored bytes (ledger.events, owner only).';

REVOKE ALL ON FUNCTION audit.redact(jsonb) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION audit.redact(jsonb) TO ledger_auditor;
