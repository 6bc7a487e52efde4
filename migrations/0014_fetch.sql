-- Fetched facts (docs/projector.md, "Fetched facts"; issue 17): when an event leaves out a part
-- the fold needs (a Checkout Session's line items, an invoice's lines beyond the first page), the
-- fold journals a `fetch` intent; the projector's dispatcher fetches the part from Stripe and
-- appends the completed object as an event of source `fetch`, through an entry point of its own:
-- the projector role can append nothing else, the ingest role cannot append these.
ALTER TABLE ledger.events DROP CONSTRAINT events_source_known;
ALTER TABLE ledger.events ADD CONSTRAINT events_source_known
  CHECK (source IN ('webhook', 'backfill', 'reconcile', 'fetch'));
COMMENT ON COLUMN ledger.events.source IS 'webhook (signed delivery), backfill (copied from GET /v1/events), reconcile (a snapshot of the object fetched by replay reconcile --apply) or fetch (a part an event left out, fetched by the projector: the body''s `fetched` member says what and when).';

ALTER TABLE ledger.intents DROP CONSTRAINT intents_kind_known;
ALTER TABLE ledger.intents ADD CONSTRAINT intents_kind_known CHECK (kind IN ('instance', 'token', 'email', 'fetch'));
ALTER TABLE ledger.effects DROP CONSTRAINT effects_kind_known;
ALTER TABLE ledger.effects ADD CONSTRAINT effects_kind_known
  CHECK (kind IN ('provision', 'update', 'deprovision', 'token', 'email', 'alert', 'fetch'));

CREATE FUNCTION ledger.append_fetched_events(
  p_event_ids     text[],
  p_event_types   text[],
  p_api_versions  text[],
  p_livemodes     boolean[],
  p_created       bigint[],
  p_object_types  text[],
  p_object_ids    text[],
  p_customer_ids  text[],
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
                              p_object_types, p_object_ids, p_customer_ids, p_raw_bodies,
                              array_fill(NULL::text, ARRAY[coalesce(cardinality(p_event_ids), 0)]),
                              'fetch', p_received_by) AS a;
END $$;
REVOKE ALL ON FUNCTION ledger.append_fetched_events(text[], text[], text[], boolean[], bigint[], text[], text[], text[], bytea[], text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION ledger.append_fetched_events(text[], text[], text[], boolean[], bigint[], text[], text[], text[], bytea[], text) TO ledger_projector;
