-- The command side (docs/billing-api.md): every billing API command, its answer and the Stripe
-- call it made, append-only. A repeated Idempotency-Key returns the stored answer.
CREATE TABLE ledger.commands (
  id                     bigint      GENERATED ALWAYS AS IDENTITY,
  caller                 text        NOT NULL,
  endpoint               text        NOT NULL,
  idempotency_key        text        NOT NULL,
  request_sha256         bytea       NOT NULL,
  request                jsonb       NOT NULL,
  customer               text,
  stripe_idempotency_key text        NOT NULL,
  stripe_request_id      text,
  stripe_status          integer,
  response_status        integer     NOT NULL,
  response               jsonb       NOT NULL,
  at                     timestamptz NOT NULL DEFAULT now(),
  CONSTRAINT commands_pkey PRIMARY KEY (id),
  CONSTRAINT commands_idempotency_unique UNIQUE (caller, idempotency_key),
  CONSTRAINT commands_key_length CHECK (length(idempotency_key) BETWEEN 1 AND 255)
);
-- The checkout rate limit counts a customer's (or, before it exists, an email's) recent sessions.
CREATE INDEX commands_customer_idx ON ledger.commands (customer, endpoint, at);
CREATE INDEX commands_email_idx ON ledger.commands ((request->>'email'), endpoint, at) WHERE customer IS NULL;
COMMENT ON TABLE ledger.commands IS 'Billing API commands: caller, endpoint, request, idempotency key, the Stripe request id and status, our answer. Append-only; results come back as webhooks through the log.';
CREATE TRIGGER commands_no_update_delete BEFORE UPDATE OR DELETE ON ledger.commands
  FOR EACH ROW EXECUTE FUNCTION ledger.forbid_mutation();
CREATE TRIGGER commands_no_truncate BEFORE TRUNCATE ON ledger.commands
  FOR EACH STATEMENT EXECUTE FUNCTION ledger.forbid_mutation();
ALTER TABLE ledger.commands ENABLE ALWAYS TRIGGER commands_no_update_delete;
ALTER TABLE ledger.commands ENABLE ALWAYS TRIGGER commands_no_truncate;
GRANT SELECT, INSERT ON ledger.commands TO ledger_projector;

-- Without the answers' URLs: a portal URL logs its holder into the customer's billing portal.
CREATE VIEW audit.commands AS
SELECT id, caller, endpoint, idempotency_key, request, customer, stripe_request_id, stripe_status,
       response_status, response - 'url' AS response, at
FROM ledger.commands;
GRANT SELECT ON audit.commands TO ledger_auditor;
