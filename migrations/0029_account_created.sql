-- Issue 29, item 7: the console lists customers newest first, as Stripe's dashboard does: by the
-- customer's own `created` (Stripe's, from the customer snapshot the fold applied), then id.
ALTER TABLE projection.accounts ADD COLUMN created timestamptz;
COMMENT ON COLUMN projection.accounts.created IS
  'When Stripe created the customer (the customer object''s created); NULL while only known from references. Written by the fold.';
-- Keyset pages walk it backwards; customers without a known `created` come last.
CREATE INDEX accounts_created_idx ON projection.accounts ((coalesce(created, '-infinity')), stripe_customer_id);

-- Rows folded before this migration: the customer objects in the log say it (the fold keeps the
-- first snapshot's value that has one; a customer's `created` never changes). A rebuild writes the
-- same values.
UPDATE projection.accounts a SET created = to_timestamp(c.created)
FROM (SELECT DISTINCT ON (object_id) object_id,
             (convert_from(raw_body, 'UTF8')::jsonb #>> '{data,object,created}')::bigint AS created
      FROM ledger.events
      WHERE object_type = 'customer'
        -- jsonb refuses the escaped NUL; such a body (rare, allowed) waits for a rebuild.
        AND position(convert_to('\u0000', 'UTF8') IN raw_body) = 0
        AND jsonb_typeof(convert_from(raw_body, 'UTF8')::jsonb #> '{data,object,created}') = 'number'
      ORDER BY object_id, position DESC) c
WHERE c.object_id = a.stripe_customer_id;
