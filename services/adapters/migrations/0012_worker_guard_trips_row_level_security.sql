-- worker_guard_trips (0008) under row-level security like every other table: the worker's login
-- records and reads trips, the owner (the operator's CLI, `orderstatus worker-ops reset-guard`)
-- sees and resets them; nobody else sees a row even if a grant slipped through.
ALTER TABLE worker_guard_trips ENABLE ROW LEVEL SECURITY;
ALTER TABLE worker_guard_trips FORCE ROW LEVEL SECURITY;
CREATE POLICY worker_guard_trips_worker_select ON worker_guard_trips FOR SELECT TO orderstatus_app
    USING (true);
CREATE POLICY worker_guard_trips_worker_insert ON worker_guard_trips FOR INSERT TO orderstatus_app
    WITH CHECK (true);
DO $operator$
BEGIN
    EXECUTE format(
        'CREATE POLICY operator_all ON worker_guard_trips TO %I USING (true) WITH CHECK (true)',
        current_user
    );
END
$operator$;
