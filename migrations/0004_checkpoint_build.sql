-- Which build the projections are: 'live' until `replay rebuild` swaps in a rebuilt schema, then
-- that rebuild's id. A live projector whose working copy belongs to another build reloads it, even
-- when the positions happen to match.
ALTER TABLE projection.checkpoint ADD COLUMN build_id text NOT NULL DEFAULT 'live';
COMMENT ON COLUMN projection.checkpoint.build_id IS '''live'' or the id of the rebuild that produced these tables.';
