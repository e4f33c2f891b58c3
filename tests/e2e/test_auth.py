"""Who may change what, over HTTP against the running API and worker: PostgreSQL's policies decide,
the API answers 403/404/401 as documented in docs/security.md, and a denial is recorded where the
runbook looks for it (widget_events, the worker's metrics)."""

from __future__ import annotations

import subprocess
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import jwt
import pytest
from prometheus_client.parser import text_string_to_metric_families

from services.adapters.settings import Settings
from tests.conftest import Stack
from tests.jwks import rsa_key
from tests.stack import ORDERSTATUS, Tokens, settings_env
from tests.topics import high_watermarks

PROBLEM = "application/problem+json"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def create(api: httpx.Client, headers: dict[str, str], restaurant: uuid.UUID) -> dict[str, Any]:
    response = api.post("/orders", json={"restaurant_id": str(restaurant)}, headers=headers)
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


def patch(
    api: httpx.Client, headers: dict[str, str], order_id: str, status: str = "accepted"
) -> httpx.Response:
    return api.patch(f"/orders/{order_id}/status", json={"status": status}, headers=headers)


def forbidden_commands(stack: Stack) -> float:
    """orderstatus_worker_commands_total{outcome="forbidden"} of the running worker."""
    port = stack.worker.settings.worker_metrics_port
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if (
                sample.name == "orderstatus_worker_commands_total"
                and sample.labels.get("outcome") == "forbidden"
            ):
                return sample.value
    return 0.0


def eventually(read: Any, expected: Any, timeout: float = 15) -> Any:
    """The worker counts an outcome just after publishing it; the API may answer first."""
    deadline = time.monotonic() + timeout
    while (value := read()) != expected and time.monotonic() < deadline:
        time.sleep(0.05)
    return value


