-- Who may change what, enforced by PostgreSQL: roles, Supabase-style auth helpers, staff
-- membership, and row-level security on every table holding tenant data. docs/security.md
-- explains the model; tests/integration/test_rls_matrix.py proves every allow and deny.
--
-- Roles are cluster-wide and may already exist (another database of this cluster, or Supabase):
-- they are created only when absent, so this file runs on plain PostgreSQL and on Supabase.
--   anon, authenticated, service_role  NOLOGIN; what they may do is granted and policed below.
--   orderstatus_app                    the services' login (DATABASE_URL): owns nothing, no
--                                      BYPASSRLS, NOINHERIT, so it holds no caller's rights until
--                                      it `SET LOCAL ROLE`s to authenticated or service_role for one
--                                      transaction. Created without a password: set one out of
--                                      band (deploy/postgres/init does for the local stacks).
-- The migrating role (DATABASE_ADMIN_URL) owns the tables and reads them through explicit
-- `operator_all` policies: with FORCE ROW LEVEL SECURITY, even the owner is policed.

DO $roles$
DECLARE
    role_name text;
BEGIN
    FOREACH role_name IN ARRAY ARRAY['anon', 'authenticated', 'service_role', 'orderstatus_app']
    LOOP
        IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = role_name) THEN
            BEGIN
                IF role_name = 'orderstatus_app' THEN
                    EXECUTE format('CREATE ROLE %I LOGIN NOINHERIT', role_name);
                ELSE
                    EXECUTE format('CREATE ROLE %I NOLOGIN', role_name);
                END IF;
            EXCEPTION WHEN duplicate_object OR unique_violation THEN
                NULL;  -- another database's migration created it a moment ago
            END;
        END IF;
    END LOOP;

    -- The application role must not be able to step around the policies.
    IF EXISTS (
        SELECT FROM pg_catalog.pg_roles
        WHERE rolname IN ('orderstatus_app', 'authenticated', 'anon')
          AND (rolsuper OR rolbypassrls OR rolcreaterole)
    ) THEN
        RAISE EXCEPTION 'orderstatus_app, authenticated and anon must not be superuser, '
                        'BYPASSRLS or CREATEROLE';
    END IF;

    -- Membership only to switch roles (NOINHERIT: no rights without SET ROLE). Granted only
    -- when missing, so a re-run needs no ADMIN OPTION on roles somebody else created.
    FOREACH role_name IN ARRAY ARRAY['authenticated', 'service_role'] LOOP
        IF NOT pg_catalog.pg_has_role('orderstatus_app', role_name, 'MEMBER') THEN
            EXECUTE format('GRANT %I TO orderstatus_app', role_name);
        END IF;
    END LOOP;
END
$roles$;

-- Nobody but the owner creates objects in public (PostgreSQL 15 does this by default).
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
GRANT USAGE ON SCHEMA public TO anon, authenticated, service_role, orderstatus_app;

-- ---- Supabase-style auth helpers (kept as they are where Supabase already has them) -------------
-- request.jwt.claims holds the verified claims of the caller, set per transaction by the services
-- (services/core/tenancy.py), as PostgREST does on Supabase.

