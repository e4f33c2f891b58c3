-- Daily range partitions, kept by the project itself (issue 14; docs/database-scaling.md says why
-- not pg_partman): migration 0015 partitions the history, the inbox and the analytics events by
-- time with these functions, and `orderstatus partitions maintain` (services/ops/partitions.py)
-- calls them as the owner to create partitions ahead of time and to drop expired ones.
--
-- A partition of parent P for day D (UTC) is named P_pYYYYMMDD and holds [D 00:00Z, D+1 00:00Z).
-- P_default catches whatever no daily partition covers (a key far in the past or future, or a
-- day the maintenance did not create in time); creating that day's partition later moves them in.
--
-- Every partition is the owner's alone: queried through its parent, the parent's grants and
-- policies apply; queried by name, nobody but the owner holds a privilege on it (revoked
-- explicitly: Supabase's default privileges would grant ALL to anon, authenticated and
-- service_role on each new table), and row-level security is forced with the owner's
-- operator_all policy only, as on every other table.
--
-- SECURITY INVOKER and executable by nobody but the owner (DDL on the owner's tables needs the
-- owner anyway).

CREATE FUNCTION public.partition_secure(part regclass, owner_role name) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format('REVOKE ALL ON %s FROM PUBLIC, anon, authenticated, service_role, orderstatus_app',
                   part);
    EXECUTE format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY', part);
    EXECUTE format('ALTER TABLE %s FORCE ROW LEVEL SECURITY', part);
    EXECUTE format('CREATE POLICY operator_all ON %s TO %I USING (true) WITH CHECK (true)',
                   part, owner_role);
END
$$;

-- The default partition of `parent` (once).
CREATE FUNCTION public.partition_create_default(parent regclass) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    base text := (SELECT relname FROM pg_class WHERE oid = parent);
    owner_role name := (SELECT relowner::regrole::name FROM pg_class WHERE oid = parent);
BEGIN
    IF to_regclass(format('public.%I', base || '_default')) IS NOT NULL THEN
        RETURN;
    END IF;
    EXECUTE format('CREATE TABLE public.%I PARTITION OF %s DEFAULT', base || '_default', parent);
    PERFORM public.partition_secure(format('public.%I', base || '_default')::regclass, owner_role);
END
$$;

-- The partition of `parent` for `day`, unless it exists. Rows the default partition holds for
-- that day are moved into it (PostgreSQL refuses a new partition whose rows sit in the default).
-- Returns the new partition's name, or NULL when it existed.
CREATE FUNCTION public.partition_create_day(parent regclass, day date) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    base text := (SELECT relname FROM pg_class WHERE oid = parent);
    owner_role name := (SELECT relowner::regrole::name FROM pg_class WHERE oid = parent);
    part text := base || '_p' || to_char(day, 'YYYYMMDD');
    lower_bound timestamptz := day::timestamp AT TIME ZONE 'UTC';
    upper_bound timestamptz := (day + 1)::timestamp AT TIME ZONE 'UTC';
    key_column text := (
        SELECT a.attname FROM pg_partitioned_table pt
        JOIN pg_attribute a ON a.attrelid = pt.partrelid AND a.attnum = pt.partattrs[0]
        WHERE pt.partrelid = parent
    );
    strays bigint := 0;
BEGIN
    IF to_regclass(format('public.%I', part)) IS NOT NULL THEN
        RETURN NULL;
    END IF;
    IF to_regclass(format('public.%I', base || '_default')) IS NOT NULL THEN
        EXECUTE format('SELECT count(*) FROM public.%I WHERE %I >= $1 AND %I < $2',
                       base || '_default', key_column, key_column)
            INTO strays USING lower_bound, upper_bound;
    END IF;
    IF strays > 0 THEN
        EXECUTE format('CREATE TEMPORARY TABLE partition_strays ON COMMIT DROP AS '
                       'SELECT * FROM public.%I WHERE %I >= $1 AND %I < $2',
                       base || '_default', key_column, key_column)
            USING lower_bound, upper_bound;
        EXECUTE format('DELETE FROM public.%I WHERE %I >= $1 AND %I < $2',
                       base || '_default', key_column, key_column)
            USING lower_bound, upper_bound;
    END IF;
    EXECUTE format('CREATE TABLE public.%I PARTITION OF %s FOR VALUES FROM (%L) TO (%L)',
                   part, parent, lower_bound, upper_bound);
    PERFORM public.partition_secure(format('public.%I', part)::regclass, owner_role);
    IF strays > 0 THEN
        -- Identity columns keep their values (the rows were inserted once already).
        EXECUTE format('INSERT INTO %s OVERRIDING SYSTEM VALUE SELECT * FROM partition_strays',
                       parent);
        DROP TABLE partition_strays;
    END IF;
    RETURN part;
END
$$;

-- Every day's partition of `parent` from `first_day` through `last_day`; the ones created.
CREATE FUNCTION public.partition_create_days(parent regclass, first_day date, last_day date)
RETURNS SETOF text
LANGUAGE plpgsql AS $$
DECLARE
    day date := first_day;
    created text;
BEGIN
    WHILE day <= last_day LOOP
        created := public.partition_create_day(parent, day);
        IF created IS NOT NULL THEN
            RETURN NEXT created;
        END IF;
        day := day + 1;
    END LOOP;
END
$$;

-- The daily partitions of `parent`: day, name, rows estimate. (The default partition is not one.)
CREATE FUNCTION public.partition_days(parent regclass)
RETURNS TABLE (day date, partition_name text, estimated_rows real)
LANGUAGE sql STABLE AS $$
    SELECT to_date(right(c.relname, 8), 'YYYYMMDD'), c.relname::text, c.reltuples
    FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
    WHERE i.inhparent = parent
      AND c.relname = (SELECT relname FROM pg_class WHERE oid = parent) || '_p' || right(c.relname, 8)
      AND right(c.relname, 8) ~ '^[0-9]{8}$'
    ORDER BY 1
$$;

-- Drops the daily partitions of `parent` whose whole range ends at or before `cutoff`; the names
-- dropped. Whatever the caller asks, nothing that ends within the last hour goes (the floor of
-- migration 0007's row purge): a misconfigured retention cannot empty the inbox under a batch
-- that is still being redelivered.
CREATE FUNCTION public.partition_drop_before(parent regclass, cutoff timestamptz)
RETURNS SETOF text
LANGUAGE plpgsql AS $$
DECLARE
    floor_cutoff timestamptz := least(cutoff, now() - interval '1 hour');
    doomed record;
BEGIN
    FOR doomed IN
        SELECT d.partition_name FROM public.partition_days(parent) AS d
        WHERE ((d.day + 1)::timestamp AT TIME ZONE 'UTC') <= floor_cutoff
        ORDER BY d.day
    LOOP
        EXECUTE format('DROP TABLE public.%I', doomed.partition_name);
        RETURN NEXT doomed.partition_name;
    END LOOP;
END
$$;

REVOKE ALL ON FUNCTION public.partition_secure(regclass, name),
    public.partition_create_default(regclass),
    public.partition_create_day(regclass, date),
    public.partition_create_days(regclass, date, date),
    public.partition_days(regclass),
    public.partition_drop_before(regclass, timestamptz)
    FROM PUBLIC, anon, authenticated, service_role, orderstatus_app;
