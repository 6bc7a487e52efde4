-- The append-only event log: one row per Stripe event id, the exact bytes Stripe signed, in one
-- global order that never changes. See docs/event-log.md for why it looks like this.
CREATE SCHEMA ledger;
COMMENT ON SCHEMA ledger IS 'System of record: the Stripe event log (append-only) and, later, the effects journal.';

CREATE TABLE ledger.events (
  position         bigint      NOT NULL,
  stripe_event_id  text        NOT NULL,
  event_type       text        NOT NULL,
  api_version      text,
  livemode         boolean     NOT NULL,
  created          timestamptz NOT NULL,
  received_at      timestamptz NOT NULL,
  source           text        NOT NULL,
  received_by      text        NOT NULL,
  object_type      text,
  object_id        text,
  customer_id      text,
  raw_body         bytea       COMPRESSION lz4 NOT NULL,
  stripe_signature text,
  body_sha256      bytea       NOT NULL,
  payload          jsonb       COMPRESSION lz4,
  prev_hash        bytea,
  chain_hash       bytea       NOT NULL,
  CONSTRAINT events_pkey PRIMARY KEY (position),
  CONSTRAINT events_stripe_event_id_key UNIQUE (stripe_event_id),
  CONSTRAINT events_position_positive CHECK (position > 0),
  CONSTRAINT events_source_known CHECK (source IN ('webhook', 'backfill')),
  CONSTRAINT events_webhook_has_signature CHECK (source <> 'webhook' OR stripe_signature IS NOT NULL),
  CONSTRAINT events_body_sha256_is_sha256 CHECK (octet_length(body_sha256) = 32),
  CONSTRAINT events_chain_hash_is_sha256 CHECK (octet_length(chain_hash) = 32),
  CONSTRAINT events_prev_hash_only_first CHECK ((position = 1) = (prev_hash IS NULL))
);
COMMENT ON TABLE ledger.events IS 'Every Stripe event ever accepted, byte-exact, in commit order. Append-only: UPDATE, DELETE and TRUNCATE are rejected by triggers for every role.';
COMMENT ON COLUMN ledger.events.position IS 'Dense global order (1, 2, 3, ...), assigned under one advisory lock held to COMMIT, so positions become visible in order and a reader of position > checkpoint never skips a late commit.';
COMMENT ON COLUMN ledger.events.stripe_event_id IS 'Stripe''s evt_ id: the identity of an event. A redelivery or a backfill copy of a stored id adds no row.';
COMMENT ON COLUMN ledger.events.created IS 'Stripe''s `created` of the event (whole seconds): the order of facts within one object.';
COMMENT ON COLUMN ledger.events.received_at IS 'When this row was appended (database clock), part of the hash chain.';
COMMENT ON COLUMN ledger.events.source IS 'webhook (signed delivery) or backfill (copied from GET /v1/events).';
COMMENT ON COLUMN ledger.events.received_by IS 'Which ingest or backfill process appended the row.';
COMMENT ON COLUMN ledger.events.object_type IS 'data.object.object, e.g. subscription.';
COMMENT ON COLUMN ledger.events.object_id IS 'data.object.id.';
COMMENT ON COLUMN ledger.events.customer_id IS 'The Stripe customer the event concerns: data.object.id for customers, else data.object.customer.';
COMMENT ON COLUMN ledger.events.raw_body IS 'The exact request body bytes Stripe signed. Never re-serialized.';
COMMENT ON COLUMN ledger.events.stripe_signature IS 'The Stripe-Signature header as received (NULL for backfilled events, which are not signed).';
COMMENT ON COLUMN ledger.events.body_sha256 IS 'sha256(raw_body), computed by the database.';
COMMENT ON COLUMN ledger.events.payload IS 'raw_body parsed as jsonb, for queries only (jsonb drops key order and whitespace). NULL in the rare case PostgreSQL cannot represent the JSON, e.g. a \u0000 escape; raw_body is still exact.';
COMMENT ON COLUMN ledger.events.prev_hash IS 'chain_hash of position - 1 (NULL only for position 1).';
COMMENT ON COLUMN ledger.events.chain_hash IS 'sha256(prev_hash || int8send(position) || body_sha256 || sha256(stripe_signature) || int8send(received_at in µs) || sha256(source)): tampering by the table owner breaks the chain.';

-- What auditors and operators look up: by type, by object, by customer, by Stripe time.
CREATE INDEX events_event_type_idx ON ledger.events (event_type, position);
CREATE INDEX events_object_id_idx ON ledger.events (object_id, position) WHERE object_id IS NOT NULL;
CREATE INDEX events_customer_id_idx ON ledger.events (customer_id, position) WHERE customer_id IS NOT NULL;
CREATE INDEX events_created_idx ON ledger.events (created);

