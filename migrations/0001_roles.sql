-- Application roles. They are NOLOGIN group roles: a deployment creates its own login users and
-- makes them members (`GRANT ledger_ingest TO ingest_svc`), so passwords never live in migrations.
--   ledger_ingest    may only append to the event log, through ledger.append_events().
--   ledger_projector reads the log and (later migrations) writes the projection schema.
--   ledger_auditor   reads the read-only `audit` views (later migrations), nothing else.
-- Roles and their settings are cluster-wide while migrations are per database: another database of
-- the same cluster, or a concurrent migrator, may be doing the same thing right now. So every
-- statement here tolerates "already done by someone else", and checks that it is done.
DO $$
DECLARE
  r text;
BEGIN
  FOREACH r IN ARRAY ARRAY['ledger_ingest', 'ledger_projector', 'ledger_auditor'] LOOP
    BEGIN
      IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) THEN
        EXECUTE format('CREATE ROLE %I NOLOGIN', r);
      END IF;
    EXCEPTION WHEN others THEN
      IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) THEN
        RAISE;
      END IF;
    END;
  END LOOP;

  -- A stuck appender must not hold the global append lock: ingest sessions never idle in a
  -- transaction for long. (Concurrent ALTER ROLE ... SET fails with "tuple concurrently updated".)
  BEGIN
    ALTER ROLE ledger_ingest SET idle_in_transaction_session_timeout = '10s';
  EXCEPTION WHEN others THEN
    IF NOT EXISTS (
      SELECT 1 FROM pg_db_role_setting s JOIN pg_roles ro ON ro.oid = s.setrole
      WHERE ro.rolname = 'ledger_ingest' AND s.setdatabase = 0
        AND 'idle_in_transaction_session_timeout=10s' = ANY (s.setconfig)
    ) THEN
      RAISE;
    END IF;
  END;
END $$;
