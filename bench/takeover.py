"""How long replies stall on a killed worker's partitions (docs/instances.md). Two workers and an API
on an isolated database and topic prefix of the shared stack, a steady PATCH load, and one worker
killed with SIGKILL mid-load; per command partition, the longest gap between two answers.

Cases:
  a  the killed slot is not restarted: the survivor takes its partitions over once the group gives
     them away (session.timeout.ms, static membership) and fences its transactional.id;
  b  the killed slot is restarted at once with the same WORKER_ID: it fences its own predecessor in
     init_transactions and takes its partitions back without a rebalance;
  c  as a, without the fencing (WORKER_FENCE_DEPARTED_SLOTS=false): the survivor's read_committed
     reads wait for transaction.timeout.ms (and the broker's abort check) to end the open transaction.

Whether the kill found a transaction open is read afterwards: its aborted records are in the
results topic (read_uncommitted sees them, read_committed does not). Prints figures, no verdicts.

    python -m bench.takeover [--cases abc] [--rate 40] [--kill mid-transaction|signal]
        [--session-timeout-ms N] [--transaction-timeout-ms N] [--max-seconds 600]"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from itertools import pairwise
from pathlib import Path

import httpx

from services.adapters.kafka_records import header, read_to_end
from services.adapters.settings import Settings
from services.command_api.answers import COMMAND_ID_HEADER
from services.core.topics import HEADER_COMMAND_ID
from tests.stack import ServiceProcess, Tokens, isolated_settings

STATUSES = ("accepted", "preparing", "ready", "completed")
FAULT_BATCH = 60
"""The killed slot's batch at which it dies mid-transaction (a few seconds into the load)."""
PAUSE_S = 0.25
"""Between two commands of one order."""
WARM_UP_S = 6.0
AFTER_TAKEOVER_S = 4.0
"""Load goes on this long after the last killed partition answers again."""
CASE_LIMIT_S = 90.0
"""Past this after the kill a case ends, stalled or not (and says so)."""


@dataclass(frozen=True)
class Case:
    name: str
    what: str
    fencing: bool
    restart: bool


CASES = {
    "a": Case("a", "not restarted, survivor fences", fencing=True, restart=False),
    "b": Case("b", "restarted at once, same WORKER_ID", fencing=True, restart=True),
    "c": Case("c", "not restarted, no fencing", fencing=False, restart=False),
}


@dataclass
class Answer:
    command_id: str
    sent: float
    answered: float
    status: int


@dataclass
class Run:
    case: Case
    killed_at: float = 0.0
    answers: list[Answer] = field(default_factory=list)
    killed_partitions: set[int] = field(default_factory=set)
    partitions: dict[str, int] = field(default_factory=dict)
    """command id -> its commands partition (read from the topic afterwards)."""
    aborted_results: int = 0
    fences: list[dict[str, object]] = field(default_factory=list)
    timed_out: bool = False
    mid_transaction: bool = True
    killed_wall: float = 0.0
    """time.time() at the kill, to place the services' log lines."""
    reassigned: tuple[float, str] | None = None
    """From the kill to the assignment that gave the killed partitions to a live worker."""
    died_by_fault: bool = False


def log_events(process: ServiceProcess, evt: str) -> list[dict[str, object]]:
    marker = f'"evt":"{evt}"'
    return [json.loads(line) for line in process.logs().splitlines() if marker in line]


def latest_share(process: ServiceProcess) -> list[int]:
    assigned = log_events(process, "partitions_assigned")
    return list(assigned[-1]["partitions"]) if assigned else []  # type: ignore[call-overload]


