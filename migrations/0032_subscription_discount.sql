-- Issue 30, item 2: a subscription's discount as its applied snapshot carries it (expanded:
-- `discount` before API version basil, the first expanded entry of `discounts` after), so
-- GET /v1/customers/{id} shows it. Rows folded before this migration have none until their next
-- snapshot or a rebuild.
ALTER TABLE projection.subscriptions
  ADD COLUMN discount boolean NOT NULL DEFAULT false,
  ADD COLUMN discount_percent_off integer,
  ADD COLUMN discount_amount_off bigint,
  ADD COLUMN discount_currency text,
  ADD COLUMN discount_end timestamptz;
COMMENT ON COLUMN projection.subscriptions.discount IS 'The applied snapshot carries a discount (its coupon in the discount_* columns). Written by the fold.';
COMMENT ON COLUMN projection.subscriptions.discount_percent_off IS 'Percent off in hundredths of a percent (20 % is 2000).';
COMMENT ON COLUMN projection.subscriptions.discount_end IS 'When the discount stops applying; NULL: forever.';
