-- Issue 14: each body is stored once. `raw_body` (the exact bytes) stays the one stored body;
-- `payload` (the same body parsed as jsonb: ~45 µs of PostgreSQL CPU per event at ingest, plus its
-- TOAST and WAL) is dropped, and the audit views parse `raw_body` when they are read. The columns
-- audit queries filter on are extracted at ingest, as type, object and customer already were:
-- this adds the subscription an event concerns (both API shapes; shared::envelope), which audit
-- views read instead of parsing the body. Rows appended before this migration have no
-- subscription_id: the views derive it from their body (docs/event-log.md).
--
-- Dropping a column is a catalog change: existing rows keep their jsonb bytes on disk (dead, not
-- readable) until the table is rewritten (VACUUM FULL or pg_repack) or the rows are archived.

ALTER TABLE ledger.events ADD COLUMN subscription_id text;
COMMENT ON COLUMN ledger.events.subscription_id IS 'The subscription the event concerns: the subscription itself, an invoice''s (both API shapes), a checkout session''s. Extracted at append; NULL for rows appended before migration 0017 (the audit views derive theirs from the body). Not in the hash chain: replay verify checks it against the body.';

-- The auditors' parse of a stored body: NULL when PostgreSQL cannot hold it as jsonb (a \u0000
-- escape, invalid UTF-8), with secrets redacted (audit.redact).
CREATE FUNCTION audit.body(p_raw bytea) RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE STRICT
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
  RETURN audit.redact(convert_from(p_raw, 'UTF8')::jsonb);
EXCEPTION WHEN others THEN
  RETURN NULL;
END $$;
COMMENT ON FUNCTION audit.body(bytea) IS 'A stored body parsed as jsonb with secrets redacted; NULL when PostgreSQL cannot hold it as jsonb.';
REVOKE ALL ON FUNCTION audit.body(bytea) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION audit.body(bytea) TO ledger_auditor;

-- The subscription of a row: the stored column, or for older rows (and invoices or sessions that
-- name none) what the body says.
CREATE FUNCTION audit.subscription_of_row(p_stored text, p_object_type text, p_object_id text, p_raw bytea)
RETURNS text
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
  SELECT coalesce(p_stored, CASE p_object_type
    WHEN 'subscription' THEN p_object_id
    WHEN 'invoice' THEN audit.subscription_of(p_object_type, p_object_id, audit.body(p_raw))
    WHEN 'checkout.session' THEN audit.subscription_of(p_object_type, p_object_id, audit.body(p_raw))
  END)
$$;
REVOKE ALL ON FUNCTION audit.subscription_of_row(text, text, text, bytea) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION audit.subscription_of_row(text, text, text, bytea) TO ledger_auditor;

CREATE OR REPLACE VIEW audit.events AS
SELECT e.position, e.stripe_event_id, e.event_type, e.api_version, e.livemode, e.created, e.received_at,
       e.source, e.received_by, e.object_type, e.object_id, e.customer_id,
       audit.subscription_of_row(e.subscription_id, e.object_type, e.object_id, e.raw_body) AS subscription_id,
       convert_to(b.body::text, 'UTF8') AS raw_body,
       b.body::text COLLATE "C" AS body_text,
       b.body AS payload,
       e.stripe_signature, e.body_sha256, e.prev_hash, e.chain_hash
FROM ledger.events e
CROSS JOIN LATERAL (SELECT audit.body(e.raw_body) AS body) b;

CREATE OR REPLACE VIEW audit.customer_timeline AS
SELECT customer_id AS stripe_customer_id, position, created, received_at, event_type, stripe_event_id,
       object_type, object_id, audit.subscription_of_row(subscription_id, object_type, object_id, raw_body) AS subscription_id,
       source
FROM ledger.events
WHERE customer_id IS NOT NULL;

