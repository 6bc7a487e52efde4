-- Issue 30, item 1: what each price charges, from Stripe's own facts (price and plan events, and
-- the prices embedded in subscription items), never typed by hand in our files. The newest
-- snapshot of a price wins (version: the event's created, a price event above an embedded copy
-- of the same second, then position). The pricing page (`GET /v1/catalog`) and revenue read it.
CREATE TABLE projection.prices (
  price_id         text    NOT NULL,
  product          text,
  unit_amount      bigint,
  currency         text,
  interval         text,
  interval_count   integer,
  usage_type       text,
  active           boolean NOT NULL,
  version_created  bigint,
  version_rank     smallint,
  version_position bigint,
  CONSTRAINT prices_pkey PRIMARY KEY (price_id)
);
COMMENT ON TABLE projection.prices IS 'What each price charges, as Stripe''s newest price (or plan) object says. Written by the fold.';
COMMENT ON COLUMN projection.prices.unit_amount IS 'Per unit, in the currency''s minor unit (a plan''s amount); NULL for tiered prices.';
COMMENT ON COLUMN projection.prices.interval IS 'day, week, month or year; NULL for a one-time price.';
COMMENT ON COLUMN projection.prices.active IS 'Sellable in Stripe: false once archived or deleted.';
GRANT SELECT, INSERT, UPDATE, DELETE ON projection.prices TO ledger_projector;
GRANT SELECT ON projection.prices TO ledger_replay;

CREATE VIEW audit.prices AS
SELECT price_id, product, unit_amount, currency, interval, interval_count, usage_type, active FROM projection.prices;
GRANT SELECT ON audit.prices TO ledger_auditor;
