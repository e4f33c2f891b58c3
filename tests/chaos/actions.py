"""The faults, and the rounds that inject them one after another while the load keeps running.

A round: a calm spell, the fault (each one undone after a short, random hold), then a wait until the
load makes progress again. No progress within STALL_AFTER_S is recorded as a stall (a hang)."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum

from tests.chaos.infra import ChaosInfra, Fleet
from tests.chaos.load import AnswerLog

STALL_AFTER_S = 90.0
CATCH_UP_S = 15.0
"""Longest extra calm before a round while the commands lag behind the rounds."""
PROGRESS_ANSWERS = 10
"""Answers with a known outcome after the fault is undone that show the system works again."""
PRIMARY, SECOND = "1", "2"


class FaultKind(StrEnum):
    WORKER_KILL = "worker-kill9"
    WORKER_TERM = "worker-sigterm"
    WORKER_ADD = "worker-add"
    WORKER_REMOVE = "worker-remove"
    BROKER_RESTART = "broker-restart"
    POSTGRES_RESTART = "postgres-restart"
    API_KILL = "api-kill9"


def fault_plan(
    rounds: int, rng: random.Random, kinds: Sequence[FaultKind] = tuple(FaultKind)
) -> list[FaultKind]:
    """Cycles through `kinds` in a shuffled order, adding the second worker before removing it
    within a cycle; so any `rounds` that is a multiple of len(kinds) has each kind equally."""
    plan: list[FaultKind] = []
    while len(plan) < rounds:
        cycle = list(kinds)
        rng.shuffle(cycle)
        if FaultKind.WORKER_ADD in cycle and FaultKind.WORKER_REMOVE in cycle:
            add, remove = cycle.index(FaultKind.WORKER_ADD), cycle.index(FaultKind.WORKER_REMOVE)
            if add > remove:
                cycle[add], cycle[remove] = cycle[remove], cycle[add]
        plan.extend(cycle)
    return plan[:rounds]


@dataclass
class RoundRecord:
    number: int
    kind: FaultKind
    detail: str
    down_s: float
    """From the fault to the faulty part being back (restarted and ready)."""
    recovered_s: float | None
    """From the part being back to the load making progress again; None: it stalled."""
    accepted_after: int


class FaultInjector:
    def __init__(self, infra: ChaosInfra, fleet: Fleet, rng: random.Random) -> None:
        self.infra = infra
        self.fleet = fleet
        self.rng = rng
        self.removals = 0

    def inject(self, kind: FaultKind) -> tuple[FaultKind, str]:
        """Causes the fault and undoes it (blocking); returns what was done. Adding a second
        worker that is already there removes it instead, and the other way round."""
        if kind is FaultKind.WORKER_ADD and SECOND in self.fleet.workers:
            kind = FaultKind.WORKER_REMOVE
        elif kind is FaultKind.WORKER_REMOVE and SECOND not in self.fleet.workers:
            kind = FaultKind.WORKER_ADD
        actions: dict[FaultKind, Callable[[], str]] = {
            FaultKind.WORKER_KILL: self.kill_worker,
            FaultKind.WORKER_TERM: self.terminate_worker,
            FaultKind.WORKER_ADD: self.add_worker,
            FaultKind.WORKER_REMOVE: self.remove_worker,
            FaultKind.BROKER_RESTART: self.restart_broker,
            FaultKind.POSTGRES_RESTART: self.restart_postgres,
            FaultKind.API_KILL: self.kill_api,
        }
        return kind, actions[kind]()

    def kill_worker(self) -> str:
        slot = self.rng.choice(sorted(self.fleet.workers))
        self.fleet.kill_worker(slot)
        hold = self._hold(0.0, 1.5)
        took = self.fleet.start_worker(slot)
        return f"worker {slot} killed, restarted after {hold:.1f}s, assigned in {took:.1f}s"

    def terminate_worker(self) -> str:
        slot = self.rng.choice(sorted(self.fleet.workers))
        code = self.fleet.stop_worker(slot)
        hold = self._hold(0.0, 1.0)
        took = self.fleet.start_worker(slot)
        return (
            f"worker {slot} stopped (exit {code}), back after {hold:.1f}s, assigned in {took:.1f}s"
        )

    def add_worker(self) -> str:
        took = self.fleet.start_worker(SECOND)
        return f"worker {SECOND} joined, assigned in {took:.1f}s"

    def remove_worker(self) -> str:
        self.removals += 1
        if self.removals % 2:
            self.fleet.kill_worker(SECOND)
            return f"worker {SECOND} killed (not replaced)"
        code = self.fleet.stop_worker(SECOND)
        return f"worker {SECOND} stopped (exit {code}, not replaced)"

    def kill_api(self) -> str:
        """kill -9 of the API mid-load: requests in flight lose their connection and are retried
        under their Idempotency-Key against the restarted API."""
        self.fleet.kill_api()
        hold = self._hold(0.0, 1.0)
        started = time.monotonic()
        self.fleet.start_api()
        return (
            f"API killed, restarted after {hold:.1f}s, ready in {time.monotonic() - started:.1f}s"
        )

    def restart_broker(self) -> str:
        self.infra.script("kafka", "stop")
        hold = self._hold(0.0, 2.0)
        self.infra.script("kafka", "start")
        return f"broker down {hold:.1f}s + start"

    def restart_postgres(self) -> str:
        self.infra.script("postgres", "stop")
        hold = self._hold(0.5, 3.0)
        self.infra.script("postgres", "start")
        return f"PostgreSQL down {hold:.1f}s + start"

    def _hold(self, low: float, high: float) -> float:
        hold = self.rng.uniform(low, high)
        time.sleep(hold)
        return hold


async def wait_for_progress(log: AnswerLog, answers: int, timeout_s: float) -> float | None:
    """Seconds until `answers` more requests ended with a known outcome; None when they did not."""
    started = time.monotonic()
    target = log.resolved + answers
    while log.resolved < target:
        if time.monotonic() - started > timeout_s:
            return None
        await asyncio.sleep(0.05)
    return time.monotonic() - started


@dataclass(frozen=True)
class Targets:
    rounds: int
    commands: int
    max_seconds: float
    kinds: tuple[FaultKind, ...] = tuple(FaultKind)
    calm_s: tuple[float, float] = (1.0, 3.0)


async def run_rounds(
    targets: Targets,
    injector: FaultInjector,
    log: AnswerLog,
    report: Callable[[RoundRecord], None],
    rng: random.Random,
) -> list[RoundRecord]:
    """The planned rounds, spread over the load: before each one, the commands are let catch up
    with the rounds (for at most CATCH_UP_S), and after the last the load runs on until the command
    target is met. All of it within `targets.max_seconds`."""
    started = time.monotonic()
    plan = fault_plan(targets.rounds, rng, targets.kinds)
    records: list[RoundRecord] = []

    def out_of_time() -> bool:
        return time.monotonic() - started > targets.max_seconds

    def commands_behind(rounds_done: int) -> bool:
        return log.accepted() / targets.commands < rounds_done / len(plan)

    for planned in plan:
        if out_of_time():
            break
        await asyncio.sleep(rng.uniform(*targets.calm_s))
        catch_up_until = time.monotonic() + CATCH_UP_S
        while commands_behind(len(records)) and time.monotonic() < catch_up_until:
            await asyncio.sleep(0.2)
        fault_at = time.monotonic()
        kind, detail = await asyncio.to_thread(injector.inject, planned)
        back_at = time.monotonic()
        recovered = await wait_for_progress(log, PROGRESS_ANSWERS, STALL_AFTER_S)
        if recovered is None:
            await asyncio.to_thread(injector.fleet.restart_workers)
        record = RoundRecord(
            len(records) + 1, kind, detail, back_at - fault_at, recovered, log.accepted()
        )
        records.append(record)
        report(record)
    while log.accepted() < targets.commands and not out_of_time():
        await asyncio.sleep(0.2)
    return records
