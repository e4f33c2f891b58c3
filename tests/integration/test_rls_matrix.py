"""Row-level security against the real database: who x table x operation x own/other restaurant,
every allow and every deny asserted; and the application role can neither bypass the policies nor
become a role that could.

Each case runs as the services do: logged in as orderstatus_app, `SET LOCAL ROLE` + claims for one
transaction (services/adapters/tenancy.py), always rolled back."""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import product
from typing import Any

import psycopg
import pytest
from psycopg import sql

from services.adapters.migrate import apply_migrations
from services.adapters.settings import Settings
from services.adapters.tenancy import APP_ROLE, acting_as, grant_staff, revoke_staff
from services.core.messages import Actor, Role
from tests.stack import drop_database, migrated_database, with_database

OWN = uuid.UUID("00000000-0000-4000-8000-00000000000a")
OTHER = uuid.UUID("00000000-0000-4000-8000-00000000000b")
RESTAURANT = {"own": OWN, "other": OTHER}
ORDER = {
    "own": uuid.UUID("00000000-0000-4000-8000-0000000000a1"),
    "other": uuid.UUID("00000000-0000-4000-8000-0000000000b1"),
}
COMMAND = {
    "own": uuid.UUID("00000000-0000-4000-8000-0000000000a2"),
    "other": uuid.UUID("00000000-0000-4000-8000-0000000000b2"),
}
STAFF = "alice"
"""Member of OWN. Bob is the member of OTHER."""
MEMBER = {"own": STAFF, "other": "bob"}

TABLES = [
    "orders",
    "order_status_events",
    "restaurant_staff",
    "command_outcomes",
    "widget_events",
    "command_requests",
]
OPERATIONS = ["select", "insert", "update", "delete"]
TARGETS = ["own", "other"]


@dataclass(frozen=True)
class Principal:
    """Who the transaction runs as: a caller (role switched, claims set) or the login role itself."""

    actor: Actor | None
    acts_for: frozenset[str]
    """The targets (own/other) the tenancy rule says this principal may act for."""
    raw_claims: dict[str, Any] | None = None
    """Claims set verbatim instead of the actor's (to test malformed or mismatched claims)."""


def staff(*restaurants: uuid.UUID) -> Actor:
    return Actor(sub=STAFF, role=Role.AUTHENTICATED, restaurant_ids=restaurants)


PRINCIPALS = {
    # Staff of OWN: membership in restaurant_staff, token not narrowed.
    "staff": Principal(staff(), frozenset({"own"})),
    # The same member with a token narrowed to OWN: still OWN only.
    "staff-token-for-own": Principal(staff(OWN), frozenset({"own"})),
    # A token naming OTHER cannot widen: no membership there; and it narrows OWN away.
    "staff-token-for-other": Principal(staff(OTHER), frozenset()),
    # A POS integration: service token scoped to OWN.
    "pos-of-own": Principal(
        Actor(sub="pos-1", role=Role.SERVICE_ROLE, restaurant_ids=(OWN,)), frozenset({"own"})
    ),
    # A back end: unscoped service token.
    "service": Principal(Actor(sub="backoffice", role=Role.SERVICE_ROLE), frozenset(TARGETS)),
    # Role switched but no claims at all: nothing.
    "authenticated-without-claims": Principal(staff(), frozenset(), raw_claims={}),
    # Claims saying service_role while the role in force is authenticated: nothing.
    "claims-role-mismatch": Principal(
        staff(), frozenset(), raw_claims={"sub": STAFF, "role": "service_role"}
    ),
    # The login role without switching: only the services' bookkeeping.
    "app-itself": Principal(None, frozenset()),
}

CALLER_RIGHTS = {
    "orders": {"select", "insert", "update"},
    "order_status_events": {"select", "insert"},
    "command_outcomes": {"select"},
}
"""What a caller may do to rows of the restaurants it may act for; never delete, history is
append-only, analytics and bookkeeping are not the caller's."""
APP_RIGHTS = {
    "command_outcomes": {"select", "insert"},
    "widget_events": {"insert"},
    "command_requests": {"select", "insert", "delete"},
}
"""The login role itself, for every restaurant: the worker's inbox and analytics, the API's
Idempotency-Keys. (It may also delete inbox and analytics rows older than an hour, the retention
purge of migration 0007: the seeded rows are new, so that is tested in test_retention.py.)"""