DO $auth$
BEGIN
    IF to_regnamespace('auth') IS NULL THEN
        CREATE SCHEMA auth;
    END IF;
    IF to_regprocedure('auth.jwt()') IS NULL THEN
        CREATE FUNCTION auth.jwt() RETURNS jsonb LANGUAGE sql STABLE AS $f$
            SELECT coalesce(
                nullif(current_setting('request.jwt.claim', true), ''),
                nullif(current_setting('request.jwt.claims', true), '')
            )::jsonb
        $f$;
    END IF;
    IF to_regprocedure('auth.uid()') IS NULL THEN
        -- As on Supabase: a uuid. The policies use the `sub` claim as text (jwt_subject())
        -- instead, because integration and test subjects need not be uuids.
        CREATE FUNCTION auth.uid() RETURNS uuid LANGUAGE sql STABLE AS $f$
            SELECT coalesce(
                nullif(current_setting('request.jwt.claim.sub', true), ''),
                (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub')
            )::uuid
        $f$;
    END IF;
    IF to_regprocedure('auth.role()') IS NULL THEN
        CREATE FUNCTION auth.role() RETURNS text LANGUAGE sql STABLE AS $f$
            SELECT coalesce(
                nullif(current_setting('request.jwt.claim.role', true), ''),
                (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'role')
            )::text
        $f$;
    END IF;
END
$auth$;

GRANT USAGE ON SCHEMA auth TO anon, authenticated, service_role;

-- ---- Staff membership: which user may act for which restaurant ----------------------------------
-- Written by the owner only (`orderstatus grant` / `orderstatus revoke`); a staff member reads
-- their own rows, which is what the policies below need.

CREATE TABLE restaurant_staff (
    user_id       text        NOT NULL CHECK (length(user_id) BETWEEN 1 AND 200),
    restaurant_id uuid        NOT NULL,
    granted_at    timestamptz NOT NULL DEFAULT now(),
    granted_by    text        NOT NULL DEFAULT current_user,
    PRIMARY KEY (user_id, restaurant_id)
);

CREATE INDEX restaurant_staff_restaurant_idx ON restaurant_staff (restaurant_id);

-- Who issued a command, so its outcome stays readable by its issuer (GET /commands/{id}).
ALTER TABLE command_outcomes ADD COLUMN actor_sub text, ADD COLUMN actor_role text;

-- ---- The tenancy rule ---------------------------------------------------------------------------
-- A caller may act for a restaurant when
--   * the claims name a subject and the role they name is the role in force (SET LOCAL ROLE), and
--   * the token's `restaurant_ids`, when present and non-empty, include it (a token can narrow), and
--   * service_role: always (within that narrowing); authenticated: a restaurant_staff row says so
--     (only the database widens).
-- SECURITY INVOKER and not pinned to a search_path, so the planner can inline them into policies.

-- The caller's subject: the claims' `sub`, but only when the claims' role is the role in force.
CREATE FUNCTION public.jwt_subject() RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT CASE WHEN auth.jwt() ->> 'role' = current_user::text
                THEN nullif(auth.jwt() ->> 'sub', '') END
$$;

CREATE FUNCTION public.jwt_allows_restaurant(restaurant uuid) RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT CASE
        WHEN public.jwt_subject() IS NULL THEN false
        WHEN claims -> 'restaurant_ids' IS NULL
          OR claims -> 'restaurant_ids' IN ('null'::jsonb, '[]'::jsonb) THEN true
        WHEN jsonb_typeof(claims -> 'restaurant_ids') = 'array'
            THEN (claims -> 'restaurant_ids') ? restaurant::text
        ELSE false
    END
    FROM (SELECT auth.jwt() AS claims) AS token
$$;

CREATE FUNCTION public.is_staff_of(restaurant uuid) RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT EXISTS (
        SELECT 1 FROM public.restaurant_staff AS staff
        WHERE staff.restaurant_id = restaurant AND staff.user_id = public.jwt_subject()
    )
$$;

CREATE FUNCTION public.caller_may_act_for(restaurant uuid) RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT public.jwt_allows_restaurant(restaurant)
       AND (current_user = 'service_role' OR public.is_staff_of(restaurant))
$$;

-- Whether an order exists at all, whoever it belongs to: lets the worker answer 403 (exists, not
-- yours) rather than 404 for an order the policies hide. Reveals one bit about an id the caller
-- already holds; nothing else. Definer rights, pinned search_path, executable by the caller roles
-- only.
CREATE FUNCTION public.order_exists(order_id uuid) RETURNS boolean
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT EXISTS (SELECT 1 FROM public.orders AS o WHERE o.id = order_id)
$$;

REVOKE ALL ON FUNCTION public.order_exists(uuid) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION public.order_exists(uuid) TO authenticated, service_role;

-- ---- Privileges: the most each role could ever do; the policies narrow it per row ---------------

REVOKE ALL ON orders, order_status_events, command_outcomes, widget_events, restaurant_staff
    FROM PUBLIC;

GRANT SELECT, INSERT ON orders TO authenticated, service_role;
GRANT UPDATE (status, version, updated_at) ON orders TO authenticated, service_role;
GRANT SELECT, INSERT ON order_status_events TO authenticated, service_role;  -- append-only
GRANT SELECT ON restaurant_staff TO authenticated;
GRANT SELECT ON command_outcomes TO authenticated, service_role;
-- The worker's own bookkeeping, as itself (no caller): its inbox and the analytics events.
GRANT SELECT, INSERT ON command_outcomes TO orderstatus_app;
GRANT INSERT ON widget_events TO orderstatus_app;

-- ---- Row-level security -------------------------------------------------------------------------

ALTER TABLE orders ENABLE ROW LEVEL SECURITY;
ALTER TABLE orders FORCE ROW LEVEL SECURITY;
ALTER TABLE order_status_events ENABLE ROW LEVEL SECURITY;
ALTER TABLE order_status_events FORCE ROW LEVEL SECURITY;
ALTER TABLE command_outcomes ENABLE ROW LEVEL SECURITY;
ALTER TABLE command_outcomes FORCE ROW LEVEL SECURITY;
ALTER TABLE widget_events ENABLE ROW LEVEL SECURITY;
ALTER TABLE widget_events FORCE ROW LEVEL SECURITY;
ALTER TABLE restaurant_staff ENABLE ROW LEVEL SECURITY;
ALTER TABLE restaurant_staff FORCE ROW LEVEL SECURITY;

CREATE POLICY orders_select ON orders FOR SELECT TO authenticated, service_role
    USING (public.caller_may_act_for(restaurant_id));
CREATE POLICY orders_insert ON orders FOR INSERT TO authenticated, service_role
    WITH CHECK (public.caller_may_act_for(restaurant_id));
CREATE POLICY orders_update ON orders FOR UPDATE TO authenticated, service_role
    USING (public.caller_may_act_for(restaurant_id))
    WITH CHECK (public.caller_may_act_for(restaurant_id));

CREATE POLICY order_status_events_select ON order_status_events
    FOR SELECT TO authenticated, service_role
    USING (public.caller_may_act_for(restaurant_id));
-- The denormalised restaurant_id must be the order's: no event filed under one's own restaurant
-- for another restaurant's order (the subquery sees only orders the caller may see).
CREATE POLICY order_status_events_insert ON order_status_events
    FOR INSERT TO authenticated, service_role
    WITH CHECK (
        public.caller_may_act_for(restaurant_id)
        AND EXISTS (
            SELECT 1 FROM public.orders AS o
            WHERE o.id = order_status_events.order_id
              AND o.restaurant_id = order_status_events.restaurant_id
        )
    );

CREATE POLICY restaurant_staff_own ON restaurant_staff FOR SELECT TO authenticated
    USING (user_id = public.jwt_subject());

-- An outcome is readable by whoever issued the command, and by whoever may act for its order.
CREATE POLICY command_outcomes_caller ON command_outcomes FOR SELECT TO authenticated, service_role
    USING (
        (actor_sub = public.jwt_subject() AND actor_role = current_user::text)
        OR (restaurant_id IS NOT NULL AND public.caller_may_act_for(restaurant_id))
    );
CREATE POLICY command_outcomes_worker_select ON command_outcomes FOR SELECT TO orderstatus_app
    USING (true);
CREATE POLICY command_outcomes_worker_insert ON command_outcomes FOR INSERT TO orderstatus_app
    WITH CHECK (true);
CREATE POLICY widget_events_worker_insert ON widget_events FOR INSERT TO orderstatus_app
    WITH CHECK (true);

-- The owner (migrations, `orderstatus grant`, the runbook's SQL, order_exists()) sees every row.
DO $operator$
DECLARE
    table_name text;
BEGIN
    FOREACH table_name IN ARRAY ARRAY[
        'orders', 'order_status_events', 'command_outcomes', 'widget_events', 'restaurant_staff'
    ] LOOP
        EXECUTE format(
            'CREATE POLICY operator_all ON %I TO %I USING (true) WITH CHECK (true)',
            table_name, current_user
        );
    END LOOP;
END
$operator$;
