-- The contract's projection.mrr_movements(..., position, ...): each movement names the log
-- position of the event that made it (the subscription snapshot, or the discount event that
-- re-priced it), so an auditor goes from a movement to its fact in one step (`replay export`,
-- audit.events). The fold keeps the position in each revenue point (domain::revenue::Point); rows
-- folded before this migration get theirs from the log here, by event id, so no rebuild is needed.
ALTER TABLE projection.mrr_movements ADD COLUMN "position" bigint NOT NULL DEFAULT 0;
ALTER TABLE projection.mrr_movements ALTER COLUMN "position" DROP DEFAULT;

UPDATE projection.mrr_movements m SET "position" = e."position"
FROM ledger.events e WHERE e.stripe_event_id = m.event_id;

UPDATE projection.revenue r SET
  points = coalesce((
    SELECT jsonb_agg(p.value || jsonb_build_object('position', coalesce(e."position", 0)) ORDER BY p.i)
    FROM jsonb_array_elements(r.points) WITH ORDINALITY AS p (value, i)
    LEFT JOIN ledger.events e ON e.stripe_event_id = p.value->>'event_id'), r.points),
  discounts = coalesce((
    SELECT jsonb_agg(d.value || jsonb_build_object('position', coalesce(e."position", 0)) ORDER BY d.i)
    FROM jsonb_array_elements(r.discounts) WITH ORDINALITY AS d (value, i)
    LEFT JOIN ledger.events e ON e.stripe_event_id = d.value->>'event_id'), r.discounts);

DROP VIEW audit.mrr_movements;
CREATE VIEW audit.mrr_movements AS
SELECT day, stripe_customer_id, currency, kind, amount, mrr_after, "position", stripe_subscription_id, event_id,
       created
FROM projection.mrr_movements;
GRANT SELECT ON audit.mrr_movements TO ledger_auditor;
