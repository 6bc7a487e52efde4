-- A log the ingest role cannot forge, and a chain that covers every stored column
-- (docs/event-log.md, docs/security.md).
--
-- 1. Two entry points. ledger_ingest may only call ledger.append_webhook_events(), which stores
--    source `webhook` and refuses a row without a Stripe-Signature (which `replay verify
--    --signatures` then checks). Unsigned rows (`backfill`, copied from Stripe's API) can only be
--    appended through ledger.append_events(), by the owner or a user granted ledger_replay.
-- 2. Chain format 2, from the position recorded in ledger.chain_formats: each row's hash also covers
--    stripe_event_id, event_type, api_version, livemode, created, received_by, object_type,
--    object_id and customer_id (docs/event-log.md gives the formula), so an owner who rewrites a column the audit queries filter on
--    breaks the chain. Rows before that position keep format 1 and keep verifying. (payload is
--    not hashed: it is raw_body parsed, and verify checks exactly that.)

DO $$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'ledger_replay') THEN
    CREATE ROLE ledger_replay NOLOGIN;
  END IF;
EXCEPTION WHEN others THEN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'ledger_replay') THEN
    RAISE;
  END IF;
END $$;

CREATE TABLE ledger.chain_formats (
  version       smallint NOT NULL,
  from_position bigint   NOT NULL,
  CONSTRAINT chain_formats_pkey PRIMARY KEY (version),
  CONSTRAINT chain_formats_from_position_positive CHECK (from_position > 0)
);
COMMENT ON TABLE ledger.chain_formats IS 'Which hash-chain format rows use, by first position (format 1 before the first row here). Append-only; changing it breaks verification of the rows it covers.';
CREATE TRIGGER chain_formats_no_update_delete BEFORE UPDATE OR DELETE ON ledger.chain_formats
  FOR EACH ROW EXECUTE FUNCTION ledger.forbid_mutation();
CREATE TRIGGER chain_formats_no_truncate BEFORE TRUNCATE ON ledger.chain_formats
  FOR EACH STATEMENT EXECUTE FUNCTION ledger.forbid_mutation();
ALTER TABLE ledger.chain_formats ENABLE ALWAYS TRIGGER chain_formats_no_update_delete;
ALTER TABLE ledger.chain_formats ENABLE ALWAYS TRIGGER chain_formats_no_truncate;

-- No append may interleave with the switch: format 2 starts at the next position.
SELECT pg_advisory_xact_lock(hashtextextended('ledger.events/append', 0));
INSERT INTO ledger.chain_formats (version, from_position)
SELECT 2, coalesce(max(position), 0) + 1 FROM ledger.events;

CREATE OR REPLACE FUNCTION ledger.append_events(
  p_event_ids     text[],
  p_event_types   text[],
  p_api_versions  text[],
  p_livemodes     boolean[],
  p_created       bigint[],
  p_object_types  text[],
  p_object_ids    text[],
  p_customer_ids  text[],
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
  v_payloads jsonb[];
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
     OR coalesce(cardinality(p_signatures), 0) <> n THEN
    RAISE EXCEPTION 'ledger.append_events: all arrays must have % elements', n
      USING ERRCODE = 'invalid_parameter_value';
  END IF;

  BEGIN
    SELECT array_agg(convert_from(b, 'UTF8')::jsonb ORDER BY k), array_agg(sha256(b) ORDER BY k)
      INTO v_payloads, v_sha
      FROM unnest(p_raw_bodies) WITH ORDINALITY AS u(b, k);
  EXCEPTION WHEN others THEN
    SELECT array_agg(ledger.try_parse_jsonb(b) ORDER BY k), array_agg(sha256(b) ORDER BY k)
      INTO v_payloads, v_sha
      FROM unnest(p_raw_bodies) WITH ORDINALITY AS u(b, k);
  END;

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
       source, received_by, object_type, object_id, customer_id, raw_body, stripe_signature,
       body_sha256, payload, prev_hash, chain_hash)
    SELECT x.pos, u.id, u.event_type, u.api_version, u.livemode, to_timestamp(u.created), v_now,
           p_source, p_received_by, u.object_type, u.object_id, u.customer_id, u.raw, u.sig,
           u.sha, u.payload, x.prev, x.hash
    FROM unnest(p_event_ids, p_event_types, p_api_versions, p_livemodes, p_created, p_object_types,
                p_object_ids, p_customer_ids, p_raw_bodies, p_signatures, v_sha, v_payloads)
           WITH ORDINALITY AS u(id, event_type, api_version, livemode, created, object_type,
                                object_id, customer_id, raw, sig, sha, payload, k)
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
                              p_object_types, p_object_ids, p_customer_ids, p_raw_bodies, p_signatures,
                              'webhook', p_received_by) AS a;
END $$;

REVOKE ALL ON FUNCTION ledger.append_webhook_events(text[], text[], text[], boolean[], bigint[], text[], text[], text[], bytea[], text[], text) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION ledger.append_events(text[], text[], text[], boolean[], bigint[], text[], text[], text[], bytea[], text[], text, text) FROM ledger_ingest;
GRANT EXECUTE ON FUNCTION ledger.append_webhook_events(text[], text[], text[], boolean[], bigint[], text[], text[], text[], bytea[], text[], text) TO ledger_ingest;

-- The replay tool's role: appends unsigned rows (backfill), keeps its runs, reads the log.
GRANT USAGE ON SCHEMA ledger TO ledger_replay;
GRANT EXECUTE ON FUNCTION ledger.append_events(text[], text[], text[], boolean[], bigint[], text[], text[], text[], bytea[], text[], text, text) TO ledger_replay;
GRANT SELECT ON ledger.events, ledger.chain_formats TO ledger_replay, ledger_projector;
GRANT SELECT, INSERT, UPDATE ON ledger.backfill_runs TO ledger_replay;
GRANT USAGE ON ALL SEQUENCES IN SCHEMA ledger TO ledger_replay;
GRANT EXECUTE ON FUNCTION ledger.try_parse_jsonb(bytea) TO ledger_replay, ledger_projector;
