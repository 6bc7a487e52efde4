-- Issue 14: `GET /v1/access` answers from a cache in each projector replica. Every write to a
-- customer's tokens or subscriptions names the customers it touched on channel `ledger_access`,
-- delivered when it commits: a JSON array of customer ids, or '*' (every customer: a TRUNCATE, or
-- too many customers for one payload). A replica drops those customers' answers when the
-- notification arrives, and all of them when its listening connection breaks (docs/access.md).
-- Usage counters are written too often for this (a notification in a transaction serializes its
-- commit with every other notifying commit): their writers notify right after they commit.
CREATE FUNCTION ledger.notify_access() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  customers text;
BEGIN
  -- A transition table exists only for its own event: each branch names only its own.
  IF TG_OP = 'TRUNCATE' THEN
    customers := '*';
  ELSIF TG_OP = 'INSERT' THEN
    SELECT json_agg(DISTINCT stripe_customer_id)::text INTO customers FROM new_rows;
  ELSIF TG_OP = 'DELETE' THEN
    SELECT json_agg(DISTINCT stripe_customer_id)::text INTO customers FROM old_rows;
  ELSE
    SELECT json_agg(DISTINCT c)::text INTO customers
    FROM (SELECT stripe_customer_id AS c FROM new_rows UNION SELECT stripe_customer_id FROM old_rows) AS touched;
  END IF;
  IF customers IS NULL THEN
    RETURN NULL; -- no row
  END IF;
  -- A payload must stay under 8000 bytes.
  IF octet_length(customers) > 7000 THEN
    customers := '*';
  END IF;
  PERFORM pg_notify('ledger_access', customers);
  RETURN NULL;
END $$;
REVOKE ALL ON FUNCTION ledger.notify_access() FROM PUBLIC;

CREATE TRIGGER api_tokens_notify_access_insert AFTER INSERT ON ledger.api_tokens
  REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION ledger.notify_access();
CREATE TRIGGER api_tokens_notify_access_update AFTER UPDATE ON ledger.api_tokens
  REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION ledger.notify_access();
CREATE TRIGGER api_tokens_notify_access_delete AFTER DELETE ON ledger.api_tokens
  REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION ledger.notify_access();
CREATE TRIGGER api_tokens_notify_access_truncate AFTER TRUNCATE ON ledger.api_tokens
  FOR EACH STATEMENT EXECUTE FUNCTION ledger.notify_access();

-- A rebuild creates these again on the tables it swaps in (and notifies '*' as it swaps).
CREATE TRIGGER subscriptions_notify_access_insert AFTER INSERT ON projection.subscriptions
  REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION ledger.notify_access();
CREATE TRIGGER subscriptions_notify_access_update AFTER UPDATE ON projection.subscriptions
  REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION ledger.notify_access();
CREATE TRIGGER subscriptions_notify_access_delete AFTER DELETE ON projection.subscriptions
  REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION ledger.notify_access();
CREATE TRIGGER subscriptions_notify_access_truncate AFTER TRUNCATE ON projection.subscriptions
  FOR EACH STATEMENT EXECUTE FUNCTION ledger.notify_access();
