-- Only the services write orders and their history (issue 10). On Supabase, PostgREST logs in as
-- `authenticator` and switches to anon / authenticated / service_role for each request: with the
-- grants of 0002 a staff member could `UPDATE orders` or `INSERT` a forged order_status_events row
-- over REST, skipping the state machine, the inbox and the events topic. And Supabase's default
-- privileges (`ALTER DEFAULT PRIVILEGES ... GRANT ALL ON TABLES TO anon, authenticated,
-- service_role`) give those roles ALL (DELETE, TRUNCATE, every column) on each new table, which
-- 0002 never took back: it revoked from PUBLIC only.
--
-- Now:
--   * every grant to the three roles on the tables and their sequences is revoked explicitly, and
--     only what the services need when they act for a caller is granted again (as in 0002);
--   * a write to orders or order_status_events is refused unless the session logged in as the
--     services' role (orderstatus_app, which then acts as the caller with SET LOCAL ROLE) or the
--     owner. session_user cannot be changed without logging in again, and a trigger holds even for
--     Supabase's service_role, which bypasses row-level security.
-- tests/integration/test_rls_matrix.py checks both on a database with Supabase's default
-- privileges, through a PostgREST-like `authenticator` login.

REVOKE ALL ON orders, order_status_events, command_outcomes, widget_events, restaurant_staff,
    command_requests FROM anon, authenticated, service_role;
-- The migrations' own record (services/core/migrate.py creates it before 0001, so on Supabase it
-- got the default privileges too): nobody but the owner.
REVOKE ALL ON schema_migrations FROM PUBLIC, anon, authenticated, service_role;
REVOKE ALL ON SEQUENCE order_status_events_id_seq, widget_events_id_seq
    FROM anon, authenticated, service_role;

-- What the services do as a caller (0002), and nothing else: reads are policed per row, writes
-- additionally need the services' login (below).
GRANT SELECT, INSERT ON orders TO authenticated, service_role;
GRANT UPDATE (status, version, updated_at) ON orders TO authenticated, service_role;
GRANT SELECT, INSERT ON order_status_events TO authenticated, service_role;
GRANT SELECT ON restaurant_staff TO authenticated;
GRANT SELECT ON command_outcomes TO authenticated, service_role;

REVOKE ALL ON FUNCTION public.order_exists(uuid) FROM PUBLIC, anon;
GRANT EXECUTE ON FUNCTION public.order_exists(uuid) TO authenticated, service_role;

CREATE FUNCTION public.refuse_write_outside_the_services() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION USING
        ERRCODE = 'insufficient_privilege',
        MESSAGE = format('%s is written by the Order Status services only (not by %s)',
                         TG_TABLE_NAME, session_user);
END
$$;

REVOKE ALL ON FUNCTION public.refuse_write_outside_the_services() FROM PUBLIC, anon,
    authenticated, service_role;

-- The owner is the role running this migration (orderstatus locally, postgres on Supabase).
DO $writers$
DECLARE
    table_name text;
BEGIN
    FOREACH table_name IN ARRAY ARRAY['orders', 'order_status_events'] LOOP
        EXECUTE format(
            'CREATE TRIGGER %I BEFORE INSERT OR UPDATE OR DELETE ON %I FOR EACH ROW '
            'WHEN (session_user NOT IN (%L, %L)) '
            'EXECUTE FUNCTION public.refuse_write_outside_the_services()',
            table_name || '_written_by_the_services', table_name, 'orderstatus_app', current_user
        );
    END LOOP;
END
$writers$;
