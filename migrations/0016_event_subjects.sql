-- A fetch for a thin event whose object is an invoice or a Checkout Session has no subscription
-- or customer to name until it is fetched: its subject is the event (`subject_type` 'event').
ALTER TABLE ledger.intents DROP CONSTRAINT intents_subject_type_known,
  ADD CONSTRAINT intents_subject_type_known CHECK (subject_type IN ('subscription', 'customer', 'event'));
ALTER TABLE ledger.effects DROP CONSTRAINT effects_subject_type_known,
  ADD CONSTRAINT effects_subject_type_known CHECK (subject_type IN ('subscription', 'customer', 'event'));
ALTER TABLE ledger.alerts DROP CONSTRAINT alerts_subject_type_known,
  ADD CONSTRAINT alerts_subject_type_known CHECK (subject_type IN ('subscription', 'customer', 'event'));
