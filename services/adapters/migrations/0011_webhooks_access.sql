-- Who may touch the webhook tables of 0010 (the model of 0002, docs/security.md):
--   * a restaurant's staff and service tokens (authenticated, service_role), through the API,
--     manage that restaurant's endpoints and read their attempts: caller_may_act_for(restaurant_id);
--   * the notifier, as the services' login role itself (no caller), reads every endpoint and
--     writes the delivery state;
--   * the owner sees every row (operator_all).

-- Explicitly, as 0006 does: on Supabase, default privileges give anon, authenticated and
-- service_role ALL on every new table and sequence; only what is granted below is meant.
REVOKE ALL ON webhook_endpoints, webhook_deliveries, webhook_attempts
    FROM PUBLIC, anon, authenticated, service_role;
REVOKE ALL ON SEQUENCE webhook_deliveries_id_seq, webhook_attempts_id_seq
    FROM PUBLIC, anon, authenticated, service_role;

GRANT SELECT, INSERT, DELETE ON webhook_endpoints TO authenticated, service_role;
GRANT UPDATE (secret, previous_secret, previous_secret_expires_at, status, disabled_reason,
              disabled_at, failing_since)
    ON webhook_endpoints TO authenticated, service_role;
GRANT SELECT ON webhook_attempts TO authenticated, service_role;
GRANT SELECT, UPDATE (status, next_attempt_at, attempts) ON webhook_deliveries TO authenticated, service_role;

GRANT SELECT, UPDATE (status, disabled_reason, disabled_at, failing_since)
    ON webhook_endpoints TO orderstatus_app;
GRANT SELECT, INSERT, UPDATE ON webhook_deliveries TO orderstatus_app;
GRANT SELECT, INSERT ON webhook_attempts TO orderstatus_app;
GRANT USAGE ON SEQUENCE webhook_deliveries_id_seq, webhook_attempts_id_seq TO orderstatus_app;

ALTER TABLE webhook_endpoints ENABLE ROW LEVEL SECURITY;
ALTER TABLE webhook_endpoints FORCE ROW LEVEL SECURITY;
ALTER TABLE webhook_deliveries ENABLE ROW LEVEL SECURITY;
ALTER TABLE webhook_deliveries FORCE ROW LEVEL SECURITY;
ALTER TABLE webhook_attempts ENABLE ROW LEVEL SECURITY;
ALTER TABLE webhook_attempts FORCE ROW LEVEL SECURITY;

CREATE POLICY webhook_endpoints_caller ON webhook_endpoints TO authenticated, service_role
    USING (public.caller_may_act_for(restaurant_id))
    WITH CHECK (public.caller_may_act_for(restaurant_id));
CREATE POLICY webhook_deliveries_caller ON webhook_deliveries TO authenticated, service_role
    USING (public.caller_may_act_for(restaurant_id))
    WITH CHECK (public.caller_may_act_for(restaurant_id));
CREATE POLICY webhook_attempts_caller ON webhook_attempts FOR SELECT TO authenticated, service_role
    USING (public.caller_may_act_for(restaurant_id));

CREATE POLICY webhook_endpoints_notifier ON webhook_endpoints TO orderstatus_app
    USING (true) WITH CHECK (true);
CREATE POLICY webhook_deliveries_notifier ON webhook_deliveries TO orderstatus_app
    USING (true) WITH CHECK (true);
CREATE POLICY webhook_attempts_notifier ON webhook_attempts TO orderstatus_app
    USING (true) WITH CHECK (true);

DO $operator$
DECLARE
    table_name text;
BEGIN
    FOREACH table_name IN ARRAY ARRAY['webhook_endpoints', 'webhook_deliveries', 'webhook_attempts']
    LOOP
        EXECUTE format(
            'CREATE POLICY operator_all ON %I TO %I USING (true) WITH CHECK (true)',
            table_name, current_user
        );
    END LOOP;
END
$operator$;
