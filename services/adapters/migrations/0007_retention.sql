-- Retention (issue 10): command_outcomes and widget_events grew without bound, and every refused
-- command from any holder of a valid token left a row in each for good. The purge job
-- (services/ops/retention.py: `orderstatus purge`, and hourly in the API process) deletes old rows
-- as the services' login role, which so far could only insert them.
--
-- The policies keep a floor: nothing younger than one hour can be deleted by the services, whatever
-- the retention settings say, so a misconfigured purge cannot empty the inbox under a batch that
-- is still being redelivered.

GRANT DELETE ON command_outcomes, widget_events TO orderstatus_app;
-- A DELETE ... WHERE reads the columns it filters on: the age of an analytics event, nothing more.
GRANT SELECT (id, created_at) ON widget_events TO orderstatus_app;

CREATE POLICY command_outcomes_purge ON command_outcomes FOR DELETE TO orderstatus_app
    USING (created_at < now() - interval '1 hour');
CREATE POLICY widget_events_purge ON widget_events FOR DELETE TO orderstatus_app
    USING (created_at < now() - interval '1 hour');
CREATE POLICY widget_events_purge_select ON widget_events FOR SELECT TO orderstatus_app
    USING (created_at < now() - interval '1 hour');

-- The purge walks widget_events by age (command_outcomes has command_outcomes_created_idx).
CREATE INDEX widget_events_created_idx ON widget_events (created_at);
