"""The API stays up under a slowloris and under a flood of refused commands, on loopback and
bounded in time (issue 10, scenario 7): slow request heads are cut off after API_HEADER_TIMEOUT_S
while real requests keep being answered; a flood of commands any token holder can have refused
leaves rows that the retention purge (`orderstatus purge`) removes, and nothing else."""

from __future__ import annotations

import asyncio
import select
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from services.command_api.auth import mint_token
from tests.conftest import Stack
from tests.stack import ORDERSTATUS, ServiceProcess, Tokens, free_port, settings_env

SLOW_CONNECTIONS = 150
HEADER_TIMEOUT_S = 2.0
BOUND_S = 30.0
"""Longest the slowloris runs: a bound on the test, not a performance claim."""
FLOOD_S = 8.0
FLOOD_CONCURRENCY = 16


@pytest.fixture
def bounded_api(stack: Stack, log_dir: Path) -> Iterator[ServiceProcess]:
    api = ServiceProcess(
        "api",
        stack.settings,
        log_dir,
        api_port=free_port(),
        api_header_timeout_s=HEADER_TIMEOUT_S,
        api_limit_concurrency=4 * SLOW_CONNECTIONS,
    ).start()
    yield api
    api.terminate()


def test_a_slowloris_is_cut_off_and_the_api_keeps_answering(
    bounded_api: ServiceProcess, tokens: Tokens
) -> None:
    port = bounded_api.settings.api_port
    slow: list[socket.socket] = []
    for _ in range(SLOW_CONNECTIONS):
        conn = socket.create_connection(("127.0.0.1", port), timeout=5)
        conn.sendall(b"GET /readyz HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # the head never ends
        conn.setblocking(False)
        slow.append(conn)
    closed: set[int] = set()
    answered: list[int] = []
    headers = tokens.headers(uuid.uuid4(), sub="slowloris-bystander")
    deadline = time.monotonic() + BOUND_S
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            while len(closed) < len(slow) and time.monotonic() < deadline:
                for n, conn in enumerate(slow):
                    if n in closed:
                        continue
                    try:
                        conn.send(b"X-Slow: 1\r\n")  # one more header line, never the end
                        readable, _, _ = select.select([conn], [], [], 0)
                        if readable and conn.recv(1024) == b"":
                            closed.add(n)
                    except OSError:  # reset / broken pipe: closed by the server
                        closed.add(n)
                answered.append(client.get(f"/orders/{uuid.uuid4()}", headers=headers).status_code)
                answered.append(client.get("/readyz").status_code)
                time.sleep(0.2)
    finally:
        for conn in slow:
            conn.close()
    assert len(closed) == SLOW_CONNECTIONS  # every slow head cut off (none within the bound: 0)
    assert answered and set(answered) <= {200, 404}, answered  # real requests answered throughout


def test_a_flood_of_refused_commands_leaves_rows_the_purge_removes(
    stack: Stack, api: httpx.Client, tokens: Tokens
) -> None:
    own, foreign = uuid.uuid4(), uuid.uuid4()
    legit = tokens.headers(own, sub="flood-bystander")
    # A valid token narrowed to a restaurant its holder is no staff of: every command is refused.
    flooder = {
        "Authorization": "Bearer "
        + mint_token(stack.settings, sub="flooder", restaurant_ids=[foreign])
    }

    async def flood() -> list[int]:
        codes: list[int] = []
        stop = time.monotonic() + FLOOD_S
        async with httpx.AsyncClient(base_url=stack.url, timeout=30) as client:

            async def one() -> None:
                while time.monotonic() < stop:
                    r = await client.post(
                        "/orders", json={"restaurant_id": str(foreign)}, headers=flooder
                    )
                    codes.append(r.status_code)

            await asyncio.gather(*(one() for _ in range(FLOOD_CONCURRENCY)))
        return codes

    async def bystander() -> list[int]:
        codes: list[int] = []
        stop = time.monotonic() + FLOOD_S
        async with httpx.AsyncClient(base_url=stack.url, timeout=30) as client:
            while time.monotonic() < stop:
                created = await client.post(
                    "/orders", json={"restaurant_id": str(own)}, headers=legit
                )
                codes.append(created.status_code)
                if created.status_code == 201:
                    changed = await client.patch(
                        f"/orders/{created.json()['order_id']}/status",
                        json={"status": "accepted", "expected_version": 1},
                        headers=legit,
                    )
                    codes.append(changed.status_code)
                codes.append((await client.get("/readyz")).status_code)
        return codes

    async def both() -> tuple[list[int], list[int]]:
        flooded, served = await asyncio.gather(flood(), bystander())
        return flooded, served

    flooded, served = asyncio.run(both())
    assert flooded and set(flooded) == {403}, set(flooded)
    assert served and set(served) <= {200, 201}, served  # the bystander was served throughout

    with stack.db() as db:
        outcomes = db.execute(
            "SELECT count(*) FROM command_outcomes WHERE actor_sub = 'flooder'"
        ).fetchone()
        widgets = db.execute(
            "SELECT count(*) FROM widget_events WHERE payload ->> 'actor' = 'flooder'"
        ).fetchone()
        assert outcomes == (len(flooded),) and widgets == (
            len(flooded),
        )  # one row each per command
        kept = db.execute(
            "SELECT count(*) FROM command_outcomes WHERE actor_sub = 'flood-bystander'"
        ).fetchone()
        # The flood is 9 days old now: past RETENTION_REFUSED_DAYS (8), within the rest's (30).
        db.execute(
            "UPDATE command_outcomes SET created_at = now() - interval '9 days' "
            "WHERE actor_sub IN ('flooder', 'flood-bystander')"
        )
        db.execute(
            "UPDATE widget_events SET created_at = now() - interval '40 days' "
            "WHERE payload ->> 'actor' = 'flooder'"
        )

    purged = subprocess.run(
        [ORDERSTATUS, "purge"], env=settings_env(stack.settings), capture_output=True, text=True
    )
    assert purged.returncode == 0, purged.stderr
    assert purged.stdout.strip() == (
        f"purged {len(flooded)} command outcomes, {len(flooded)} widget events"
    )
    with stack.db() as db:
        assert db.execute(
            "SELECT count(*) FROM command_outcomes WHERE actor_sub = 'flooder'"
        ).fetchone() == (0,)
        assert (
            db.execute(
                "SELECT count(*) FROM command_outcomes WHERE actor_sub = 'flood-bystander'"
            ).fetchone()
            == kept
        )  # applied outcomes are kept longer


def test_the_api_process_runs_the_purge_periodically(stack: Stack, log_dir: Path) -> None:
    old, fresh = uuid.uuid4(), uuid.uuid4()
    with stack.db() as db:
        for command_id, age in ((old, "9 days"), (fresh, "2 hours")):
            db.execute(
                """INSERT INTO command_outcomes
                   (command_id, order_id, command_type, outcome, result, created_at)
                   VALUES (%s, %s, 'change_status', 'forbidden', '{}', now() - %s::interval)""",
                (command_id, uuid.uuid4(), age),
            )
    api = ServiceProcess(
        "api", stack.settings, log_dir, api_port=free_port(), retention_purge_every_s=0.5
    ).start()
    try:
        deadline = time.monotonic() + BOUND_S
        while True:
            with stack.db() as db:
                left = {
                    row[0]
                    for row in db.execute(
                        "SELECT command_id FROM command_outcomes WHERE command_id = ANY(%s)",
                        ([old, fresh],),
                    )
                }
            if old not in left:
                break
            assert time.monotonic() < deadline, "the API process never purged"
            time.sleep(0.2)
    finally:
        api.terminate()
    assert left == {fresh}
    assert '"evt":"retention_purged"' in api.logs()


def test_beyond_the_concurrency_limit_the_api_answers_503_and_recovers(
    stack: Stack, log_dir: Path
) -> None:
    """API_LIMIT_CONCURRENCY: more open connections than the limit get a fast 503 from uvicorn (no
    crash, no unbounded queue); once the idle ones are cut off (head timeout) it answers again."""
    limit = 20
    api = ServiceProcess(
        "api",
        stack.settings,
        log_dir,
        api_port=free_port(),
        api_limit_concurrency=limit,
        api_header_timeout_s=HEADER_TIMEOUT_S,
    ).start()
    port = api.settings.api_port
    idle = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(limit + 5)]
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            over = client.get("/readyz")
            deadline = time.monotonic() + BOUND_S
            while (after := client.get("/readyz")).status_code != 200:
                assert time.monotonic() < deadline, "the API never recovered"
                time.sleep(0.2)
    finally:
        for conn in idle:
            conn.close()
        api.terminate()
    assert over.status_code == 503
    assert after.status_code == 200