def expected(principal_name: str, table: str, operation: str, target: str) -> bool:
    principal = PRINCIPALS[principal_name]
    if principal.actor is None:
        return operation in APP_RIGHTS.get(table, set())
    if table == "restaurant_staff":
        # Staff read their own membership rows (what the policies need); nobody else, nothing more.
        return (
            operation == "select"
            and principal.actor.role is Role.AUTHENTICATED
            and principal.raw_claims is None
            and MEMBER[target] == principal.actor.sub
        )
    return target in principal.acts_for and operation in CALLER_RIGHTS.get(table, set())


# ---- the database ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Database:
    app_url: str
    admin_url: str
    owner: str


@pytest.fixture(scope="module")
def database(base_settings: Settings) -> Iterator[Database]:
    """A fresh migrated database with one order, event, outcome, analytics event and idempotency
    record per restaurant; no Kafka needed."""
    with migrated_database(base_settings) as (app_url, admin_url):
        with psycopg.connect(admin_url, autocommit=True) as conn:
            _seed(conn)
            owner = str(conn.execute("SELECT current_user").fetchone()[0])  # type: ignore[index]
        yield Database(app_url, admin_url, owner)


def _seed(conn: psycopg.Connection[Any]) -> None:
    for target in TARGETS:
        restaurant, order, command = RESTAURANT[target], ORDER[target], COMMAND[target]
        grant_staff(conn, user_id=MEMBER[target], restaurant_id=restaurant)
        conn.execute(
            "INSERT INTO orders (id, restaurant_id, status, version) VALUES (%s, %s, 'accepted', 2)",
            (order, restaurant),
        )
        conn.execute(
            """INSERT INTO order_status_events
               (order_id, restaurant_id, from_status, to_status, version, command_id, actor)
               VALUES (%s, %s, 'pending', 'accepted', 2, %s, 'carol')""",
            (order, restaurant, command),
        )
        conn.execute(
            """INSERT INTO command_outcomes
               (command_id, order_id, restaurant_id, command_type, outcome, result,
                actor_sub, actor_role)
               VALUES (%s, %s, %s, 'change_status', 'applied', '{}', 'carol', 'authenticated')""",
            (command, order, restaurant),
        )
        conn.execute(
            "INSERT INTO widget_events (type, restaurant_id, order_id) VALUES ('t', %s, %s)",
            (restaurant, order),
        )
        conn.execute(
            """INSERT INTO command_requests (command_id, caller, order_id, expires_at)
               VALUES (%s, %s, %s, now() + interval '1 day')""",
            (command, f"authenticated:{MEMBER[target]}", order),
        )


@pytest.fixture(scope="module")
def app_conn(database: Database) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(database.app_url) as conn:
        assert conn.execute("SELECT current_user").fetchone() == (APP_ROLE,)
        yield conn


# ---- the operations ----------------------------------------------------------------------------


def _new_row(table: str, target: str, sub: str) -> tuple[str, tuple[Any, ...]]:
    restaurant, order = RESTAURANT[target], ORDER[target]
    return {
        "orders": (
            "INSERT INTO orders (id, restaurant_id, status, version) VALUES (%s, %s, 'pending', 1)",
            (uuid.uuid4(), restaurant),
        ),
        "order_status_events": (
            """INSERT INTO order_status_events
               (order_id, restaurant_id, from_status, to_status, version, command_id, actor)
               VALUES (%s, %s, 'accepted', 'preparing', 3, %s, %s)""",
            (order, restaurant, uuid.uuid4(), sub),
        ),
        "restaurant_staff": (
            "INSERT INTO restaurant_staff (user_id, restaurant_id) VALUES (%s, %s)",
            (sub, restaurant),
        ),
        "command_outcomes": (
            """INSERT INTO command_outcomes
               (command_id, order_id, restaurant_id, command_type, outcome, result)
               VALUES (%s, %s, %s, 'change_status', 'applied', '{}')""",
            (uuid.uuid4(), order, restaurant),
        ),
        "widget_events": (
            "INSERT INTO widget_events (type, restaurant_id, order_id) VALUES ('t', %s, %s)",
            (restaurant, order),
        ),
        "command_requests": (
            """INSERT INTO command_requests (command_id, caller, order_id, expires_at)
               VALUES (%s, 'authenticated:x', %s, now())""",
            (uuid.uuid4(), order),
        ),
    }[table]


