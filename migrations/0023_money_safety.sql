-- Money safety (docs/billing-api.md, docs/security.md).
--
-- Checkouts by email compare the email case-insensitively (the open-session check and the
-- per-email rate limit: `Ada@x` and `ada@x` are one buyer), so their index is on lower(email).
DROP INDEX ledger.commands_email_idx;
CREATE INDEX commands_email_lower_idx ON ledger.commands (lower(request->>'email'), endpoint, at)
  WHERE customer IS NULL;
COMMENT ON COLUMN ledger.commands.endpoint IS
  'Method and path as requested, ids included (POST /v1/subscriptions/sub_1/cancel); with the request body, the idempotency fingerprint.';
COMMENT ON COLUMN ledger.commands.request_sha256 IS
  'sha256 of the endpoint (method and path with ids), a newline and the body as parsed: a repeat under the same key must match it.';
