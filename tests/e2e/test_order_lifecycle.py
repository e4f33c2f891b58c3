"""The pipeline over HTTP: API -> Kafka -> worker -> PostgreSQL -> result event -> API."""

from __future__ import annotations

import asyncio
import uuid

import httpx

from tests.conftest import Stack
from tests.stack import Tokens
from tests.topics import high_watermarks

PROBLEM = "application/problem+json"


def create_order(api: httpx.Client, tokens: Tokens, restaurant: uuid.UUID) -> dict[str, object]:
    response = api.post(
        "/orders", json={"restaurant_id": str(restaurant)}, headers=tokens.headers(restaurant)
    )
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


def test_walks_an_order_to_completed_and_records_four_changes(
    api: httpx.Client, tokens: Tokens, stack: Stack
) -> None:
    restaurant = uuid.uuid4()
    headers = tokens.headers(restaurant)
    order = create_order(api, tokens, restaurant)
    assert order["status"] == "pending" and order["version"] == 1
    order_id = order["order_id"]

    for version, status in enumerate(["accepted", "preparing", "ready", "completed"], start=2):
        response = api.patch(
            f"/orders/{order_id}/status",
            json={"status": status, "expected_version": version - 1},
            headers=headers,
        )
        assert response.status_code == 200, response.text
        body = response.json()
        assert (body["status"], body["version"]) == (status, version)
        assert set(body) == {"order_id", "restaurant_id", "status", "version", "updated_at"}

    history = api.get(f"/orders/{order_id}/events", headers=headers).json()
    assert [(h["from_status"], h["to_status"], h["version"]) for h in history] == [
        ("pending", "accepted", 2),
        ("accepted", "preparing", 3),
        ("preparing", "ready", 4),
        ("ready", "completed", 5),
    ]
    with stack.db() as conn:
        rows = conn.execute(
            "SELECT from_status, to_status FROM order_status_events WHERE order_id = %s ORDER BY version",
            (order_id,),
        ).fetchall()
    assert rows == [
        ("pending", "accepted"),
        ("accepted", "preparing"),
        ("preparing", "ready"),
        ("ready", "completed"),
    ]
    current = api.get(f"/orders/{order_id}", headers=headers).json()
    assert (current["status"], current["version"]) == ("completed", 5)


def test_fifty_racing_patches_with_one_expected_version_let_exactly_one_win(
    stack: Stack, tokens: Tokens, api: httpx.Client
) -> None:
    restaurant = uuid.uuid4()
    order_id = create_order(api, tokens, restaurant)["order_id"]
    headers = tokens.headers(restaurant)

    async def race() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=stack.url, timeout=30, headers=headers) as client:
            body = {"status": "accepted", "expected_version": 1}
            return await asyncio.gather(
                *(client.patch(f"/orders/{order_id}/status", json=body) for _ in range(50))
            )

    responses = asyncio.run(race())
    codes = sorted(r.status_code for r in responses)
    assert codes == [200] + [409] * 49
    for conflict in (r for r in responses if r.status_code == 409):
        body = conflict.json()
        assert conflict.headers["content-type"] == PROBLEM
        assert body["type"] == "/problems/stale-version"
        assert (body["current_status"], body["current_version"]) == ("accepted", 2)
    with stack.db() as conn:
        changes = conn.execute(
            "SELECT count(*) FROM order_status_events WHERE order_id = %s", (order_id,)
        ).fetchone()
        conflicts = conn.execute(
            "SELECT count(*) FROM widget_events WHERE order_id = %s AND type = 'order_status_conflict'",
            (order_id,),
        ).fetchone()
    assert changes == (1,)
    assert conflicts == (49,)


def test_an_invalid_transition_is_a_conflict_naming_the_current_status(
    api: httpx.Client, tokens: Tokens
) -> None:
    restaurant = uuid.uuid4()
    headers = tokens.headers(restaurant)
    order_id = create_order(api, tokens, restaurant)["order_id"]
    for status in ["accepted", "preparing", "ready", "completed"]:
        assert (
            api.patch(
                f"/orders/{order_id}/status", json={"status": status}, headers=headers
            ).status_code
            == 200
        )

    response = api.patch(
        f"/orders/{order_id}/status", json={"status": "preparing"}, headers=headers
    )

    assert response.status_code == 409
    assert response.headers["content-type"] == PROBLEM
    body = response.json()
    assert body["type"] == "/problems/invalid-transition"
    assert (body["current_status"], body["current_version"]) == ("completed", 5)


def test_an_unknown_order_is_404(api: httpx.Client, tokens: Tokens) -> None:
    response = api.patch(
        f"/orders/{uuid.uuid4()}/status",
        json={"status": "accepted"},
        headers=tokens.headers(uuid.uuid4()),
    )
    assert response.status_code == 404
    assert response.headers["content-type"] == PROBLEM
    assert response.json()["type"] == "/problems/order-not-found"


