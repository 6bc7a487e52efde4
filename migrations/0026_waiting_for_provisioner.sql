-- An instance the projections want running and no provisioner call has touched yet is waiting
-- for a provisioner, not in progress (issue 29): without PROVISIONER_URL it waits until one is
-- configured, and says so. Same columns as before; only the status of a never-called instance
-- changes ('provisioning' is kept for a call under way, as the dispatcher records it).
CREATE OR REPLACE VIEW projection.instances AS
SELECT t.stripe_subscription_id,
       t.stripe_customer_id,
       t.desired,
       t.tier,
       t.limit_agents,
       t.limit_messages_per_day,
       t.limit_memory_mb,
       t.limit_cpu,
       coalesce(o.status, CASE WHEN t.desired = 'running' THEN 'waiting_for_provisioner' END) AS status,
       o.app_name,
       o.subdomain,
       o.frontend_url,
       o.backend_url,
       o.tier AS observed_tier,
       o.limit_agents AS observed_limit_agents,
       o.limit_messages_per_day AS observed_limit_messages_per_day,
       o.limit_memory_mb AS observed_limit_memory_mb,
       o.limit_cpu AS observed_limit_cpu,
       coalesce(o.attempts, 0) AS attempts,
       o.last_error,
       o.updated_at AS observed_at
FROM projection.instance_targets t
LEFT JOIN ledger.instances_observed o USING (stripe_subscription_id);
