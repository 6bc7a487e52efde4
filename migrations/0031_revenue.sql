-- Issue 30, item 3: MRR and its movements, a projection of the same fold (docs/analytics.md).
-- projection.revenue holds each customer's points: one per subscription snapshot, what it adds
-- to the customer's MRR under the catalog's [analytics] policy. projection.mrr_movements holds
-- the movements those points make, in time order (keys <customer>/<n>), rewritten whole for a
-- customer whenever a point of theirs arrives: any delivery order gives the same rows.
CREATE TABLE projection.revenue (
  stripe_customer_id text    NOT NULL,
  points             jsonb   NOT NULL,
  movements          integer NOT NULL,
  CONSTRAINT revenue_pkey PRIMARY KEY (stripe_customer_id)
);
COMMENT ON TABLE projection.revenue IS 'Per customer: the revenue points of every subscription snapshot (domain::revenue::Point) and how many movements they make. Written by the fold.';

CREATE TABLE projection.mrr_movements (
  key                    text   NOT NULL,
  stripe_customer_id     text   NOT NULL,
  currency               text   NOT NULL,
  kind                   text   NOT NULL,
  amount                 bigint NOT NULL,
  mrr_after              bigint NOT NULL,
  created                bigint NOT NULL,
  day                    date,
  stripe_subscription_id text   NOT NULL,
  event_id               text   NOT NULL,
  CONSTRAINT mrr_movements_pkey PRIMARY KEY (key),
  CONSTRAINT mrr_movements_kind_known CHECK (kind IN ('new', 'expansion', 'contraction', 'churn', 'reactivation'))
);
COMMENT ON TABLE projection.mrr_movements IS 'Changes of a customer''s MRR in one currency: kind, amount (positive, minor units), the MRR after, dated by the UTC day of the Stripe event. Written by the fold.';
CREATE INDEX mrr_movements_day_idx ON projection.mrr_movements (currency, day);
CREATE INDEX mrr_movements_customer_idx ON projection.mrr_movements (stripe_customer_id, key);

GRANT SELECT, INSERT, UPDATE, DELETE ON projection.revenue, projection.mrr_movements TO ledger_projector;
GRANT SELECT ON projection.revenue, projection.mrr_movements TO ledger_replay;

CREATE VIEW audit.mrr_movements AS
SELECT day, stripe_customer_id, currency, kind, amount, mrr_after, stripe_subscription_id, event_id, created
FROM projection.mrr_movements;
GRANT SELECT ON audit.mrr_movements TO ledger_auditor;
