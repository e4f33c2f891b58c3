"""Webhook notifier figures (issue 12): deliveries/s to a fast local receiver while another
endpoint of the same restaurant hangs on every request, and the time from an event's commit to
its first delivery attempt at a paced 500 events/s. Its own database and topics, a real notifier
process, receivers in a child process; every phase bounded in time. Prints figures (no pass/fail).

    .venv/bin/python -m bench.notifier [--events 20000] [--rate 500] [--seconds 20] [--json]"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import shutil
import socket
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import psycopg

from services.adapters.settings import Settings
from services.notifier.receiver import Answer, Delivery, start_receiver
from tests.stack import ServiceProcess, Tokens, free_port, isolated_settings
from tests.webhooks import EventWriter

VERSIONS = 5


def _serve_receivers(fast_port: int, hang_port: int) -> None:
    """Child process: a receiver answering 204 at once, and one that never answers."""
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass

    async def fast(_d: Delivery) -> Answer:
        return Answer(204)

    async def hang(_d: Delivery) -> Answer:
        await asyncio.sleep(3600)
        return Answer(204)

    async def main() -> None:
        servers = [
            await start_receiver(fast, "127.0.0.1", fast_port),
            await start_receiver(hang, "127.0.0.1", hang_port),
        ]
        await asyncio.gather(*(s.serve_forever() for s in servers))

    asyncio.run(main())


def _wait_listening(*ports: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    for port in ports:
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)


def _register(api: str, token: str, restaurant: uuid.UUID, url: str) -> str:
    response = httpx.post(
        f"{api}/webhooks/endpoints",
        json={"restaurant_id": str(restaurant), "url": url},
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    response.raise_for_status()
    return str(response.json()["id"])


def _delivered(conn: psycopg.Connection[Any], endpoint: str) -> tuple[int, float]:
    row = conn.execute(
        "SELECT count(*), coalesce(extract(epoch FROM max(attempted_at) - min(attempted_at)), 0)"
        " FROM webhook_attempts WHERE endpoint_id = %s AND status_code BETWEEN 200 AND 299",
        (endpoint,),
    ).fetchone()
    assert row is not None
    return int(row[0]), float(row[1])


def _first_attempt_lags(
    conn: psycopg.Connection[Any], endpoint: str, since: float
) -> list[tuple[float, float]]:
    """Per delivery: (event commit -> first attempt, event commit -> recorded by the notifier)."""
    rows = conn.execute(
        """SELECT extract(epoch FROM min(a.attempted_at) - d.event_time) * 1000,
                  extract(epoch FROM d.created_at - d.event_time) * 1000
           FROM webhook_attempts a JOIN webhook_deliveries d ON d.id = a.delivery_id
           WHERE a.endpoint_id = %s AND d.event_time >= to_timestamp(%s)
           GROUP BY d.id, d.event_time, d.created_at""",
        (endpoint, since),
    ).fetchall()
    return [(float(r[0]), float(r[1])) for r in rows]


def _percentiles(values: list[float]) -> dict[str, float | None]:
    values = sorted(values)
    q = statistics.quantiles(values, n=100) if len(values) > 1 else [0.0] * 99
    return {
        "p50": round(q[49], 1),
        "p95": round(q[94], 1),
        "p99": round(q[98], 1),
        "max": round(values[-1], 1) if values else None,
    }


def _produce_paced(writer: EventWriter, restaurant: uuid.UUID, rate: int, seconds: float) -> int:
    """`rate` events/s for `seconds`, 5 versions per order, in 10 ms ticks."""
    orders = [uuid.uuid4() for _ in range(int(rate * seconds / VERSIONS) + 1)]
    events = [(o, v) for o in orders for v in range(1, VERSIONS + 1)]
    # Interleave orders so each order's versions are spread over time, as real orders are.
    events.sort(key=lambda e: (e[1], orders.index(e[0]) if len(orders) < 2000 else 0))
    total = int(rate * seconds)
    started = time.monotonic()
    sent = 0
    while sent < total:
        due = min(total, int((time.monotonic() - started) * rate) + 1)
        while sent < due:
            order, version = events[sent]
            writer.order_events(restaurant, order, range(version, version + 1))
            sent += 1
        writer.producer.poll(0)
        time.sleep(0.005)
    writer.flush()
    return sent


def run(events: int, rate: int, seconds: float) -> dict[str, Any]:
    base = Settings()
    fast_port, hang_port = free_port(), free_port()
    receivers = multiprocessing.get_context("spawn").Process(
        target=_serve_receivers, args=(fast_port, hang_port), daemon=True
    )
    receivers.start()
    _wait_listening(fast_port, hang_port)
    figures: dict[str, Any] = {}
    with (
        isolated_settings(base, webhook_allowed_cidrs="127.0.0.0/8") as settings,
        tempfile.TemporaryDirectory(prefix="bench-notifier-") as logs,
    ):
        api = ServiceProcess("api", settings, Path(logs)).start()
        try:
            tokens = Tokens(settings)
            restaurant = uuid.uuid4()
            token = tokens.staff(restaurant, sub="bench")
            api_url = f"http://127.0.0.1:{settings.api_port}"
            fast = _register(api_url, token, restaurant, f"http://127.0.0.1:{fast_port}/in")
            _register(api_url, token, restaurant, f"http://127.0.0.1:{hang_port}/in")
            writer = EventWriter(settings)

            # Phase 1: a backlog of events, then the notifier drains it.
            orders = [uuid.uuid4() for _ in range(events // VERSIONS)]
            for version in range(1, VERSIONS + 1):
                for order in orders:
                    writer.order_events(restaurant, order, range(version, version + 1))
            writer.flush()
            total = len(orders) * VERSIONS
            notifier = ServiceProcess(
                "notifier",
                settings,
                Path(logs),
                notifier_metrics_port=free_port(),
                webhook_total_timeout_s=300.0,
                log_level=os.environ.get("BENCH_NOTIFIER_LOG_LEVEL", "INFO"),
            )
            started = time.monotonic()
            notifier.start()
            with psycopg.connect(settings.admin_url, autocommit=True) as conn:
                deadline = time.monotonic() + 180
                while _delivered(conn, fast)[0] < total and time.monotonic() < deadline:
                    time.sleep(0.5)
                done, span = _delivered(conn, fast)
                wall = time.monotonic() - started
                hung = conn.execute(
                    "SELECT count(*) FROM webhook_attempts WHERE endpoint_id <> %s", (fast,)
                ).fetchone()
                figures["drain"] = {
                    "events": total,
                    "delivered_to_fast_receiver": done,
                    "deliveries_per_s": round(done / span, 1) if span else None,
                    "wall_s_from_notifier_start": round(wall, 1),
                    "hanging_endpoint_attempts_finished": hung[0] if hung else None,
                }

                # Phase 2: paced events, each event's commit -> first attempt.
                since = time.time()
                sent = _produce_paced(writer, restaurant, rate, seconds)
                deadline = time.monotonic() + 60
                lags: list[tuple[float, float]] = []
                while time.monotonic() < deadline:
                    lags = _first_attempt_lags(conn, fast, since)
                    if len(lags) >= sent:
                        break
                    time.sleep(0.5)
            notifier.terminate()
            if os.environ.get("BENCH_NOTIFIER_LOG_LEVEL"):
                shutil.copy(notifier.log_path, Path(tempfile.gettempdir()) / "bench-notifier.log")
            figures["commit_to_first_attempt_ms"] = {
                "rate_per_s": rate,
                "events": sent,
                "attempted": len(lags),
                **_percentiles([first for first, _ in lags]),
                "of_which_commit_to_recorded": _percentiles([rec for _, rec in lags]),
            }
        finally:
            api.terminate()
            receivers.kill()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.notifier", description=__doc__)
    parser.add_argument("--events", type=int, default=20_000, help="phase 1 backlog")
    parser.add_argument("--rate", type=int, default=500, help="phase 2 events per second")
    parser.add_argument("--seconds", type=float, default=20, help="phase 2 duration")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    figures = run(args.events, args.rate, args.seconds)
    if args.json:
        print(json.dumps(figures))
        return
    drain, lag = figures["drain"], figures["commit_to_first_attempt_ms"]
    print(
        f"notifier drain: {drain['delivered_to_fast_receiver']}/{drain['events']} deliveries to the "
        f"fast receiver at {drain['deliveries_per_s']}/s (a hanging endpoint alongside; "
        f"{drain['hanging_endpoint_attempts_finished']} of its attempts finished)"
    )
    print(
        f"commit -> first attempt at {lag['rate_per_s']} events/s: p50 {lag['p50']} ms, "
        f"p95 {lag['p95']} ms, p99 {lag['p99']} ms, max {lag['max']} ms "
        f"({lag['attempted']}/{lag['events']} events); of which commit -> recorded: "
        f"p50 {lag['of_which_commit_to_recorded']['p50']} ms, "
        f"p95 {lag['of_which_commit_to_recorded']['p95']} ms"
    )


if __name__ == "__main__":
    main()