ROW_OF = {
    "orders": ("id", ORDER, "updated_at"),
    "order_status_events": ("order_id", ORDER, "reason"),
    "restaurant_staff": ("restaurant_id", RESTAURANT, "granted_by"),
    "command_outcomes": ("command_id", COMMAND, "outcome"),
    "widget_events": ("order_id", ORDER, "type"),
    "command_requests": ("command_id", COMMAND, "caller"),
}
"""How to address the seeded row of a target: key column, key per target, a column to update."""


def attempt(
    conn: psycopg.Connection[Any],
    principal: Principal,
    table: str,
    operation: str,
    target: str,
    context: Any = None,
) -> bool:
    """True when the operation took effect on the target's row (or inserted one). `context`
    replaces the principal's way in (e.g. a PostgREST-like switch)."""
    key_column, keys, some_column = ROW_OF[table]
    ident, key, column = (
        sql.Identifier(table),
        sql.Identifier(key_column),
        sql.Identifier(some_column),
    )
    statement: sql.Composable
    params: tuple[Any, ...]
    if operation == "select":
        statement = sql.SQL("SELECT 1 FROM {} WHERE {} = %s").format(ident, key)
        params = (keys[target],)
    elif operation == "update":
        statement = sql.SQL("UPDATE {} SET {} = {} WHERE {} = %s").format(
            ident, column, column, key
        )
        params = (keys[target],)
    elif operation == "delete":
        statement = sql.SQL("DELETE FROM {} WHERE {} = %s").format(ident, key)
        params = (keys[target],)
    else:
        sub = principal.actor.sub if principal.actor else "app"
        text, params = _new_row(table, target, sub)
        statement = sql.SQL(text)
    try:
        with conn.transaction(force_rollback=True), context or _as(conn, principal):
            cursor = conn.execute(statement, params)
            return cursor.rowcount == 1
    except psycopg.errors.InsufficientPrivilege:
        return False


def _as(conn: psycopg.Connection[Any], principal: Principal) -> Any:
    if principal.actor is None:
        return _nothing()
    if principal.raw_claims is not None:
        return _raw(conn, principal.actor.role, principal.raw_claims)
    return acting_as(conn, principal.actor)


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


class _raw:
    def __init__(self, conn: psycopg.Connection[Any], role: Role, claims: dict[str, Any]) -> None:
        self.conn, self.role, self.claims = conn, role, claims

    def __enter__(self) -> None:
        self.conn.execute(
            "SELECT set_config('role', %s, true), set_config('request.jwt.claims', %s, true)",
            (self.role.value, json.dumps(self.claims)),
        )

    def __exit__(self, *exc: object) -> None:
        return None


CASES = list(product(PRINCIPALS, TABLES, OPERATIONS, TARGETS))


def test_the_matrix_covers_every_combination() -> None:
    assert len(CASES) == 8 * 6 * 4 * 2
    allowed = sum(expected(*case) for case in CASES)
    assert 0 < allowed < len(CASES)


@pytest.mark.parametrize(
    ("principal", "table", "operation", "target"), CASES, ids=["-".join(c) for c in CASES]
)
def test_rls_matrix(
    app_conn: psycopg.Connection[Any], principal: str, table: str, operation: str, target: str
) -> None:
    allowed = attempt(app_conn, PRINCIPALS[principal], table, operation, target)
    assert allowed is expected(principal, table, operation, target)


# ---- the application role cannot step around the policies ---------------------------------------


def test_the_app_role_is_not_privileged_and_owns_nothing(
    app_conn: psycopg.Connection[Any], database: Database
) -> None:
    with psycopg.connect(database.admin_url, autocommit=True) as admin:
        attributes = admin.execute(
            """SELECT rolsuper, rolbypassrls, rolcreaterole, rolcreatedb, rolinherit
               FROM pg_roles WHERE rolname = %s""",
            (APP_ROLE,),
        ).fetchone()
        owned = admin.execute(
            """SELECT count(*) FROM pg_class c JOIN pg_roles r ON r.oid = c.relowner
               WHERE r.rolname = %s""",
            (APP_ROLE,),
        ).fetchone()
    assert attributes == (False, False, False, False, False)
    assert owned == (0,)


def test_every_role_the_app_can_become_is_unprivileged(database: Database) -> None:
    with psycopg.connect(database.admin_url, autocommit=True) as admin:
        reachable = admin.execute(
            """SELECT r.rolname, r.rolsuper OR r.rolbypassrls OR r.rolcreaterole OR r.rolcreatedb,
                      (SELECT count(*) FROM pg_class c WHERE c.relowner = r.oid)
               FROM pg_roles r WHERE pg_has_role(%s, r.oid, 'MEMBER') ORDER BY r.rolname""",
            (APP_ROLE,),
        ).fetchall()
    assert reachable == [
        ("authenticated", False, 0),
        (APP_ROLE, False, 0),
        ("service_role", False, 0),
    ]


