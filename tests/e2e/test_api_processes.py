"""`orderstatus api` with API_PROCESSES=2: two processes on one port, each reading only its own
results partition (taken with `auto`), and every command answered by the process that sent it."""

from __future__ import annotations

import json
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from services.observability import slis
from tests.conftest import Stack
from tests.stack import ServiceProcess, Tokens, free_port

COMMANDS = 40


def test_two_api_processes_answer_every_command_from_their_own_partitions(
    stack: Stack, tokens: Tokens, log_dir: Path
) -> None:
    api = ServiceProcess(
        "api", stack.settings, log_dir, api_port=free_port(), api_processes=2
    ).start()
    try:
        restaurant = uuid.uuid4()
        headers = tokens.headers(restaurant)
        url = f"http://127.0.0.1:{api.settings.api_port}"

        def walk(_: int) -> list[int]:
            # New connections each time, so both processes get requests.
            with httpx.Client(base_url=url, headers=headers, timeout=15) as client:
                created = client.post("/orders", json={"restaurant_id": str(restaurant)})
                order = created.json()["order_id"]
                changed = client.patch(
                    f"/orders/{order}/status", json={"status": "accepted", "expected_version": 1}
                )
                return [created.status_code, changed.status_code]

        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(walk, range(COMMANDS // 2)))
        partitions = {
            line["partition"]
            for line in map(json.loads, api.logs().splitlines())
            if line.get("evt") == "reply_partition"
        }
        metrics = httpx.get(f"{url}/metrics", timeout=5).text
    finally:
        api.terminate()
    assert answers == [[201, 200]] * (COMMANDS // 2)
    assert len(partitions) == 2, partitions  # each process reads a partition of its own
    # /metrics sums both processes (prometheus-client multiprocess mode).
    served = sum(
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith(f"{slis.REQUESTS}{{") and 'route="/orders' in line
    )
    assert served >= COMMANDS