CREATE OR REPLACE VIEW audit.subscription_timeline AS
SELECT s.subscription_id AS stripe_subscription_id, e.position, e.created, e.received_at, e.event_type,
       e.stripe_event_id, e.object_type, e.object_id, e.customer_id AS stripe_customer_id, e.source
FROM ledger.events e
CROSS JOIN LATERAL (
  SELECT audit.subscription_of_row(e.subscription_id, e.object_type, e.object_id, e.raw_body) AS subscription_id) s
WHERE s.subscription_id IS NOT NULL;

-- The append path: no jsonb parse, the subscription column. New signatures (one more array), so
-- the three entry points are replaced and their grants given again.
DROP FUNCTION ledger.append_fetched_events(text[], text[], text[], boolean[], bigint[], text[], text[], text[], bytea[], text);
DROP FUNCTION ledger.append_webhook_events(text[], text[], text[], boolean[], bigint[], text[], text[], text[], bytea[], text[], text);
DROP FUNCTION ledger.append_events(text[], text[], text[], boolean[], bigint[], text[], text[], text[], bytea[], text[], text, text);

CREATE FUNCTION ledger.append_events(
  p_event_ids     text[],
  p_event_types   text[],
  p_api_versions  text[],
  p_livemodes     boolean[],
  p_created       bigint[],
  p_object_types  text[],
  p_object_ids    text[],
  p_customer_ids  text[],
  p_subscription_ids text[],
  p_raw_bodies    bytea[],
  p_signatures    text[],
  p_source        text,
  p_received_by   text
) RETURNS TABLE (ord integer, out_position bigint, inserted boolean)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET lock_timeout = '5s'
SET plan_cache_mode = force_custom_plan
AS $$
DECLARE
  n          integer := coalesce(cardinality(p_event_ids), 0);
  v_sha      bytea[];
  v_prev     bytea;
  v_pos      bigint;
  v_now      timestamptz;
  v_now_us   bytea;
  v_source   bytea := sha256(convert_to(p_source, 'UTF8'));
  v_by       text := coalesce(octet_length(p_received_by) || ':' || p_received_by, '-');
  v_new_k    integer[] := '{}';
  v_new_pos  bigint[] := '{}';
  v_new_prev bytea[] := '{}';
  v_new_hash bytea[] := '{}';
  v_seen     text[] := '{}';
  r          record;
  v_at       integer;
