-- Issue 30, item 2: discounts as rows of their own, folded from customer.discount.* events and
-- from the discounts subscription snapshots carry expanded (a snapshot naming only ids is
-- resolved when a discount event states them). The newest snapshot wins (version: the event's
-- created, a discount event above a copy a subscription carries, a deletion above both, then
-- position); a deletion is final. Revenue re-prices a customer's subscriptions from each discount
-- event's moment (projection.revenue.discounts, docs/analytics.md).
CREATE TABLE projection.discounts (
  discount_id            text    NOT NULL,
  coupon                 text,
  percent_off            integer,
  amount_off             bigint,
  currency               text,
  duration               text,
  duration_in_months     integer,
  promotion_code         text,
  start_at               timestamptz,
  end_at                 timestamptz,
  stripe_customer_id     text,
  stripe_subscription_id text,
  deleted                boolean NOT NULL,
  version_created        bigint,
  version_rank           smallint,
  version_position       bigint,
  CONSTRAINT discounts_pkey PRIMARY KEY (discount_id)
);
COMMENT ON TABLE projection.discounts IS 'Each discount (a coupon applied to a customer or a subscription) as its newest snapshot says. Written by the fold.';
COMMENT ON COLUMN projection.discounts.percent_off IS 'Percent off in hundredths of a percent (20 % is 2000).';
COMMENT ON COLUMN projection.discounts.amount_off IS 'Per invoice, in currency''s minor unit.';
COMMENT ON COLUMN projection.discounts.stripe_subscription_id IS 'The subscription it applies to; NULL: every subscription of the customer without its own.';
COMMENT ON COLUMN projection.discounts.deleted IS 'A customer.discount.deleted was seen: it no longer applies.';
CREATE INDEX discounts_customer_idx ON projection.discounts (stripe_customer_id);
CREATE INDEX discounts_subscription_idx ON projection.discounts (stripe_subscription_id);
GRANT SELECT, INSERT, UPDATE, DELETE ON projection.discounts TO ledger_projector;
GRANT SELECT ON projection.discounts TO ledger_replay;

ALTER TABLE projection.revenue ADD COLUMN discounts jsonb NOT NULL DEFAULT '[]';
COMMENT ON COLUMN projection.revenue.discounts IS 'The customer''s discount points (domain::revenue::DiscountPoint), one per customer.discount.* event.';

CREATE VIEW audit.discounts AS
SELECT discount_id, coupon, percent_off, amount_off, currency, duration, duration_in_months, promotion_code,
       start_at, end_at, stripe_customer_id, stripe_subscription_id, deleted
FROM projection.discounts;
GRANT SELECT ON audit.discounts TO ledger_auditor;
