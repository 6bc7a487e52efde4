-- Issue 14: the live projector loads per batch only the rows its events read (docs/projector.md,
-- "Per-batch loading"). One of those reads is every anomaly whose key starts with a prefix (the
-- `invoice_without_known_price:<invoice>:` rows of an invoice): a range of keys in code point
-- order, which is byte order, which is the "C" collation whatever the database's default is.
CREATE INDEX anomalies_key_c_idx ON projection.anomalies ((key COLLATE "C"));