def cli(settings: Settings, *args: str) -> str:
    done = subprocess.run(
        [ORDERSTATUS, *args],
        env=settings_env(settings),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return done.stdout


# ---- 403 and 404 ------------------------------------------------------------------------------


def test_staff_of_a_patching_an_order_of_b_get_403_nothing_changes_and_the_denial_is_counted(
    api: httpx.Client, tokens: Tokens, stack: Stack
) -> None:
    a, b = uuid.uuid4(), uuid.uuid4()
    order = create(api, tokens.headers(b, sub="staff-of-b"), b)
    counted_before = forbidden_commands(stack)

    response = api.patch(
        f"/orders/{order['order_id']}/status",
        json={"status": "accepted", "expected_version": 1, "reason": "not mine"},
        headers=tokens.headers(a, sub="staff-of-a"),
    )

    assert response.status_code == 403
    assert response.headers["content-type"] == PROBLEM
    problem = response.json()
    assert problem["type"] == "/problems/order-status-forbidden"
    assert str(b) not in response.text  # nothing about the other restaurant's order
    assert "current_status" not in problem and "current_version" not in problem
    command_id = problem["command_id"]
    # Nothing changed.
    owner_view = api.get(
        f"/orders/{order['order_id']}", headers=tokens.headers(b, sub="staff-of-b")
    )
    assert (owner_view.json()["status"], owner_view.json()["version"]) == ("pending", 1)
    with stack.db() as conn:
        changes = conn.execute(
            "SELECT count(*) FROM order_status_events WHERE order_id = %s", (order["order_id"],)
        ).fetchone()
        denials = conn.execute(
            """SELECT type, order_id::text, restaurant_id, payload ->> 'actor'
               FROM widget_events WHERE command_id = %s""",
            (command_id,),
        ).fetchall()
    assert changes == (0,)
    # Where the runbook counts RLS denials, without naming the hidden order's restaurant.
    assert denials == [("order_status_forbidden", order["order_id"], None, "staff-of-a")]
    assert eventually(lambda: forbidden_commands(stack), counted_before + 1) == counted_before + 1


def test_an_order_that_does_not_exist_is_404_for_change_read_and_history(
    api: httpx.Client, tokens: Tokens
) -> None:
    headers = tokens.headers(uuid.uuid4())
    unknown = uuid.uuid4()
    changed = patch(api, headers, str(unknown))
    read = api.get(f"/orders/{unknown}", headers=headers)
    history = api.get(f"/orders/{unknown}/events", headers=headers)
    for response in (changed, read, history):
        assert response.status_code == 404
        assert response.json()["type"] == "/problems/order-not-found"


def test_another_restaurants_order_reads_as_absent(api: httpx.Client, tokens: Tokens) -> None:
    """Reads go through the same policies; they do not even confirm the order exists."""
    a, b = uuid.uuid4(), uuid.uuid4()
    order_id = create(api, tokens.headers(b, sub="staff-of-b"), b)["order_id"]
    outsider = tokens.headers(a, sub="staff-of-a")
    read = api.get(f"/orders/{order_id}", headers=outsider)
    history = api.get(f"/orders/{order_id}/events", headers=outsider)
    unknown = api.get(f"/orders/{uuid.uuid4()}", headers=outsider)
    assert read.status_code == history.status_code == unknown.status_code == 404
    assert read.json() | {"instance": ""} == unknown.json() | {"instance": ""}


def test_the_policy_not_the_token_decides_for_staff(
    api: httpx.Client, stack: Stack, tokens: Tokens
) -> None:
    """A token without `restaurant_ids` (as Supabase issues them) acts for exactly the restaurants
    the database grants its subject: creating for another restaurant is refused by the insert
    policy, a change by the hidden row."""
    mine, theirs = uuid.uuid4(), uuid.uuid4()
    tokens.grant("carol", mine)
    carol = bearer(tokens.staff(sub="carol"))  # not narrowed to any restaurant
    own = create(api, carol, mine)
    other = create(api, tokens.headers(theirs, sub="staff-of-b"), theirs)

    refused = api.post("/orders", json={"restaurant_id": str(theirs)}, headers=carol)

    assert refused.status_code == 403
    assert refused.json()["type"] == "/problems/order-status-forbidden"
    assert patch(api, carol, other["order_id"]).status_code == 403
    assert patch(api, carol, own["order_id"]).status_code == 200
    with stack.db() as conn:
        assert conn.execute(
            "SELECT count(*) FROM orders WHERE restaurant_id = %s", (theirs,)
        ).fetchone() == (1,)
    assert order_row(stack, other["order_id"]) == ("pending", 1, 0)  # the refused change: none


def test_grant_and_revoke_take_effect_on_the_next_request(
    api: httpx.Client, stack: Stack, tokens: Tokens
) -> None:
    restaurant = uuid.uuid4()
    order_id = create(api, tokens.headers(restaurant, sub="owner"), restaurant)["order_id"]
    dave = bearer(tokens.staff(sub="dave"))
    assert patch(api, dave, order_id).status_code == 403

    granted = cli(stack.settings, "grant", "--restaurant", str(restaurant), "--user", "dave")
    assert "granted" in granted
    assert "dave" in cli(stack.settings, "staff", "--restaurant", str(restaurant))
    assert patch(api, dave, order_id).status_code == 200

    revoked = cli(stack.settings, "revoke", "--restaurant", str(restaurant), "--user", "dave")
    assert "revoked" in revoked
    assert patch(api, dave, order_id, "preparing").status_code == 403  # same token, still valid
    assert api.get(f"/orders/{order_id}", headers=dave).status_code == 404
    assert order_row(stack, order_id) == ("accepted", 2, 1)  # only the granted change was written


def order_row(stack: Stack, order_id: str) -> tuple[str, int, int]:
    """Status, version and number of status events of an order, as stored."""
    with stack.db() as conn:
        row = conn.execute(
            """SELECT status, version,
                      (SELECT count(*) FROM order_status_events WHERE order_id = orders.id)
               FROM orders WHERE id = %s""",
            (order_id,),
        ).fetchone()
    assert row is not None
    return str(row[0]), int(row[1]), int(row[2])


def test_pos_service_tokens_act_for_their_restaurants_only(
    api: httpx.Client, tokens: Tokens, stack: Stack
) -> None:
    mine, theirs = uuid.uuid4(), uuid.uuid4()
    pos = bearer(tokens.pos(mine))
    own = create(api, pos, mine)
    other = create(api, bearer(tokens.service()), theirs)  # an unscoped back end: any restaurant

    assert patch(api, pos, own["order_id"]).status_code == 200
    assert patch(api, pos, other["order_id"]).status_code == 403
    assert order_row(stack, other["order_id"]) == ("pending", 1, 0)  # refused: nothing written
    assert api.post("/orders", json={"restaurant_id": str(theirs)}, headers=pos).status_code == 403
    with stack.db() as conn:  # the refused creation: no second order there
        assert conn.execute(
            "SELECT count(*) FROM orders WHERE restaurant_id = %s", (theirs,)
        ).fetchone() == (1,)
    assert patch(api, bearer(tokens.service()), other["order_id"]).status_code == 200


def test_a_command_outcome_is_readable_by_its_issuer_only(
    api: httpx.Client, tokens: Tokens
) -> None:
    a, b = uuid.uuid4(), uuid.uuid4()
    owner = tokens.headers(b, sub="staff-of-b")
    order_id = create(api, owner, b)["order_id"]
    intruder = tokens.headers(a, sub="staff-of-a")
    command_id = patch(api, intruder, order_id).json()["command_id"]

    mine = api.get(f"/commands/{command_id}", headers=intruder)
    theirs = api.get(f"/commands/{command_id}", headers=owner)

    assert mine.status_code == 200
    assert (mine.json()["outcome"], mine.json()["status_code"]) == ("forbidden", 403)
    assert theirs.status_code == 404


# ---- 401 ------------------------------------------------------------------------------------


def _bad_tokens(settings: Settings, tokens: Tokens) -> dict[str, str]:
    secret = settings.jwt_secret.get_secret_value()
    now = int(time.time())
    good = {"sub": "staff-test", "role": "authenticated", "aud": settings.jwt_audience}

    def hs(claims: dict[str, Any], key: str = secret, algorithm: str = "HS256") -> str:
        return jwt.encode({"iat": now, "exp": now + 600, **claims}, key, algorithm=algorithm)

    valid = tokens.staff(uuid.uuid4())
    header, payload, _ = valid.split(".")
    return {
        "forged": hs(good, key="x" * 64),
        "bad-signature": f"{header}.{payload}.{'A' * 43}",
        "expired": hs({**good, "exp": now - 60}),
        "not-yet-valid": hs({**good, "nbf": now + 120}),
        "wrong-audience": hs({**good, "aud": "somebody-else"}),
        "alg-none": jwt.encode({**good, "exp": now + 600}, None, algorithm="none"),
        "wrong-algorithm": hs(good, key=secret * 2, algorithm="HS512"),
        "rs256-unknown-issuer": rsa_key().sign({**good, "exp": now + 600}),
        "anon-role": hs({**good, "role": "anon"}),
        "garbage": "not.a.jwt",
    }


def test_bad_tokens_are_401_alike_and_publish_nothing(
    api: httpx.Client, tokens: Tokens, stack: Stack
) -> None:
    before = high_watermarks(stack.settings, stack.settings.topics.commands)
    path = f"/orders/{uuid.uuid4()}/status"
    answers = {
        name: api.patch(path, json={"status": "accepted"}, headers=bearer(token))
        for name, token in _bad_tokens(stack.settings, tokens).items()
    }
    for name, response in answers.items():
        assert response.status_code == 401, name
        assert response.headers["content-type"] == PROBLEM
        assert response.headers["www-authenticate"] == "Bearer"
    bodies = {str(sorted(r.json().items())) for r in answers.values()}
    assert len(bodies) == 1, bodies  # one answer for every reason: nothing to learn from it
    assert answers["expired"].json()["detail"] == ""
    assert high_watermarks(stack.settings, stack.settings.topics.commands) == before


# ---- bad input ------------------------------------------------------------------------------


def test_oversized_requests_are_refused_before_anything_else(
    api: httpx.Client, tokens: Tokens, stack: Stack
) -> None:
    settings = stack.settings
    before = high_watermarks(settings, settings.topics.commands)
    path = f"/orders/{uuid.uuid4()}/status"
    big = b'{"status": "accepted", "reason": "' + b"x" * settings.api_max_body_bytes + b'"}'

    def streamed() -> Iterator[bytes]:
        for _ in range(64):
            yield b"x" * 1024

    headers = {**tokens.headers(uuid.uuid4()), "content-type": "application/json"}
    body_declared = api.patch(path, content=big, headers=headers)
    body_unauthenticated = api.patch(
        path, content=big, headers={"content-type": "application/json"}
    )
    body_streamed = api.patch(path, content=streamed(), headers=headers)
    header_padded = api.get("/healthz", headers={"X-Padding": "a" * settings.api_max_header_bytes})
    header_token = api.patch(path, json={"status": "accepted"}, headers=bearer("e" * 20_000))

    assert body_declared.status_code == body_unauthenticated.status_code == 413
    assert body_streamed.status_code == 413
    assert header_padded.status_code == header_token.status_code == 431
    for response in (body_declared, body_streamed, header_padded):
        assert response.headers["content-type"] == PROBLEM
    assert high_watermarks(settings, settings.topics.commands) == before


SLY = [
    "'; DROP TABLE orders; --",
    "Robert'); DELETE FROM order_status_events; --",
    '" OR 1=1 --',
    "%s %(order_id)s $1 \\x00",
    "');SELECT pg_sleep(10);--",
]


@pytest.mark.parametrize("sly", SLY)
def test_sql_in_string_fields_is_stored_as_text(
    api: httpx.Client, tokens: Tokens, stack: Stack, sly: str
) -> None:
    restaurant = uuid.uuid4()
    sub = f"{sly} {uuid.uuid4().hex[:6]}"
    headers = {**tokens.headers(restaurant, sub=sub), "X-Request-ID": sly}
    tables_before = public_tables(stack)
    order_id = create(api, headers, restaurant)["order_id"]

    changed = api.patch(
        f"/orders/{order_id}/status", json={"status": "accepted", "reason": sly}, headers=headers
    )

    assert changed.status_code == 200, changed.text
    assert changed.headers["x-request-id"] == sly
    [entry] = api.get(f"/orders/{order_id}/events", headers=headers).json()
    assert (entry["actor"], entry["reason"]) == (sub, sly)
    with stack.db() as conn:
        rid = conn.execute(
            "SELECT result ->> 'rid' FROM command_outcomes WHERE order_id = %s AND outcome = 'applied' "
            "ORDER BY created_at DESC LIMIT 1",
            (order_id,),
        ).fetchone()
    assert rid == (sly,)
    # Exactly the tables there were before (none dropped or created by the text), the known ones
    # among them.
    assert public_tables(stack) == tables_before
    assert tables_before >= {
        "orders",
        "order_status_events",
        "command_outcomes",
        "widget_events",
        "restaurant_staff",
        "command_requests",
    }


def public_tables(stack: Stack) -> set[str]:
    with stack.db() as conn:
        rows = conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        return {str(name) for (name,) in rows}