@pytest.mark.parametrize("role", ["owner", "postgres", "pg_read_all_data", "pg_write_all_data"])
def test_the_app_role_cannot_set_role_to_a_privileged_role(
    app_conn: psycopg.Connection[Any], database: Database, role: str
) -> None:
    name = database.owner if role == "owner" else role
    for statement in ("SET ROLE {}", "SET SESSION AUTHORIZATION {}"):
        with (
            pytest.raises(psycopg.errors.InsufficientPrivilege),
            app_conn.transaction(force_rollback=True),
        ):
            app_conn.execute(sql.SQL(statement).format(sql.Identifier(name)))
    with (
        pytest.raises(psycopg.errors.InsufficientPrivilege),
        app_conn.transaction(force_rollback=True),
    ):
        app_conn.execute("SELECT set_config('role', %s, true)", (name,))


@pytest.mark.parametrize(
    "statement",
    [
        "ALTER TABLE orders DISABLE ROW LEVEL SECURITY",
        "ALTER TABLE orders NO FORCE ROW LEVEL SECURITY",
        "DROP POLICY orders_select ON orders",
        "CREATE POLICY sneaky ON orders FOR SELECT USING (true)",
        "ALTER ROLE orderstatus_app BYPASSRLS",
        "CREATE ROLE sneaky LOGIN",
        "CREATE FUNCTION public.sneaky() RETURNS int LANGUAGE sql AS 'SELECT 1'",
    ],
)
def test_the_app_role_cannot_change_the_rules(
    app_conn: psycopg.Connection[Any], statement: str
) -> None:
    for principal in ("app-itself", "service"):
        with (
            pytest.raises(psycopg.errors.InsufficientPrivilege),
            app_conn.transaction(force_rollback=True),
            _as(app_conn, PRINCIPALS[principal]),
        ):
            app_conn.execute(statement)


@pytest.mark.parametrize("principal", ["app-itself", "service"])
def test_the_app_role_cannot_grant_itself_more(
    app_conn: psycopg.Connection[Any], principal: str
) -> None:
    """Without GRANT OPTION, GRANT fails or grants nothing (PostgreSQL only warns then)."""
    for table in ("orders", "widget_events", "restaurant_staff"):
        with app_conn.transaction(force_rollback=True), _as(app_conn, PRINCIPALS[principal]):
            with contextlib.suppress(psycopg.errors.InsufficientPrivilege), app_conn.transaction():
                app_conn.execute(
                    sql.SQL("GRANT ALL ON {} TO orderstatus_app, authenticated").format(
                        sql.Identifier(table)
                    )
                )
            # (TRUNCATE: held by neither; the app role may DELETE old widget_events, 0007.)
            granted = app_conn.execute(
                """SELECT has_table_privilege('orderstatus_app', %s, 'TRUNCATE'),
                          has_table_privilege('authenticated', %s, 'TRUNCATE')""",
                (table, table),
            ).fetchone()
            assert granted == (False, False)


def test_turning_row_security_off_is_refused_not_obeyed(
    app_conn: psycopg.Connection[Any],
) -> None:
    """row_security = off makes PostgreSQL raise rather than filter for a role without BYPASSRLS."""
    with (
        pytest.raises(psycopg.errors.InsufficientPrivilege, match="row-level security"),
        app_conn.transaction(force_rollback=True),
        acting_as(app_conn, PRINCIPALS["staff"].actor),  # type: ignore[arg-type]
    ):
        app_conn.execute("SET LOCAL row_security = off")
        app_conn.execute("SELECT count(*) FROM orders")


def test_every_table_forces_row_level_security(database: Database) -> None:
    with psycopg.connect(database.admin_url, autocommit=True) as admin:
        tables = admin.execute(
            # Partitioned tables ('p', migration 0015) and each of their partitions too.
            """SELECT relname, relrowsecurity, relforcerowsecurity FROM pg_class
               WHERE relnamespace = 'public'::regnamespace AND relkind IN ('r', 'p')
                 AND relname <> 'schema_migrations' ORDER BY relname"""
        ).fetchall()
    assert {name for name, _, _ in tables} >= set(TABLES)
    assert all(enabled and forced for _, enabled, forced in tables), tables


