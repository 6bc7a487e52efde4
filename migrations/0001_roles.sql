-- Application roles. They are NOLOGIN group roles: a deployment creates its own login users and
-- makes them members (`GRANT ledger_ingest TO ingest_svc`), so passwords never live in migrations.
--   ledger_ingest    may only append to the event log, through ledger.append_events().
--   ledger_projector reads the log and (later migrations) writes the projection schema.
--   ledger_auditor   reads the read-only `audit` views (later migrations), nothing else.
-- Roles are cluster-wide while migrations are per database: another database of the same cluster,
-- or a concurrent migrator, may have created them already, so "already exists" is not an error.
DO $$
DECLARE
  r text;
BEGIN
  FOREACH r IN ARRAY ARRAY['ledger_ingest', 'ledger_projector', 'ledger_auditor'] LOOP
    BEGIN
      EXECUTE format('CREATE ROLE %I NOLOGIN', r);
    EXCEPTION WHEN duplicate_object OR unique_violation THEN
      NULL;
    END;
  END LOOP;
END $$;