def test_creating_an_order_id_twice_is_a_conflict(api: httpx.Client, tokens: Tokens) -> None:
    restaurant = uuid.uuid4()
    order_id = str(uuid.uuid4())
    body = {"restaurant_id": str(restaurant), "order_id": order_id}
    first = api.post("/orders", json=body, headers=tokens.headers(restaurant))
    second = api.post("/orders", json=body, headers=tokens.headers(restaurant))
    assert first.status_code == 201 and first.json()["order_id"] == order_id
    assert first.headers["location"] == f"/orders/{order_id}"
    assert second.status_code == 409 and second.json()["type"] == "/problems/order-exists"


def test_staff_of_another_restaurant_are_refused(api: httpx.Client, tokens: Tokens) -> None:
    mine, theirs = uuid.uuid4(), uuid.uuid4()
    order_id = create_order(api, tokens, theirs)["order_id"]

    patch = api.patch(
        f"/orders/{order_id}/status", json={"status": "accepted"}, headers=tokens.headers(mine)
    )
    read = api.get(f"/orders/{order_id}", headers=tokens.headers(mine))
    create = api.post("/orders", json={"restaurant_id": str(theirs)}, headers=tokens.headers(mine))

    assert patch.status_code == 403 and patch.json()["type"] == "/problems/order-status-forbidden"
    assert read.status_code == 404
    assert create.status_code == 403
    owner = api.get(f"/orders/{order_id}", headers=tokens.headers(theirs)).json()
    assert (owner["status"], owner["version"]) == ("pending", 1)


def test_requests_without_a_valid_token_are_401_and_publish_nothing(
    api: httpx.Client, tokens: Tokens, stack: Stack
) -> None:
    before = high_watermarks(stack.settings, stack.settings.topics.commands)
    order_path = f"/orders/{uuid.uuid4()}/status"
    missing = api.patch(order_path, json={"status": "accepted"})
    garbage = api.patch(
        order_path, json={"status": "accepted"}, headers={"Authorization": "Bearer x.y.z"}
    )
    forged = api.patch(
        order_path,
        json={"status": "accepted"},
        headers={"Authorization": "Bearer " + tokens.staff(uuid.uuid4())[:-4] + "AAAA"},
    )
    for response in (missing, garbage, forged):
        assert response.status_code == 401
        assert response.headers["content-type"] == PROBLEM
        assert response.headers["www-authenticate"] == "Bearer"
    assert high_watermarks(stack.settings, stack.settings.topics.commands) == before


def test_malformed_requests_are_422_problems_and_publish_nothing(
    api: httpx.Client, tokens: Tokens, stack: Stack
) -> None:
    restaurant = uuid.uuid4()
    headers = tokens.headers(restaurant)
    before = high_watermarks(stack.settings, stack.settings.topics.commands)
    path = f"/orders/{uuid.uuid4()}/status"
    cases = [
        api.patch(
            path, content=b"{not json", headers={**headers, "content-type": "application/json"}
        ),
        api.patch(path, json={"status": "teleported"}, headers=headers),
        api.patch(path, json={"status": "accepted", "colour": "red"}, headers=headers),
        api.patch(path, json={"status": "accepted", "expected_version": 0}, headers=headers),
        api.patch(path, json={"status": "accepted", "reason": "x" * 501}, headers=headers),
        api.patch(path, json={"status": "accepted", "reason": "nul\u0000byte"}, headers=headers),
        api.patch("/orders/not-a-uuid/status", json={"status": "accepted"}, headers=headers),
        api.post("/orders", json={"restaurant_id": "nope"}, headers=headers),
        api.post("/orders", json={}, headers=headers),
    ]
    for response in cases:
        assert response.status_code == 422, response.text
        assert response.headers["content-type"] == PROBLEM
        assert response.json()["errors"]
    assert high_watermarks(stack.settings, stack.settings.topics.commands) == before


def test_every_response_carries_a_request_id(api: httpx.Client, tokens: Tokens) -> None:
    response = api.get("/healthz", headers={"X-Request-ID": "trace-me-123"})
    assert response.headers["x-request-id"] == "trace-me-123"
    assert len(api.get("/healthz").headers["x-request-id"]) == 32


def test_openapi_documents_the_contract(api: httpx.Client) -> None:
    spec = api.get("/openapi.json").json()
    assert {
        "/orders",
        "/orders/{order_id}/status",
        "/orders/{order_id}",
        "/orders/{order_id}/events",
    } <= set(spec["paths"])
    patch = spec["paths"]["/orders/{order_id}/status"]["patch"]
    assert {"200", "401", "403", "404", "409", "422", "504"} <= set(patch["responses"])