def test_definer_functions_pin_search_path_and_views_are_invokers(database: Database) -> None:
    with psycopg.connect(database.admin_url, autocommit=True) as admin:
        definers = admin.execute(
            """SELECT p.oid::regprocedure::text, p.proconfig,
                      has_function_privilege('public', p.oid, 'EXECUTE'),
                      has_function_privilege('anon', p.oid, 'EXECUTE'),
                      has_function_privilege(%s, p.oid, 'EXECUTE')
               FROM pg_proc p
               WHERE p.prosecdef AND p.pronamespace IN ('public'::regnamespace, 'auth'::regnamespace)""",
            (APP_ROLE,),
        ).fetchall()
        invoker_views = admin.execute(
            """SELECT c.relname, coalesce('security_invoker=true' = ANY(c.reloptions), false)
               FROM pg_class c WHERE c.relkind = 'v' AND c.relnamespace = 'public'::regnamespace"""
        ).fetchall()
    assert [name for name, *_ in definers] == ["order_exists(uuid)"]
    for _, config, public, anon, app in definers:
        assert any(setting.startswith("search_path=") for setting in config or [])
        assert (public, anon, app) == (False, False, False)  # callers' roles only
    assert all(invoker for _, invoker in invoker_views), invoker_views


# ---- details of the rule ----------------------------------------------------------------------


def run_as(
    conn: psycopg.Connection[Any], actor: Actor, query: str, params: tuple[Any, ...]
) -> list[tuple[Any, ...]]:
    with conn.transaction(force_rollback=True), acting_as(conn, actor):
        return conn.execute(query, params).fetchall()


ABSENT = object()


@pytest.mark.parametrize(
    ("restaurant_ids", "sees_own"),
    [
        (ABSENT, True),
        (None, True),
        ([], True),
        ([str(OWN)], True),
        ([str(OTHER), str(OWN)], True),
        ([str(OTHER)], False),
        (str(OWN), False),  # not a list: nothing, rather than a guess
        ({"id": str(OWN)}, False),
        (7, False),
    ],
)
def test_a_tokens_restaurant_scope_only_narrows(
    app_conn: psycopg.Connection[Any], restaurant_ids: Any, sees_own: bool
) -> None:
    claims: dict[str, Any] = {"sub": "backoffice", "role": "service_role"}
    if restaurant_ids is not ABSENT:
        claims["restaurant_ids"] = restaurant_ids
    with (
        app_conn.transaction(force_rollback=True),
        _raw(app_conn, Role.SERVICE_ROLE, claims),
    ):
        visible = app_conn.execute("SELECT id FROM orders ORDER BY id").fetchall()
    assert (ORDER["own"],) in visible if sees_own else (ORDER["own"],) not in visible


def test_order_exists_tells_whether_an_order_exists_and_nothing_more(
    app_conn: psycopg.Connection[Any],
) -> None:
    outsider = Actor(sub="mallory", role=Role.AUTHENTICATED)
    check = "SELECT public.order_exists(%s)"
    assert run_as(app_conn, outsider, check, (ORDER["other"],)) == [(True,)]
    assert run_as(app_conn, outsider, check, (uuid.uuid4(),)) == [(False,)]
    assert run_as(app_conn, outsider, "SELECT count(*) FROM orders", ()) == [(0,)]


def test_an_event_cannot_be_filed_under_ones_own_restaurant_for_anothers_order(
    app_conn: psycopg.Connection[Any],
) -> None:
    with (
        pytest.raises(psycopg.errors.InsufficientPrivilege, match="row-level security"),
        app_conn.transaction(force_rollback=True),
        acting_as(app_conn, staff()),
    ):
        app_conn.execute(
            """INSERT INTO order_status_events
               (order_id, restaurant_id, from_status, to_status, version, command_id, actor)
               VALUES (%s, %s, 'accepted', 'preparing', 3, %s, 'alice')""",
            (ORDER["other"], OWN, uuid.uuid4()),
        )


@pytest.mark.parametrize("column", ["restaurant_id", "id", "created_at"])
def test_an_order_cannot_be_moved_to_another_restaurant(
    app_conn: psycopg.Connection[Any], column: str
) -> None:
    value: Any = OTHER if column == "restaurant_id" else uuid.uuid4()
    if column == "created_at":
        value = None
    with (
        pytest.raises(psycopg.errors.InsufficientPrivilege),
        app_conn.transaction(force_rollback=True),
        acting_as(app_conn, Actor(sub="backoffice", role=Role.SERVICE_ROLE)),
    ):
        app_conn.execute(
            sql.SQL("UPDATE orders SET {} = %s WHERE id = %s").format(sql.Identifier(column)),
            (value, ORDER["own"]),
        )