-- Append-only for everyone, the owner and superusers included. Row-level UPDATE/DELETE triggers
-- (a statement-level DELETE trigger does not see TRUNCATE, hence the third one). ENABLE ALWAYS keeps
-- them firing under session_replication_role = replica. Only ALTER TABLE ... DISABLE TRIGGER by the
-- owner gets past them, and the hash chain makes what it then does detectable.
CREATE FUNCTION ledger.forbid_mutation() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION 'ledger.% is append-only: % rejected', TG_TABLE_NAME, TG_OP
    USING ERRCODE = 'insufficient_privilege';
END $$;

CREATE TRIGGER events_no_update_delete BEFORE UPDATE OR DELETE ON ledger.events
  FOR EACH ROW EXECUTE FUNCTION ledger.forbid_mutation();
CREATE TRIGGER events_no_truncate BEFORE TRUNCATE ON ledger.events
  FOR EACH STATEMENT EXECUTE FUNCTION ledger.forbid_mutation();
ALTER TABLE ledger.events ENABLE ALWAYS TRIGGER events_no_update_delete;
ALTER TABLE ledger.events ENABLE ALWAYS TRIGGER events_no_truncate;

-- jsonb cannot hold some valid JSON (a \u0000 escape); such a body is still stored, without payload.
CREATE FUNCTION ledger.try_parse_jsonb(p_raw bytea) RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE STRICT
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
  RETURN convert_from(p_raw, 'UTF8')::jsonb;
EXCEPTION WHEN others THEN
  RETURN NULL;
END $$;

-- The one way into the log: a group commit of many events in one call (one round trip, one lock,
-- one fsync). Returns one row per input element, in input order: the position the event has and
-- whether this call inserted it (false: the id was already stored, or repeated in the batch).
-- Must run under READ COMMITTED in autocommit so that every statement after the lock takes a new
-- snapshot and sees the previous lock holder's commit.
CREATE FUNCTION ledger.append_events(
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
-- Plan each call for the table as it is now: a generic plan cached while the log was small
-- looked up existing ids with a sequential scan per batch, forever (measured: 6.6k -> 3k events/s
-- as the table grew to 80k rows).
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

  -- Parse and hash before taking the lock: this work is not serialized. Arrays are always read
  -- with (multi-argument) unnest, never subscripted in SQL: subscripting an array of
  -- variable-length values walks it from the start, which is quadratic in the batch size.
  BEGIN
    SELECT array_agg(convert_from(b, 'UTF8')::jsonb ORDER BY k), array_agg(sha256(b) ORDER BY k)
      INTO v_payloads, v_sha
      FROM unnest(p_raw_bodies) WITH ORDINALITY AS u(b, k);
  EXCEPTION WHEN others THEN
    SELECT array_agg(ledger.try_parse_jsonb(b) ORDER BY k), array_agg(sha256(b) ORDER BY k)
      INTO v_payloads, v_sha
      FROM unnest(p_raw_bodies) WITH ORDINALITY AS u(b, k);
  END;

  -- One global append lock, held until COMMIT: positions are handed out in commit order.
  PERFORM pg_advisory_xact_lock(hashtextextended('ledger.events/append', 0));

  -- A new statement, so a new snapshot: the previous lock holder's rows are visible.
  SELECT e.position, e.chain_hash INTO v_pos, v_prev
  FROM ledger.events e ORDER BY e.position DESC LIMIT 1;
  v_pos := coalesce(v_pos, 0);
  v_now := clock_timestamp();
  v_now_us := int8send((extract(epoch FROM v_now) * 1000000)::bigint);

  FOR r IN
    SELECT u.k::integer AS k, u.id, u.sig, u.sha, e.position AS existing
    FROM unnest(p_event_ids, p_signatures, v_sha) WITH ORDINALITY AS u(id, sig, sha, k)
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
    v_prev := sha256(coalesce(v_prev, '\x'::bytea) || int8send(v_pos) || r.sha
                     || sha256(convert_to(coalesce(r.sig, ''), 'UTF8'))
                     || v_now_us || v_source);
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
    -- A wake-up hint for followers; delivered at COMMIT. Readers poll as well.
    PERFORM pg_notify('ledger_events', v_pos::text);
  END IF;
END $$;

REVOKE ALL ON FUNCTION ledger.append_events(text[], text[], text[], boolean[], bigint[], text[], text[], text[], bytea[], text[], text, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION ledger.try_parse_jsonb(bytea) FROM PUBLIC;
GRANT USAGE ON SCHEMA ledger TO ledger_ingest, ledger_projector;
GRANT EXECUTE ON FUNCTION ledger.append_events(text[], text[], text[], boolean[], bigint[], text[], text[], text[], bytea[], text[], text, text) TO ledger_ingest;
GRANT SELECT ON ledger.events TO ledger_projector;
