-- Least privilege that starts: with MIGRATE_ON_START=false a binary checks, at start-up, that every
-- migration it knows is applied, by reading sqlx's bookkeeping table. The application roles may
-- read it (versions, descriptions and checksums of the migrations: nothing secret), never write it.
-- Session settings such as idle_in_transaction_session_timeout are set by the binaries on their
-- own connections (an `ALTER ROLE ... SET` on a NOLOGIN group role never reaches its members).
-- (The table exists whenever sqlx applies this; scripts/sqlx-prepare applies migrations with psql.)
DO $$
BEGIN
  IF to_regclass('_sqlx_migrations') IS NOT NULL THEN
    GRANT SELECT ON TABLE _sqlx_migrations TO ledger_ingest, ledger_projector, ledger_auditor;
  END IF;
END $$;