def test_an_outcome_stays_readable_by_whoever_issued_the_command(
    app_conn: psycopg.Connection[Any], database: Database
) -> None:
    """A refused command's outcome names no restaurant: only its issuer may read it."""
    command = uuid.uuid4()
    with psycopg.connect(database.admin_url, autocommit=True) as admin:
        admin.execute(
            """INSERT INTO command_outcomes
               (command_id, order_id, command_type, outcome, result, actor_sub, actor_role)
               VALUES (%s, %s, 'change_status', 'forbidden', '{}', 'mallory', 'authenticated')""",
            (command, ORDER["other"]),
        )
    query = "SELECT outcome FROM command_outcomes WHERE command_id = %s"
    issuer = Actor(sub="mallory", role=Role.AUTHENTICATED)
    same_sub_other_role = Actor(sub="mallory", role=Role.SERVICE_ROLE, restaurant_ids=(OWN,))
    assert run_as(app_conn, issuer, query, (command,)) == [("forbidden",)]
    assert run_as(app_conn, same_sub_other_role, query, (command,)) == []
    assert run_as(app_conn, Actor(sub="bob", role=Role.AUTHENTICATED), query, (command,)) == []


def test_a_revoked_membership_stops_the_next_transaction(
    app_conn: psycopg.Connection[Any], database: Database
) -> None:
    dave = Actor(sub="dave", role=Role.AUTHENTICATED)
    query = "SELECT id FROM orders WHERE id = %s"
    with psycopg.connect(database.admin_url, autocommit=True) as admin:
        assert grant_staff(admin, user_id="dave", restaurant_id=OWN)
        assert not grant_staff(admin, user_id="dave", restaurant_id=OWN)
        assert run_as(app_conn, dave, query, (ORDER["own"],)) == [(ORDER["own"],)]
        assert revoke_staff(admin, user_id="dave", restaurant_id=OWN)
        assert not revoke_staff(admin, user_id="dave", restaurant_id=OWN)
    assert run_as(app_conn, dave, query, (ORDER["own"],)) == []


@pytest.mark.parametrize(
    "sub",
    ["alice' OR '1'='1", "alice'); DROP TABLE orders; --", 'bob" OR true --', "%s", "\\' OR 1=1"],
)
def test_sql_in_a_subject_is_data(app_conn: psycopg.Connection[Any], sub: str) -> None:
    sly = Actor(sub=sub, role=Role.AUTHENTICATED)
    assert run_as(app_conn, sly, "SELECT count(*) FROM orders", ()) == [(0,)]
    assert run_as(app_conn, sly, "SELECT count(*) FROM restaurant_staff", ()) == [(0,)]


def test_outside_a_transaction_the_switch_is_refused(database: Database) -> None:
    with psycopg.connect(database.app_url, autocommit=True) as conn:
        with pytest.raises(RuntimeError, match="transaction"), acting_as(conn, staff()):
            pass
        # And the role did not stick: the login role still sees nothing.
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SELECT 1 FROM orders")


# ---- Supabase: its default privileges, and direct REST access through PostgREST ----------------
# Supabase runs `ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT ALL ON TABLES / SEQUENCES /
# FUNCTIONS TO anon, authenticated, service_role` for the role that creates tables, and PostgREST
# logs in as `authenticator` (NOINHERIT, member of the three) and switches to one of them per
# request with the token's claims in request.jwt.claims. Both are recreated here, in a database
# of its own, migrated after the default privileges were set (as on a Supabase project).

SUPABASE_DEFAULT_PRIVILEGES = """
GRANT USAGE ON SCHEMA public TO anon, authenticated, service_role;
ALTER DEFAULT PRIVILEGES IN SCHEMA public
    GRANT ALL ON TABLES TO anon, authenticated, service_role;
ALTER DEFAULT PRIVILEGES IN SCHEMA public
    GRANT ALL ON SEQUENCES TO anon, authenticated, service_role;
ALTER DEFAULT PRIVILEGES IN SCHEMA public
    GRANT ALL ON FUNCTIONS TO anon, authenticated, service_role;
"""
AUTHENTICATOR = "authenticator"
"""PostgREST's login (cluster-wide, like the three roles it switches to)."""
CREATE_AUTHENTICATOR = """
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'authenticator') THEN
        BEGIN
            CREATE ROLE authenticator LOGIN NOINHERIT PASSWORD 'authenticator';
        EXCEPTION WHEN duplicate_object OR unique_violation THEN
            NULL;  -- another test session created it a moment ago
        END;
    END IF;
END
$$;
"""