@contextmanager
def services(
    settings: Settings, case: Case, log_dir: Path, mid_transaction: bool
) -> Iterator[list[ServiceProcess]]:
    """Worker slots 1 and 2 (slot 1 is the one to kill) and the API; all stopped afterwards."""
    started: list[ServiceProcess] = []
    fencing = {"worker_fence_departed_slots": case.fencing}
    death = {"worker_fault": "crash_before_kafka_commit", "worker_fault_batch": FAULT_BATCH}
    try:
        for slot in ("1", "2"):
            overrides = {**fencing, **(death if slot == "1" and mid_transaction else {})}
            worker = ServiceProcess(
                "worker", settings, log_dir, worker_id=slot, worker_metrics_port=0, **overrides
            )
            started.append(worker.start())
        deadline = time.monotonic() + 60
        while not all(
            0 < len(latest_share(w)) < settings.kafka_command_partitions for w in started
        ):
            if time.monotonic() > deadline:
                raise TimeoutError("the two workers never split the partitions")
            time.sleep(0.2)
        started.append(ServiceProcess("api", settings, log_dir).start())
        yield started
    finally:
        for process in reversed(started):
            process.kill()


async def walk(client: httpx.AsyncClient, restaurant: uuid.UUID, pause_s: float, run: Run) -> None:
    """One order through its statuses, one command at a time, `pause_s` between them."""
    sent = time.monotonic()
    created = await client.post("/orders", json={"restaurant_id": str(restaurant)})
    command_id = created.headers.get(COMMAND_ID_HEADER, "")
    run.answers.append(Answer(command_id, sent, time.monotonic(), created.status_code))
    if created.status_code != 201:
        return
    order = created.json()["order_id"]
    for status in STATUSES:
        await asyncio.sleep(pause_s)
        sent = time.monotonic()
        changed = await client.patch(f"/orders/{order}/status", json={"status": status})
        command_id = changed.headers.get(COMMAND_ID_HEADER, "")
        run.answers.append(Answer(command_id, sent, time.monotonic(), changed.status_code))
        if changed.status_code != 200:
            return


async def load(client: httpx.AsyncClient, restaurant: uuid.UUID, rate: float, run: Run) -> None:
    """Open loop: a new order every 1/(rate/5) s whatever the walks before it wait for, so the
    partitions that still answer keep getting commands while others stall."""
    walks: set[asyncio.Task[None]] = set()
    every_s = len(STATUSES) / rate + 1 / rate
    try:
        while True:
            task = asyncio.create_task(walk(client, restaurant, PAUSE_S, run))
            walks.add(task)
            task.add_done_callback(walks.discard)
            await asyncio.sleep(every_s)
    finally:
        for task in list(walks):
            task.cancel()
        await asyncio.gather(*walks, return_exceptions=True)


async def drive(
    settings: Settings, workers: list[ServiceProcess], log_dir: Path, rate: float, run: Run
) -> None:
    restaurant = uuid.uuid4()
    headers = {"Authorization": f"Bearer {Tokens(settings).staff(restaurant)}"}
    url = f"http://127.0.0.1:{settings.api_port}"
    doomed, survivor = workers[0], workers[1]
    limits = httpx.Limits(max_connections=1000)
    async with httpx.AsyncClient(
        base_url=url, headers=headers, timeout=120, limits=limits
    ) as client:
        generator = asyncio.create_task(load(client, restaurant, rate, run))
        run.killed_partitions = set(latest_share(doomed))
        await kill_mid_load(doomed, run)
        if run.case.restart:
            replacement = ServiceProcess(
                "worker", settings, log_dir, worker_id="1", worker_metrics_port=0
            )
            workers.append(replacement.start(wait=False))
        # Until every partition of the killed worker has answered a command sent after the kill.
        deadline = run.killed_at + CASE_LIMIT_S
        while time.monotonic() < deadline:
            await asyncio.sleep(1.0)
            if answered_again(run, settings) >= run.killed_partitions:
                break
        else:
            run.timed_out = True
        await asyncio.sleep(AFTER_TAKEOVER_S)
        generator.cancel()
        await asyncio.gather(generator, return_exceptions=True)
    run.fences = log_events(survivor, "worker_slot_fenced")
    run.reassigned = reassigned_after(run, workers[1:])


