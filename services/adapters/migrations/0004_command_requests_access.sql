-- command_requests (0003) is the API's own bookkeeping of Idempotency-Keys, written and read by
-- the services' login role as itself, never on behalf of a caller; rows carry callers' ids and
-- order ids, so the table is policed like the others (0002).

REVOKE ALL ON command_requests FROM PUBLIC;
GRANT SELECT, INSERT, DELETE ON command_requests TO orderstatus_app;

ALTER TABLE command_requests ENABLE ROW LEVEL SECURITY;
ALTER TABLE command_requests FORCE ROW LEVEL SECURITY;

CREATE POLICY command_requests_api ON command_requests TO orderstatus_app
    USING (true) WITH CHECK (true);

DO $operator$
BEGIN
    EXECUTE format(
        'CREATE POLICY operator_all ON command_requests TO %I USING (true) WITH CHECK (true)',
        current_user
    );
END
$operator$;
