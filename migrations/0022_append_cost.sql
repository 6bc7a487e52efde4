-- Issue 14: the append path's fixed costs (docs/event-log.md, "What an append costs").
--
-- 1. Bodies stay in the row. A Stripe body (3-4 KB, ~1.7 KB once lz4-compressed) plus the other
--    columns just passed TOAST's 2 KB target, so every body went out of line: a second heap
--    insert, a new TOAST value id checked against the TOAST index, a TOAST index insert and their
--    WAL, per event, and a TOAST index lookup per body read. STORAGE MAIN keeps the lz4
--    compression and keeps the value in the row unless the row still exceeds a page. The other
--    variable-length columns must not leave the row in its place (TOAST moves EXTENDED columns
--    out before it compresses MAIN ones): the hashes are PLAIN (32 bytes, checked), the texts
--    MAIN. Existing rows are not rewritten (a catalog change); reads are the same for both.
ALTER TABLE ledger.events
  ALTER COLUMN raw_body SET STORAGE MAIN,
  ALTER COLUMN body_sha256 SET STORAGE PLAIN,
  ALTER COLUMN prev_hash SET STORAGE PLAIN,
  ALTER COLUMN chain_hash SET STORAGE PLAIN,
  ALTER COLUMN stripe_event_id SET STORAGE MAIN,
  ALTER COLUMN event_type SET STORAGE MAIN,
  ALTER COLUMN api_version SET STORAGE MAIN,
  ALTER COLUMN source SET STORAGE MAIN,
  ALTER COLUMN received_by SET STORAGE MAIN,
  ALTER COLUMN object_type SET STORAGE MAIN,
  ALTER COLUMN object_id SET STORAGE MAIN,
  ALTER COLUMN customer_id SET STORAGE MAIN,
  ALTER COLUMN subscription_id SET STORAGE MAIN,
  ALTER COLUMN stripe_signature SET STORAGE MAIN;

-- 2. No planner statistics on the bodies: nothing filters on them, and ANALYZE decompressed a
--    sample of them every time autovacuum analyzed this fast-growing table.
ALTER TABLE ledger.events ALTER COLUMN raw_body SET STATISTICS 0;

-- 3. Plan the append function's statements once per connection instead of on every call
--    (measured: ~230 µs of planning per call, the largest fixed cost of a group commit). 0002 chose
--    a custom plan per call because a generic plan made while the log was small looked existing
--    ids up with a sequential scan, and kept doing so as the log grew. A sequential scan is never
--    the right way into this log, so the function forbids it: its generic plans use the indexes
--    whatever the table's size was when they were made (tested: appends never scan the log).
ALTER FUNCTION ledger.append_events(text[], text[], text[], boolean[], bigint[], text[], text[], text[], text[], bytea[], text[], text, text)
  SET plan_cache_mode = force_generic_plan;
ALTER FUNCTION ledger.append_events(text[], text[], text[], boolean[], bigint[], text[], text[], text[], text[], bytea[], text[], text, text)
  SET enable_seqscan = off;