def reassigned_after(run: Run, live: list[ServiceProcess]) -> tuple[float, str] | None:
    """Seconds from the kill to the first assignment (logged) of a killed partition to a `live`
    worker, and that worker's slot ("1": the restarted one)."""
    times = [
        (
            datetime.fromisoformat(str(line["ts"])).timestamp() - run.killed_wall,
            w.settings.worker_id,
        )
        for w in live
        for line in log_events(w, "partitions_assigned")
        if run.killed_partitions & set(line["partitions"])  # type: ignore[call-overload]
    ]
    return min((t for t in times if t[0] > 0), default=None)


async def kill_mid_load(doomed: ServiceProcess, run: Run) -> None:
    """SIGKILL after the warm-up; or (mid-transaction) wait for the slot's injected death between
    its Kafka transaction's records and its commit, SIGKILL after all if it does not come."""
    assert doomed.process is not None
    deadline = time.monotonic() + (WARM_UP_S if not run.mid_transaction else WARM_UP_S + 30)
    while time.monotonic() < deadline and doomed.process.poll() is None:
        await asyncio.sleep(0.005)
    run.died_by_fault = doomed.process.poll() is not None
    run.killed_at, run.killed_wall = time.monotonic(), time.time()
    doomed.kill()


def answered_again(run: Run, settings: Settings) -> set[int]:
    """The partitions with a command sent after the kill and answered (read from the topic)."""
    late = [a for a in run.answers if a.sent > run.killed_at and a.status in (200, 201)]
    if not late:
        return set()
    run.partitions = command_partitions(settings)
    return {run.partitions[a.command_id] for a in late if a.command_id in run.partitions}


def command_partitions(settings: Settings) -> dict[str, int]:
    return {
        (header(m, HEADER_COMMAND_ID) or b"").decode(): int(m.partition() or 0)
        for m in read_to_end(settings, settings.topics.commands)
    }


def gaps(run: Run) -> dict[int, float]:
    """Per partition, the longest time without an answer, from the last one before the kill."""
    answered: dict[int, list[float]] = defaultdict(list)
    for answer in run.answers:
        partition = run.partitions.get(answer.command_id)
        if partition is not None and answer.status in (200, 201):
            answered[partition].append(answer.answered)
    longest = {}
    for partition, times in answered.items():
        times.sort()
        before = [t for t in times if t <= run.killed_at]
        after = [t for t in times if t > run.killed_at]
        start = before[-1] if before else run.killed_at
        stamps = [start, *after]
        longest[partition] = max((b - a for a, b in pairwise(stamps)), default=0.0)
    return longest


def run_case(base: Settings, case: Case, rate: float, log_dir: Path, mid_transaction: bool) -> Run:
    run = Run(case, mid_transaction=mid_transaction)
    # Replies wait for their outcome (no 504 at 5 s): a stalled command's answer marks the stall.
    # and uvicorn's 503 beyond API_LIMIT_CONCURRENCY is kept out of the way of the stalled requests.
    overrides = {"api_reply_timeout_s": 100.0, "api_limit_concurrency": 5000}
    with isolated_settings(base, kafka_command_partitions=6, **overrides) as settings:
        with services(settings, case, log_dir, mid_transaction) as workers:
            asyncio.run(drive(settings, workers, log_dir, rate, run))
        run.partitions = command_partitions(settings)
        committed = len(read_to_end(settings, settings.topics.results))
        everything = len(read_to_end(settings, settings.topics.results, committed_only=False))
        run.aborted_results = everything - committed
    return run


