-- One rule per fact (issue 28): whether a subscription is live, and until when it entitles its
-- customer, are decided once, by the fold (`SubscriptionRow::is_live`, `entitled_until` in
-- projector/src/fold.rs), and written here for every SQL reader: access checks, quotas, checkout,
-- the dispatcher's tokens and instances read these columns and never restate the statuses.
ALTER TABLE projection.subscriptions
  ADD COLUMN live boolean NOT NULL DEFAULT false,
  ADD COLUMN entitled_until timestamptz;
COMMENT ON COLUMN projection.subscriptions.live IS
  'Stripe still bills it (trialing, active, past_due) and it was not deleted: a second tier checkout would duplicate it. Written by the fold.';
COMMENT ON COLUMN projection.subscriptions.entitled_until IS
  'Until when it entitles its customer to its tier: live, on a known tier, up to its grace deadline after a failed payment (else 9999-12-31); NULL: not at all. Entitled at t: entitled_until > t. Written by the fold.';

-- Rows folded before this migration: the fold's rule, stated this once for them (a rebuild
-- writes the same values).
UPDATE projection.subscriptions
SET live = NOT deleted AND status IN ('trialing', 'active', 'past_due'),
    entitled_until = CASE
      WHEN NOT deleted AND tier <> 'unknown' AND status IN ('trialing', 'active', 'past_due')
        THEN COALESCE(grace_until, to_timestamp(253402300799))
    END;
-- Readers look a customer's few subscriptions up through subscriptions_customer_idx: no index here.
