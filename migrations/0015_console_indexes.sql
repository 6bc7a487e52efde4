-- The operator console (docs/console.md) on a log of millions of events:
-- - what an event raised is found by its position (ledger.intents had only its key and its
--   subject indexed: a customer's timeline scanned every intent for each event);
-- - the overview's last 24 hours by type and hour read the index alone: (created, event_type)
--   replaces the index on created, so the log keeps the same number of indexes to maintain.
CREATE INDEX intents_position_idx ON ledger.intents (position);
CREATE INDEX events_created_type_idx ON ledger.events (created, event_type);
DROP INDEX ledger.events_created_idx;
-- The console finds a customer by email, case-insensitively (rebuilds copy the index: LIKE ...
-- INCLUDING ALL).
CREATE INDEX accounts_email_idx ON projection.accounts (lower(email));