def report(runs: list[Run], base: Settings, rate: float) -> None:
    print(
        f"\nTakeover of a killed worker's partitions (2 workers, 1 API, ~{rate:.0f} commands/s, "
        f"6 partitions; session.timeout.ms {base.worker_session_timeout_ms}, "
        f"transaction.timeout.ms {base.worker_transaction_timeout_ms})"
    )
    print(
        f"{'case':<44} {'death':>8} {'open txn':>8} {'killed p.':>10} {'stall max':>9} {'stall min':>9} "
        f"{'others':>7} {'reassigned':>12} {'fenced':>7} {'p50 before':>10} {'non-2xx':>7}"
    )
    for run in runs:
        longest = gaps(run)
        killed = [longest[p] for p in sorted(run.killed_partitions) if p in longest]
        others = [g for p, g in longest.items() if p not in run.killed_partitions]
        before = [
            a.answered - a.sent
            for a in run.answers
            if a.answered < run.killed_at and a.status in (200, 201)
        ]
        reassigned = "-"
        if run.reassigned is not None:
            reassigned = f"{run.reassigned[0]:.1f}s to {run.reassigned[1]}"
        fence_ms = ",".join(f"{f.get('duration_ms')}ms" for f in run.fences) or "-"
        label = f"{run.case.name}  {run.case.what}" + ("  (CUT OFF)" if run.timed_out else "")
        print(
            f"{label:<44} {'fault' if run.died_by_fault else 'SIGKILL':>8} "
            f"{'yes' if run.aborted_results else 'no':>8} "
            f"{','.join(map(str, sorted(run.killed_partitions))):>10} "
            f"{max(killed, default=0):>8.1f}s {min(killed, default=0):>8.1f}s "
            f"{max(others, default=0):>6.1f}s {reassigned:>12} {fence_ms:>7} "
            f"{statistics.median(before) * 1000 if before else 0:>8.0f}ms "
            f"{sum(1 for a in run.answers if a.status not in (200, 201)):>7}"
        )
    print(
        "stall: per partition, the longest time between two answers from the last one before the "
        "kill; 'others': the survivor's own partitions (they pause for the rebalance too); open "
        "txn: the results topic holds aborted records; death: fault = died mid-transaction "
        "(crash_before_kafka_commit), SIGKILL = kill -9 wherever it was; reassigned: from the "
        "kill to the killed partitions' assignment to a live worker (its log), and its slot "
        "(2: the survivor, 1: the restarted slot)."
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", default="abc", help="which of a, b, c (default: all)")
    parser.add_argument("--rate", type=float, default=40.0, help="commands per second, about")
    parser.add_argument(
        "--kill",
        choices=("mid-transaction", "signal"),
        default="mid-transaction",
        help="mid-transaction: the slot dies (WORKER_FAULT crash_before_kafka_commit: os._exit, "
        "as kill -9 there) with its batch's records and offsets in an open transaction; signal: "
        "SIGKILL after the warm-up, wherever the worker is",
    )
    parser.add_argument(
        "--session-timeout-ms", type=int, default=0, help="the workers' (default: settings')"
    )
    parser.add_argument(
        "--transaction-timeout-ms", type=int, default=0, help="the workers' (default: settings')"
    )
    parser.add_argument("--logs", default="", help="keep the services' logs in this directory")
    parser.add_argument("--max-seconds", type=float, default=600.0, help="stop after this")
    args = parser.parse_args()
    base = Settings()
    timeouts = {
        "worker_session_timeout_ms": args.session_timeout_ms or base.worker_session_timeout_ms,
        "worker_transaction_timeout_ms": args.transaction_timeout_ms
        or base.worker_transaction_timeout_ms,
    }
    base = base.model_copy(update=timeouts)
    started = time.monotonic()
    runs = []
    with tempfile.TemporaryDirectory(prefix="takeover-") as temporary:
        logs = args.logs or temporary
        for name in args.cases:
            if time.monotonic() - started > args.max_seconds - CASE_LIMIT_S - 30:
                print(f"case {name} skipped: --max-seconds {args.max_seconds:.0f} would be passed")
                continue
            case = CASES[name]
            print(f"case {case.name}: {case.what} ...", flush=True)
            mid = args.kill == "mid-transaction"
            runs.append(run_case(base, case, args.rate, Path(logs), mid))
    report(runs, base, args.rate)


if __name__ == "__main__":
    main()