@dataclass(frozen=True)
class RestCaller:
    """A request through PostgREST: the role it switches to and the claims it sets."""

    role: str
    claims: dict[str, Any]
    like: str | None
    """The principal of the matrix above whose reads this caller gets; None: no rows at all."""


REST_CALLERS = {
    "rest-anon": RestCaller("anon", {"role": "anon"}, None),
    "rest-staff": RestCaller("authenticated", {"sub": STAFF, "role": "authenticated"}, "staff"),
    "rest-service": RestCaller(
        "service_role", {"sub": "backoffice", "role": "service_role"}, "service"
    ),
}


def expected_over_rest(caller: str, table: str, operation: str, target: str) -> bool:
    """Reads as the policies allow; no write of any kind on any table: writes go through the
    command API and the worker."""
    like = REST_CALLERS[caller].like
    return operation == "select" and like is not None and expected(like, table, operation, target)


@pytest.fixture(scope="module")
def supabase_database(base_settings: Settings) -> Iterator[Database]:
    name = f"orderstatus_supa_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(base_settings.admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    admin_url = with_database(base_settings.admin_url, name)
    try:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(CREATE_AUTHENTICATOR)
            for role in ("anon", "authenticated", "service_role"):
                conn.execute(
                    sql.SQL(
                        "DO $$ BEGIN CREATE ROLE {} NOLOGIN; "
                        "EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$"
                    ).format(sql.Identifier(role))
                )
                if not conn.execute(
                    "SELECT pg_has_role(%s, %s, 'MEMBER')", (AUTHENTICATOR, role)
                ).fetchone()[0]:  # type: ignore[index]
                    conn.execute(
                        sql.SQL("GRANT {} TO {}").format(
                            sql.Identifier(role), sql.Identifier(AUTHENTICATOR)
                        )
                    )
            conn.execute(SUPABASE_DEFAULT_PRIVILEGES)
            owner = str(conn.execute("SELECT current_user").fetchone()[0])  # type: ignore[index]
        apply_migrations(admin_url)
        with psycopg.connect(admin_url, autocommit=True) as conn:
            _seed(conn)
        yield Database(with_database(base_settings.database_url, name), admin_url, owner)
    finally:
        drop_database(base_settings.admin_url, name)


@pytest.fixture(scope="module")
def supabase_app_conn(supabase_database: Database) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(supabase_database.app_url) as conn:
        yield conn


@pytest.fixture(scope="module")
def rest_conn(supabase_database: Database) -> Iterator[psycopg.Connection[Any]]:
    url = psycopg.conninfo.make_conninfo(
        supabase_database.admin_url, user=AUTHENTICATOR, password=AUTHENTICATOR
    )
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT session_user").fetchone() == (AUTHENTICATOR,)
        yield conn


class _rest:
    def __init__(self, conn: psycopg.Connection[Any], caller: RestCaller) -> None:
        self.conn, self.caller = conn, caller

    def __enter__(self) -> None:
        self.conn.execute(
            "SELECT set_config('role', %s, true), set_config('request.jwt.claims', %s, true)",
            (self.caller.role, json.dumps(self.caller.claims)),
        )

    def __exit__(self, *exc: object) -> None:
        return None


REST_CASES = list(product(REST_CALLERS, TABLES, OPERATIONS, TARGETS))


@pytest.mark.parametrize(
    ("caller", "table", "operation", "target"), REST_CASES, ids=["-".join(c) for c in REST_CASES]
)
def test_rest_matrix_on_supabase_default_privileges(
    rest_conn: psycopg.Connection[Any], caller: str, table: str, operation: str, target: str
) -> None:
    """Direct REST access: a staff member cannot UPDATE an order or INSERT a forged status event,
    a service key cannot either, anon gets nothing; reads stay as the policies allow."""
    done = attempt(
        rest_conn,
        Principal(None, frozenset()),
        table,
        operation,
        target,
        context=_rest(rest_conn, REST_CALLERS[caller]),
    )
    assert done is expected_over_rest(caller, table, operation, target)


