"""The webhook notifier against the real Kafka, PostgreSQL and local HTTP receivers: signatures,
per-order order through an outage, disabling, isolation from a hung receiver, kill -9, SSRF and
row-level security of the endpoint API. Events are put on the events topic as the contract says."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from standardwebhooks.webhooks import Webhook

from services.adapters.settings import Settings
from services.notifier.receiver import Answer
from services.notifier.signing import verify
from tests.stack import ServiceProcess, Tokens, free_port, isolated_settings
from tests.webhooks import (
    EventWriter,
    Receiver,
    first_receipt_versions,
    running_receiver,
    wait_until,
)

FAST_RETRIES = ",".join(["0.2"] * 3 + ["0.5"] * 40)


@pytest.fixture(scope="module")
def settings(base_settings: Settings) -> Iterator[Settings]:
    with isolated_settings(base_settings, webhook_allowed_cidrs="127.0.0.0/8") as s:
        yield s


@pytest.fixture(scope="module")
def api_url(settings: Settings, log_dir: Path) -> Iterator[str]:
    api = ServiceProcess("api", settings, log_dir).start()
    yield f"http://127.0.0.1:{settings.api_port}"
    api.terminate()


@pytest.fixture(scope="module")
def tokens(settings: Settings) -> Tokens:
    return Tokens(settings)


@pytest.fixture
def writer(settings: Settings) -> EventWriter:
    return EventWriter(settings)


@contextmanager
def notifier(settings: Settings, log_dir: Path, **overrides: Any) -> Iterator[ServiceProcess]:
    overrides = {
        "webhook_retry_schedule_s": FAST_RETRIES,
        "notifier_metrics_port": free_port(),
        **overrides,
    }
    process = ServiceProcess("notifier", settings, log_dir, **overrides).start()
    wait_until(lambda: "dispatcher_started" in process.logs(), 30, "the dispatcher")
    try:
        yield process
    finally:
        process.terminate()


def register(api: str, token: str, restaurant: uuid.UUID, url: str) -> dict[str, Any]:
    response = httpx.post(
        f"{api}/webhooks/endpoints",
        json={"restaurant_id": str(restaurant), "url": url},
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def endpoint_state(settings: Settings, endpoint_id: str) -> tuple[str, int, int]:
    """(status, attempts recorded, deliveries not yet delivered) as the owner sees them."""
    with psycopg.connect(settings.admin_url) as conn:
        row = conn.execute(
            """SELECT e.status,
                      (SELECT count(*) FROM webhook_attempts a WHERE a.endpoint_id = e.id),
                      (SELECT count(*) FROM webhook_deliveries d
                       WHERE d.endpoint_id = e.id AND d.status <> 'delivered')
               FROM webhook_endpoints e WHERE e.id = %s""",
            (endpoint_id,),
        ).fetchone()
    assert row is not None
    return str(row[0]), int(row[1]), int(row[2])


def test_deliveries_are_signed_per_standard_webhooks_also_across_a_rotation(
    settings: Settings, api_url: str, tokens: Tokens, writer: EventWriter, log_dir: Path
) -> None:
    restaurant, order = uuid.uuid4(), uuid.uuid4()
    receiver = Receiver()
    with running_receiver(receiver) as url, notifier(settings, log_dir):
        token = tokens.staff(restaurant, sub="sig-staff")
        endpoint = register(api_url, token, restaurant, url)
        ids = writer.order_events(restaurant, order, range(1, 4))
        writer.flush()
        wait_until(lambda: len(receiver.ok_events()) >= 3, 30, "three deliveries")
        for delivery in receiver.received:
            Webhook(endpoint["secret"]).verify(delivery.body, delivery.headers, json_parse=False)
            assert verify(endpoint["secret"], delivery.headers, delivery.body, time.time())
        assert [d.headers["webhook-id"] for d in receiver.received] == ids
        assert all(
            d.headers["content-type"] == "application/cloudevents+json" for d in receiver.received
        )

        rotated = httpx.post(
            f"{api_url}/webhooks/endpoints/{endpoint['id']}/rotate-secret",
            headers={"Authorization": f"Bearer {token}"},
        )
        assert rotated.status_code == 200 and rotated.json()["rotating"] is True
        writer.order_events(restaurant, order, range(4, 5))
        writer.flush()
        wait_until(lambda: len(receiver.ok_events()) >= 4, 30, "the fourth delivery")
        last = receiver.received[-1]
        assert len(last.headers["webhook-signature"].split()) == 2
        for secret in (endpoint["secret"], rotated.json()["secret"]):
            Webhook(secret).verify(last.body, last.headers, json_parse=False)


def test_a_receiver_down_for_a_while_gets_every_event_afterwards_in_per_order_order(
    settings: Settings, api_url: str, tokens: Tokens, writer: EventWriter, log_dir: Path
) -> None:
    restaurant = uuid.uuid4()
    orders = [uuid.uuid4() for _ in range(5)]
    down = {"until": float("inf")}

    def answer(_delivery: Any) -> Answer:
        return Answer(503) if time.monotonic() < down["until"] else Answer(204)

    receiver = Receiver(answer=answer)
    with running_receiver(receiver) as url, notifier(settings, log_dir):
        endpoint = register(api_url, tokens.staff(restaurant, sub="down-staff"), restaurant, url)
        down["until"] = time.monotonic() + 3.0  # down from now on, for 3 s
        for version in range(1, 6):  # interleaved: order 1 v1, order 2 v1, ..., order 5 v5
            for order in orders:
                writer.order_events(restaurant, order, range(version, version + 1))
        writer.flush()
        wait_until(lambda: len(receiver.ok_events()) >= 25, 60, "all 25 events after the outage")
        assert any(status == 503 for _d, status in receiver.answered), "the outage was real"
        per_order = first_receipt_versions(receiver.ok_events())
        assert per_order == {str(o): [1, 2, 3, 4, 5] for o in orders}
        # The receiver answered before the notifier stored the last attempts: wait for those.
        wait_until(lambda: endpoint_state(settings, endpoint["id"])[2] == 0, 30, "stored")
        status, attempts, _undelivered = endpoint_state(settings, endpoint["id"])
        assert status == "enabled"
        assert attempts == len(receiver.answered)


def test_a_permanently_failing_endpoint_ends_disabled_with_every_attempt_recorded(
    settings: Settings, api_url: str, tokens: Tokens, writer: EventWriter, log_dir: Path
) -> None:
    restaurant = uuid.uuid4()
    failing = Receiver(answer=lambda _d: Answer(500))
    gone = Receiver(answer=lambda _d: Answer(410))
    token = tokens.staff(restaurant, sub="fail-staff")
    with (
        running_receiver(failing) as failing_url,
        running_receiver(gone) as gone_url,
        notifier(settings, log_dir, webhook_disable_after_s=2.0),
    ):
        broken = register(api_url, token, restaurant, failing_url)
        leaving = register(api_url, token, restaurant, gone_url)
        writer.order_events(restaurant, uuid.uuid4(), range(1, 3))
        writer.order_events(restaurant, uuid.uuid4(), range(1, 2))
        writer.flush()
        wait_until(lambda: endpoint_state(settings, broken["id"])[0] == "disabled", 60, "disabled")
        wait_until(lambda: endpoint_state(settings, leaving["id"])[0] == "disabled", 30, "410")
        time.sleep(1)  # attempts that were in flight when it was disabled get recorded
        listed = httpx.get(
            f"{api_url}/webhooks/endpoints",
            params={"restaurant_id": str(restaurant)},
            headers={"Authorization": f"Bearer {token}"},
        ).json()
        assert {e["id"]: e["status"] for e in listed} == {
            broken["id"]: "disabled",
            leaving["id"]: "disabled",
        }
        attempts = httpx.get(
            f"{api_url}/webhooks/endpoints/{broken['id']}/attempts",
            params={"limit": 1000},
            headers={"Authorization": f"Bearer {token}"},
        ).json()
        assert len(attempts) == len(failing.received) > 2
        assert all(a["status_code"] == 500 and a["error"] == "HTTP 500" for a in attempts)
        _status, _n, undelivered = endpoint_state(settings, broken["id"])
        assert undelivered == 3  # held, nothing lost: `recover` resends them
        # 410: never retried; at most the two orders' first events were in flight together.
        assert [status for _d, status in gone.answered] in ([410], [410, 410])
        assert endpoint_state(settings, leaving["id"])[1] == len(gone.received)

        seen = len(failing.received)
        failing.answer = lambda _d: Answer(204)
        recovered = httpx.post(
            f"{api_url}/webhooks/endpoints/{broken['id']}/recover",
            json={"since": "2000-01-01T00:00:00Z"},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert recovered.status_code == 202 and recovered.json()["requeued"] == 3
        wait_until(lambda: len(failing.ok_events()) == 3, 30, "recovered deliveries")
        assert len(failing.received) == seen + 3


def test_a_hung_endpoint_does_not_delay_another(
    settings: Settings, api_url: str, tokens: Tokens, writer: EventWriter, log_dir: Path
) -> None:
    restaurant = uuid.uuid4()
    hung, fast = Receiver(), Receiver()
    hung.hang.set()
    token = tokens.staff(restaurant, sub="hang-staff")
    with (
        running_receiver(hung) as hung_url,
        running_receiver(fast) as fast_url,
        notifier(settings, log_dir, webhook_total_timeout_s=120.0, notifier_per_host_connections=8),
    ):
        register(api_url, token, restaurant, hung_url)
        register(api_url, token, restaurant, fast_url)
        for _ in range(100):
            writer.order_events(restaurant, uuid.uuid4(), range(1, 3))
        writer.flush()
        wait_until(lambda: len(fast.ok_events()) == 200, 60, "200 deliveries to the fast receiver")
        # Every one of them arrived while the hung receiver held its first attempts open.
        assert hung.answered == []
        assert 0 < len(hung.received) <= 8  # its own pool only


def test_kill_9_of_the_notifier_under_load_loses_nothing(
    settings: Settings, api_url: str, tokens: Tokens, writer: EventWriter, log_dir: Path
) -> None:
    restaurant = uuid.uuid4()
    receiver = Receiver()
    orders = [uuid.uuid4() for _ in range(40)]
    ids: list[str] = []
    with running_receiver(receiver) as url:
        register(api_url, tokens.staff(restaurant, sub="kill-staff"), restaurant, url)
        with notifier(settings, log_dir) as first:
            for version in range(1, 6):
                for order in orders[:20]:
                    ids += writer.order_events(restaurant, order, range(version, version + 1))
            writer.flush()
            wait_until(lambda: len(receiver.received) >= 30, 30, "deliveries under way")
            first.kill()
            killed_at = time.time()
        for version in range(1, 6):  # more events while it is down
            for order in orders[20:]:
                ids += writer.order_events(restaurant, order, range(version, version + 1))
        writer.flush()
        with notifier(settings, log_dir):
            wait_until(
                lambda: {str(e["id"]) for e in receiver.ok_events()} >= set(ids), 60, "every event"
            )
    received = [d.headers["webhook-id"] for d in receiver.received]
    twice = {i for i in received if received.count(i) > 1}
    # Only what was in flight at the kill is sent again: its first copy arrived before the kill.
    for event_id in twice:
        first_copy = next(d for d in receiver.received if d.headers["webhook-id"] == event_id)
        assert first_copy.received_at <= killed_at
    assert len(twice) <= settings.notifier_per_host_connections
    per_order = first_receipt_versions(receiver.ok_events())
    assert per_order == {str(o): [1, 2, 3, 4, 5] for o in orders}
    with psycopg.connect(settings.admin_url) as conn:
        row = conn.execute(
            "SELECT count(*), count(DISTINCT event_id) FROM webhook_attempts"
            " WHERE restaurant_id = %s AND status_code = 204",
            (restaurant,),
        ).fetchone()
    assert row == (len(ids), len(ids))  # each delivery recorded as delivered exactly once


@pytest.mark.parametrize(
    "url",
    [
        "http://10.0.0.1/hooks",
        "http://169.254.169.254/latest/meta-data",
        "http://100.64.0.1/",
        "http://192.168.1.10/",
        "http://[::1]:8080/",
        "http://0.0.0.0/",
        "ftp://127.0.0.1/",
        "http://user:secret@127.0.0.1/",
        "http://no-such-host.invalid/",
    ],
)
def test_ssrf_unsafe_urls_are_refused_at_registration(
    settings: Settings, api_url: str, tokens: Tokens, url: str
) -> None:
    restaurant = uuid.uuid4()
    response = httpx.post(
        f"{api_url}/webhooks/endpoints",
        json={"restaurant_id": str(restaurant), "url": url},
        headers={"Authorization": f"Bearer {tokens.staff(restaurant, sub='ssrf-staff')}"},
    )
    assert response.status_code == 422, response.text
    assert response.json()["type"] == "/problems/webhook-url-refused"


def test_ssrf_at_delivery_time_refused_address_and_redirects_not_followed(
    settings: Settings, api_url: str, tokens: Tokens, writer: EventWriter, log_dir: Path
) -> None:
    """A URL that resolves elsewhere by the time of delivery is refused then too (checked and
    connected to as checked), and a redirect is an answer, not a hop."""
    restaurant = uuid.uuid4()
    target = Receiver()
    with running_receiver(target) as target_url:
        redirector = Receiver(answer=lambda _d: Answer(302, headers=(("location", target_url),)))
        with (
            running_receiver(redirector) as redirect_url,
            notifier(settings, log_dir, webhook_disable_after_s=3600.0),
        ):
            token = tokens.staff(restaurant, sub="ssrf2-staff")
            redirecting = register(api_url, token, restaurant, redirect_url)
            private = str(uuid.uuid4())
            with psycopg.connect(settings.admin_url, autocommit=True) as conn:
                # As if DNS changed after registration: the stored URL now points inside.
                conn.execute(
                    "INSERT INTO webhook_endpoints (id, restaurant_id, url, secret, created_by)"
                    " VALUES (%s, %s, 'http://10.255.255.1/hooks', 'whsec_MDEyMzQ1Njc4OQ==', 't')",
                    (private, restaurant),
                )
            writer.order_events(restaurant, uuid.uuid4(), range(1, 2))
            writer.flush()
            wait_until(lambda: endpoint_state(settings, private)[1] >= 1, 30, "refused attempt")
            wait_until(lambda: len(redirector.received) >= 2, 30, "redirect retried")
        attempts = httpx.get(
            f"{api_url}/webhooks/endpoints/{private}/attempts",
            headers={"Authorization": f"Bearer {token}"},
        ).json()
        assert attempts[0]["status_code"] is None
        assert "10.255.255.1 is a private address" in attempts[0]["error"]
        assert target.received == []  # the redirect was never followed
        redirected = httpx.get(
            f"{api_url}/webhooks/endpoints/{redirecting['id']}/attempts",
            headers={"Authorization": f"Bearer {token}"},
        ).json()
        assert {a["status_code"] for a in redirected} == {302}


def test_another_restaurants_staff_cannot_see_or_change_an_endpoint(
    settings: Settings, api_url: str, tokens: Tokens
) -> None:
    mine, theirs = uuid.uuid4(), uuid.uuid4()
    owner = {"Authorization": f"Bearer {tokens.staff(mine, sub='owner-staff')}"}
    endpoint = register(
        api_url, tokens.staff(mine, sub="owner-staff"), mine, "http://127.0.0.1:9/x"
    )
    for other in (
        {"Authorization": f"Bearer {tokens.staff(theirs, sub='other-staff')}"},
        {"Authorization": f"Bearer {tokens.pos(theirs)}"},
    ):
        base = f"{api_url}/webhooks/endpoints"
        listed = httpx.get(base, params={"restaurant_id": str(mine)}, headers=other)
        assert listed.status_code == 200 and listed.json() == []
        eid = endpoint["id"]
        assert httpx.get(f"{base}/{eid}/attempts", headers=other).status_code == 404
        assert httpx.post(f"{base}/{eid}/rotate-secret", headers=other).status_code == 404
        assert (
            httpx.post(
                f"{base}/{eid}/recover", json={"since": "2020-01-01T00:00:00Z"}, headers=other
            ).status_code
            == 404
        )
        assert httpx.delete(f"{base}/{eid}", headers=other).status_code == 404
        created = httpx.post(
            base, json={"restaurant_id": str(mine), "url": "http://127.0.0.1:9/y"}, headers=other
        )
        assert created.status_code == 403
    # Staff of `mine` without a membership row: a token alone does not widen anything.
    stranger = {"Authorization": "Bearer " + tokens.staff(theirs, sub="stranger")}
    assert (
        httpx.get(
            f"{api_url}/webhooks/endpoints", params={"restaurant_id": str(mine)}, headers=stranger
        ).json()
        == []
    )
    # The endpoint is untouched and its own staff still manage it.
    listed = httpx.get(
        f"{api_url}/webhooks/endpoints", params={"restaurant_id": str(mine)}, headers=owner
    ).json()
    assert [e["id"] for e in listed] == [endpoint["id"]]
    assert "secret" not in listed[0]
    assert (
        httpx.delete(f"{api_url}/webhooks/endpoints/{endpoint['id']}", headers=owner).status_code
        == 204
    )