BEGIN
  IF current_setting('transaction_isolation') <> 'read committed' THEN
    RAISE EXCEPTION 'ledger.append_events must run under READ COMMITTED';
  END IF;
  IF n = 0 THEN
    RETURN;
  END IF;
  IF coalesce(cardinality(p_event_types), 0) <> n OR coalesce(cardinality(p_api_versions), 0) <> n
     OR coalesce(cardinality(p_livemodes), 0) <> n OR coalesce(cardinality(p_created), 0) <> n
     OR coalesce(cardinality(p_object_types), 0) <> n OR coalesce(cardinality(p_object_ids), 0) <> n
     OR coalesce(cardinality(p_customer_ids), 0) <> n OR coalesce(cardinality(p_raw_bodies), 0) <> n
     OR coalesce(cardinality(p_subscription_ids), 0) <> n
     OR coalesce(cardinality(p_signatures), 0) <> n THEN
    RAISE EXCEPTION 'ledger.append_events: all arrays must have % elements', n
      USING ERRCODE = 'invalid_parameter_value';
  END IF;

  SELECT array_agg(sha256(b) ORDER BY k) INTO v_sha FROM unnest(p_raw_bodies) WITH ORDINALITY AS u(b, k);

  PERFORM pg_advisory_xact_lock(hashtextextended('ledger.events/append', 0));

  SELECT e.position, e.chain_hash INTO v_pos, v_prev
  FROM ledger.events e ORDER BY e.position DESC LIMIT 1;
  v_pos := coalesce(v_pos, 0);
  v_now := clock_timestamp();
  v_now_us := int8send((extract(epoch FROM v_now) * 1000000)::bigint);

  FOR r IN
    SELECT u.k::integer AS k, u.id, u.sig, u.sha, u.event_type, u.api_version, u.livemode, u.created,
           u.object_type, u.object_id, u.customer_id, e.position AS existing
    FROM unnest(p_event_ids, p_signatures, v_sha, p_event_types, p_api_versions, p_livemodes, p_created,
                p_object_types, p_object_ids, p_customer_ids)
           WITH ORDINALITY AS u(id, sig, sha, event_type, api_version, livemode, created, object_type,
                                object_id, customer_id, k)
    LEFT JOIN ledger.events e ON e.stripe_event_id = u.id
    ORDER BY u.k
  LOOP
    IF r.existing IS NOT NULL THEN
      ord := r.k; out_position := r.existing; inserted := false;
      RETURN NEXT;
      CONTINUE;
    END IF;
    v_at := array_position(v_seen, r.id);
    IF v_at IS NOT NULL THEN
      ord := r.k; out_position := v_new_pos[v_at]; inserted := false;
      RETURN NEXT;
      CONTINUE;
    END IF;
    v_pos := v_pos + 1;
    v_new_prev := v_new_prev || v_prev;
    -- Chain format 2: format 1's six terms, then sha256 of the envelope line (every other stored
    -- column: `<octet length>:<text>` or `-` for NULL, livemode t/f, created in seconds, joined
    -- by `|`). One hash per row, built inline: measured 3 µs per row, against 13 µs for a hash
    -- per column through a helper function.
    v_prev := sha256(coalesce(v_prev, '\x'::bytea) || int8send(v_pos) || r.sha
                     || sha256(convert_to(coalesce(r.sig, ''), 'UTF8'))
                     || v_now_us || v_source
                     || sha256(convert_to(concat_ws('|',
                          coalesce(octet_length(r.id) || ':' || r.id, '-'),
                          coalesce(octet_length(r.event_type) || ':' || r.event_type, '-'),
                          coalesce(octet_length(r.api_version) || ':' || r.api_version, '-'),
                          CASE WHEN r.livemode THEN 't' ELSE 'f' END,
                          r.created::text,
                          v_by,
                          coalesce(octet_length(r.object_type) || ':' || r.object_type, '-'),
                          coalesce(octet_length(r.object_id) || ':' || r.object_id, '-'),
                          coalesce(octet_length(r.customer_id) || ':' || r.customer_id, '-')), 'UTF8')));
    v_seen := v_seen || r.id;
    v_new_k := v_new_k || r.k;
    v_new_pos := v_new_pos || v_pos;
    v_new_hash := v_new_hash || v_prev;
    ord := r.k; out_position := v_pos; inserted := true;
    RETURN NEXT;
  END LOOP;

  IF cardinality(v_new_k) > 0 THEN
    INSERT INTO ledger.events
      (position, stripe_event_id, event_type, api_version, livemode, created, received_at,
       source, received_by, object_type, object_id, customer_id, subscription_id, raw_body,
       stripe_signature, body_sha256, prev_hash, chain_hash)
    SELECT x.pos, u.id, u.event_type, u.api_version, u.livemode, to_timestamp(u.created), v_now,
           p_source, p_received_by, u.object_type, u.object_id, u.customer_id, u.subscription_id, u.raw,
           u.sig, u.sha, x.prev, x.hash
    FROM unnest(p_event_ids, p_event_types, p_api_versions, p_livemodes, p_created, p_object_types,
                p_object_ids, p_customer_ids, p_subscription_ids, p_raw_bodies, p_signatures, v_sha)
           WITH ORDINALITY AS u(id, event_type, api_version, livemode, created, object_type,
                                object_id, customer_id, subscription_id, raw, sig, sha, k)
    JOIN unnest(v_new_k, v_new_pos, v_new_prev, v_new_hash) AS x(k, pos, prev, hash) ON x.k = u.k
    ORDER BY x.pos;
    PERFORM pg_notify('ledger_events', v_pos::text);
  END IF;