@pytest.mark.parametrize(("caller", "table"), list(product(REST_CALLERS, TABLES)))
def test_nobody_truncates_over_rest(
    rest_conn: psycopg.Connection[Any], caller: str, table: str
) -> None:
    """TRUNCATE skips row-level security: only the privilege stops it."""
    with (
        pytest.raises(psycopg.errors.InsufficientPrivilege),
        rest_conn.transaction(force_rollback=True),
        _rest(rest_conn, REST_CALLERS[caller]),
    ):
        rest_conn.execute(sql.SQL("TRUNCATE {}").format(sql.Identifier(table)))


@pytest.mark.parametrize(
    ("principal", "table", "operation", "target"), CASES, ids=["-".join(c) for c in CASES]
)
def test_rls_matrix_on_supabase_default_privileges(
    supabase_app_conn: psycopg.Connection[Any],
    principal: str,
    table: str,
    operation: str,
    target: str,
) -> None:
    """The services' own path (login orderstatus_app, SET LOCAL ROLE) is unchanged there: the
    default privileges widen nothing, and the worker still writes for the callers it may."""
    allowed = attempt(supabase_app_conn, PRINCIPALS[principal], table, operation, target)
    assert allowed is expected(principal, table, operation, target)


EXPECTED_GRANTS = {
    ("authenticated", "orders"): {"SELECT", "INSERT"},
    ("service_role", "orders"): {"SELECT", "INSERT"},
    ("authenticated", "order_status_events"): {"SELECT", "INSERT"},
    ("service_role", "order_status_events"): {"SELECT", "INSERT"},
    ("authenticated", "restaurant_staff"): {"SELECT"},
    ("authenticated", "command_outcomes"): {"SELECT"},
    ("service_role", "command_outcomes"): {"SELECT"},
    # Webhook endpoints are managed through the API as the caller (migration 0011).
    ("authenticated", "webhook_endpoints"): {"SELECT", "INSERT", "DELETE"},
    ("service_role", "webhook_endpoints"): {"SELECT", "INSERT", "DELETE"},
    ("authenticated", "webhook_deliveries"): {"SELECT"},
    ("service_role", "webhook_deliveries"): {"SELECT"},
    ("authenticated", "webhook_attempts"): {"SELECT"},
    ("service_role", "webhook_attempts"): {"SELECT"},
}
"""Table-level privileges of the three Supabase roles, exactly (plus UPDATE of some columns,
checked below); on a database with Supabase's default privileges as on plain PostgreSQL."""

EXPECTED_COLUMN_UPDATES = [
    *(("orders", column) for column in ("status", "updated_at", "version")),
    *(
        ("webhook_endpoints", column)
        for column in (
            "secret",
            "previous_secret",
            "previous_secret_expires_at",
            "status",
            "disabled_reason",
            "disabled_at",
            "failing_since",
        )
    ),
    *(("webhook_deliveries", column) for column in ("status", "next_attempt_at", "attempts")),
]


@pytest.mark.parametrize("which", ["plain", "supabase"])
def test_the_supabase_roles_hold_exactly_the_grants_the_services_need(
    which: str, request: pytest.FixtureRequest
) -> None:
    db: Database = request.getfixturevalue("database" if which == "plain" else "supabase_database")
    with psycopg.connect(db.admin_url, autocommit=True) as admin:
        tables = admin.execute(
            """SELECT grantee, table_name, privilege_type FROM information_schema.role_table_grants
               WHERE table_schema = 'public' AND grantee IN ('anon', 'authenticated', 'service_role')"""
        ).fetchall()
        columns = admin.execute(
            """SELECT grantee, table_name, column_name, privilege_type
               FROM information_schema.column_privileges
               WHERE table_schema = 'public' AND privilege_type <> 'SELECT'
                 AND privilege_type <> 'INSERT'
                 AND grantee IN ('anon', 'authenticated', 'service_role')"""
        ).fetchall()
        sequences = admin.execute(
            """SELECT c.relname, r.rolname FROM pg_class c CROSS JOIN pg_roles r
               WHERE c.relkind = 'S' AND c.relnamespace = 'public'::regnamespace
                 AND r.rolname IN ('anon', 'authenticated', 'service_role')
                 AND has_sequence_privilege(r.oid, c.oid, 'USAGE,SELECT,UPDATE')"""
        ).fetchall()
    held: dict[tuple[str, str], set[str]] = {}
    for grantee, table, privilege in tables:
        held.setdefault((grantee, table), set()).add(privilege)
    assert held == EXPECTED_GRANTS
    assert sorted(columns) == sorted(
        (role, table, column, "UPDATE")
        for role in ("authenticated", "service_role")
        for table, column in EXPECTED_COLUMN_UPDATES
    )
    assert sequences == []
