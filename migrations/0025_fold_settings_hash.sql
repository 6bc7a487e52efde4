-- The fold's settings that shape the projections (STRIPE_LIVEMODE, GRACE_PERIOD_DAYS), recorded
-- beside the catalog's hash (issue 29): a projector or replica configured otherwise says
-- "rebuild needed" in /readyz and the console instead of folding new events by other rules than
-- the rows it has. Written when the checkpoint is created and by each rebuild; '' (rows of
-- before this migration) is adopted by the next runner as its own settings.
ALTER TABLE projection.checkpoint ADD COLUMN fold_settings_hash text NOT NULL DEFAULT '';
COMMENT ON COLUMN projection.checkpoint.fold_settings_hash IS
  'SHA-256 of the fold settings the rows were built with (FoldConfig::hash); '''' until a runner records it.';