END $$;


-- Ingest's only way in: signed webhooks, stored as source `webhook`.
CREATE FUNCTION ledger.append_webhook_events(
  p_event_ids     text[],
  p_event_types   text[],
  p_api_versions  text[],
  p_livemodes     boolean[],
  p_created       bigint[],
  p_object_types  text[],
  p_object_ids    text[],
  p_customer_ids  text[],
  p_subscription_ids text[],
  p_raw_bodies    bytea[],
  p_signatures    text[],
  p_received_by   text
) RETURNS TABLE (ord integer, out_position bigint, inserted boolean)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
  IF EXISTS (SELECT 1 FROM unnest(p_signatures) AS s(sig) WHERE sig IS NULL OR btrim(sig) = '') THEN
    RAISE EXCEPTION 'ledger.append_webhook_events: every webhook carries its Stripe-Signature'
      USING ERRCODE = 'invalid_parameter_value';
  END IF;
  RETURN QUERY SELECT a.ord, a.out_position, a.inserted
    FROM ledger.append_events(p_event_ids, p_event_types, p_api_versions, p_livemodes, p_created,
                              p_object_types, p_object_ids, p_customer_ids, p_subscription_ids,
                              p_raw_bodies, p_signatures, 'webhook', p_received_by) AS a;
END $$;

-- The projector's only way in: facts it fetched (docs/projector.md, "Fetched facts").
CREATE FUNCTION ledger.append_fetched_events(
  p_event_ids     text[],
  p_event_types   text[],
  p_api_versions  text[],
  p_livemodes     boolean[],
  p_created       bigint[],
  p_object_types  text[],
  p_object_ids    text[],
  p_customer_ids  text[],
  p_subscription_ids text[],
  p_raw_bodies    bytea[],
  p_received_by   text
) RETURNS TABLE (ord integer, out_position bigint, inserted boolean)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
  IF EXISTS (SELECT 1 FROM unnest(p_event_ids) AS i(id) WHERE id NOT LIKE 'evt\_fetch\_%') THEN
    RAISE EXCEPTION 'ledger.append_fetched_events: a fetched fact''s id starts with evt_fetch_'
      USING ERRCODE = 'invalid_parameter_value';
  END IF;
  RETURN QUERY SELECT a.ord, a.out_position, a.inserted
    FROM ledger.append_events(p_event_ids, p_event_types, p_api_versions, p_livemodes, p_created,
                              p_object_types, p_object_ids, p_customer_ids, p_subscription_ids, p_raw_bodies,
                              array_fill(NULL::text, ARRAY[coalesce(cardinality(p_event_ids), 0)]),
                              'fetch', p_received_by) AS a;
END $$;

REVOKE ALL ON FUNCTION ledger.append_events(text[], text[], text[], boolean[], bigint[], text[], text[], text[], text[], bytea[], text[], text, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION ledger.append_webhook_events(text[], text[], text[], boolean[], bigint[], text[], text[], text[], text[], bytea[], text[], text) FROM PUBLIC;
REVOKE ALL ON FUNCTION ledger.append_fetched_events(text[], text[], text[], boolean[], bigint[], text[], text[], text[], text[], bytea[], text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION ledger.append_events(text[], text[], text[], boolean[], bigint[], text[], text[], text[], text[], bytea[], text[], text, text) TO ledger_replay;
GRANT EXECUTE ON FUNCTION ledger.append_webhook_events(text[], text[], text[], boolean[], bigint[], text[], text[], text[], text[], bytea[], text[], text) TO ledger_ingest;
GRANT EXECUTE ON FUNCTION ledger.append_fetched_events(text[], text[], text[], boolean[], bigint[], text[], text[], text[], text[], bytea[], text) TO ledger_projector;

ALTER TABLE ledger.events DROP COLUMN payload;
