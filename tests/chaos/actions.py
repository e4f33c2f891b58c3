"""The faults, and the rounds that inject them one after another while the load keeps running.

A round: a calm spell, the fault (each one undone after a short, random hold), then a wait until the
load makes progress again. No progress within STALL_AFTER_S is recorded as a stall (a hang)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import random
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from enum import StrEnum
from typing import TypeVar

from tests.chaos.infra import ChaosInfra, ClusterNodes, Fleet, PartitionState
from tests.chaos.load import AnswerLog, ClientView, attempts_of, client_view

STALL_AFTER_S = 90.0
CATCH_UP_S = 15.0
"""Longest extra calm before a round while the commands lag behind the rounds."""
PROGRESS_ANSWERS = 10
"""Answers with a known outcome after the fault is undone that show the system works again."""
PRIMARY, SECOND = "1", "2"
LEADER_MOVE_TIMEOUT_S = 30.0
"""How long a killed leader's (or controller's) successor is looked for while it restarts."""
ISR_DROP_TIMEOUT_S = 45.0
"""How long a paused broker is left paused waiting for it to leave every ISR."""
IN_SYNC_TIMEOUT_S = 90.0
"""How long a round waits for every replica to be back in sync after a broker fault."""
POLL_S = 0.25
T = TypeVar("T")


class FaultKind(StrEnum):
    WORKER_KILL = "worker-kill9"
    WORKER_TERM = "worker-sigterm"
    WORKER_ADD = "worker-add"
    WORKER_REMOVE = "worker-remove"
    BROKER_RESTART = "broker-restart"
    POSTGRES_RESTART = "postgres-restart"
    API_KILL = "api-kill9"
    API_ADD = "api-add"
    API_REMOVE = "api-remove"
    LEADER_KILL = "leader-kill9"
    CONTROLLER_KILL = "controller-kill9"
    FOLLOWER_KILL = "follower-kill9"
    ISR_DROP = "isr-drop"


SINGLE_BROKER_KINDS: tuple[FaultKind, ...] = (
    FaultKind.WORKER_KILL,
    FaultKind.WORKER_TERM,
    FaultKind.WORKER_ADD,
    FaultKind.WORKER_REMOVE,
    FaultKind.BROKER_RESTART,
    FaultKind.POSTGRES_RESTART,
    FaultKind.API_KILL,
)
"""`make chaos`: one broker, which is restarted as a whole."""

CLUSTER_WEIGHTS: Mapping[FaultKind, int] = {
    FaultKind.LEADER_KILL: 6,
    FaultKind.ISR_DROP: 3,
    FaultKind.CONTROLLER_KILL: 1,
    FaultKind.FOLLOWER_KILL: 1,
    FaultKind.WORKER_KILL: 3,
    FaultKind.WORKER_TERM: 2,
    FaultKind.WORKER_ADD: 1,
    FaultKind.WORKER_REMOVE: 1,
    FaultKind.API_KILL: 3,
    FaultKind.API_ADD: 1,
    FaultKind.API_REMOVE: 1,
    FaultKind.POSTGRES_RESTART: 2,
}
"""`make chaos-cluster`: rounds per cycle of 25, so 100 rounds hold 24 leader kills and 12 ISR
drops (the targets are 20 and 10); the whole-broker restart is replaced by the node faults. A
broker kill costs a JVM start (20-60 s on the 2-core machine), so the other kinds fill the rest."""

CLUSTER_SHARES: Mapping[FaultKind, float] = {FaultKind.LEADER_KILL: 0.20, FaultKind.ISR_DROP: 0.10}
"""The targets of a cluster run: at least these shares of its rounds (20 and 10 in 100)."""

PAIRS = ((FaultKind.WORKER_ADD, FaultKind.WORKER_REMOVE), (FaultKind.API_ADD, FaultKind.API_REMOVE))
"""Each add comes before its remove."""


def fault_plan(
    rounds: int,
    rng: random.Random,
    kinds: Sequence[FaultKind] | Mapping[FaultKind, int] = SINGLE_BROKER_KINDS,
) -> list[FaultKind]:
    """`rounds` faults in cycles: a cycle holds each kind as often as its weight (1 for a plain
    sequence of kinds), the j-th of a kind of weight w at a random point of the j-th w-th of the
    cycle, so every prefix holds each kind in proportion (within two); an add is moved before its
    remove. With equal weights each cycle is a shuffle of the kinds."""
    weights = kinds if isinstance(kinds, Mapping) else dict.fromkeys(kinds, 1)
    cycle = sum(weights.values())
    cycles = -(-rounds // cycle)
    slots = sorted(
        ((j + rng.random()) / weight, kind.value)
        for kind, weight in weights.items()
        for j in range(weight * cycles)
    )
    plan = [FaultKind(value) for _, value in slots]
    for add, remove in PAIRS:
        at = [i for i, kind in enumerate(plan) if kind in (add, remove)]
        adds = sum(1 for i in at if plan[i] is add)
        removes = len(at) - adds
        for n, i in enumerate(at):  # add, remove, add, ... while both last
            plan[i] = add if adds > 0 and (removes == 0 or n % 2 == 0) else remove
            adds, removes = (adds - 1, removes) if plan[i] is add else (adds, removes - 1)
    return plan[:rounds]


def minimum_counts(rounds: int, shares: Mapping[FaultKind, float]) -> dict[FaultKind, int]:
    """Rounds of each kind a run of `rounds` must hold: 20 leader kills in 100, 2 in 10."""
    return {kind: int(rounds * share) for kind, share in shares.items()}


@dataclass
class RoundRecord:
    number: int
    kind: FaultKind
    detail: str
    down_s: float
    """From the fault to the faulty part being back (restarted and ready; brokers: in sync)."""
    recovered_s: float | None
    """From the part being back to the load making progress again; None: it stalled."""
    accepted_after: int
    started_at: float = 0.0
    """Unix time of the fault (the timeline the alert verdicts read)."""
    back_at: float = 0.0
    """Unix time the faulty part was back."""
    node: int | None = None
    """The broker acted on (cluster faults)."""
    moved_s: float | None = None
    """Leader or controller kill: from the kill until another node led (None: not seen)."""
    isr_drop_s: float | None = None
    """ISR drop: from SIGSTOP until the broker was out of every ISR (None: it never left)."""
    node_back_at: float | None = None
    """Broker kills: Unix time the node was restarted and every replica in sync again (it
    restarts in the background; None: not yet, or not a kill)."""
    client: ClientView | None = None
    """What the terminals saw from the fault until the load progressed again (leader moves)."""

    @property
    def recovered_at(self) -> float | None:
        """Unix time the load made progress again."""
        return None if self.recovered_s is None else self.back_at + self.recovered_s

    @property
    def counts(self) -> bool:
        """Whether the round did what its kind says (an ISR drop that was never seen does not)."""
        return self.kind is not FaultKind.ISR_DROP or self.isr_drop_s is not None


@dataclass
class FaultDone:
    kind: FaultKind
    detail: str
    node: int | None = None
    moved_s: float | None = None
    isr_drop_s: float | None = None
    restart: Future[str] | None = None
    """A killed node's restart, still under way when the round ends: the next broker fault waits
    for it (and for every replica in sync), the other kinds go on meanwhile."""


NODE_KINDS = frozenset(
    {
        FaultKind.LEADER_KILL,
        FaultKind.CONTROLLER_KILL,
        FaultKind.FOLLOWER_KILL,
        FaultKind.ISR_DROP,
    }
)
"""Faults of one broker: at most one at a time (a second would leave partitions with one replica,
fewer than min.insync.replicas)."""

CLIENT_VIEW_KINDS = frozenset({FaultKind.LEADER_KILL, FaultKind.CONTROLLER_KILL})
"""Rounds whose client view is kept: a leader (of partitions, or of the quorum) moves."""


class FaultInjector:
    def __init__(
        self,
        infra: ChaosInfra,
        fleet: Fleet,
        rng: random.Random,
        nodes: ClusterNodes | None = None,
    ) -> None:
        self.infra = infra
        self.fleet = fleet
        self.rng = rng
        self.nodes = nodes
        self.removals: Counter[str] = Counter()
        self._restarts = ThreadPoolExecutor(max_workers=1, thread_name_prefix="chaos-restart")
        self._restarting: Future[str] | None = None

    def settle(self) -> float:
        """Waits until a node restart under way is done and every replica is in sync again;
        returns the seconds waited (0 when there was none). Raises when the restart failed."""
        restarting, self._restarting = self._restarting, None
        if restarting is None:
            return 0.0
        started = time.monotonic()
        restarting.result()
        return time.monotonic() - started

    def close(self) -> None:
        try:
            self.settle()
        finally:
            self._restarts.shutdown()

    def inject(self, kind: FaultKind) -> FaultDone:
        """Causes the fault and undoes it (blocking); returns what was done. Adding a second
        worker (or API) that is already there removes it instead, and the other way round."""
        if kind is FaultKind.WORKER_ADD and SECOND in self.fleet.workers:
            kind = FaultKind.WORKER_REMOVE
        elif kind is FaultKind.WORKER_REMOVE and SECOND not in self.fleet.workers:
            kind = FaultKind.WORKER_ADD
        if kind is FaultKind.API_ADD and SECOND in self.fleet.apis:
            kind = FaultKind.API_REMOVE
        elif kind is FaultKind.API_REMOVE and SECOND not in self.fleet.apis:
            kind = FaultKind.API_ADD
        actions: dict[FaultKind, Callable[[], str | FaultDone]] = {
            FaultKind.WORKER_KILL: self.kill_worker,
            FaultKind.WORKER_TERM: self.terminate_worker,
            FaultKind.WORKER_ADD: self.add_worker,
            FaultKind.WORKER_REMOVE: self.remove_worker,
            FaultKind.BROKER_RESTART: self.restart_broker,
            FaultKind.POSTGRES_RESTART: self.restart_postgres,
            FaultKind.API_KILL: self.kill_api,
            FaultKind.API_ADD: self.add_api,
            FaultKind.API_REMOVE: self.remove_api,
            FaultKind.LEADER_KILL: self.kill_leader,
            FaultKind.CONTROLLER_KILL: self.kill_controller,
            FaultKind.FOLLOWER_KILL: self.kill_follower,
            FaultKind.ISR_DROP: self.drop_from_isr,
        }
        done = actions[kind]()
        return done if isinstance(done, FaultDone) else FaultDone(kind, done)

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
        return self._remove_second("worker", self.fleet.kill_worker, self.fleet.stop_worker)

    def _remove_second(
        self, what: str, kill: Callable[[str], None], stop: Callable[[str], int]
    ) -> str:
        """The second worker (or API) leaves, alternately killed and stopped."""
        self.removals[what] += 1
        if self.removals[what] % 2:
            kill(SECOND)
            return f"{what} {SECOND} killed (not replaced)"
        code = stop(SECOND)
        return f"{what} {SECOND} stopped (exit {code}, not replaced)"

    def kill_api(self) -> str:
        """kill -9 of an API process mid-load: requests in flight lose their connection and are
        retried under their Idempotency-Key against the restarted API (or the other one)."""
        slot = self.rng.choice(sorted(self.fleet.apis))
        self.fleet.kill_api(slot)
        hold = self._hold(0.0, 1.0)
        started = time.monotonic()
        self.fleet.start_api(slot)
        return (
            f"API {slot} killed, restarted after {hold:.1f}s, "
            f"ready in {time.monotonic() - started:.1f}s"
        )

    def add_api(self) -> str:
        started = time.monotonic()
        self.fleet.start_api(SECOND)
        return f"API {SECOND} added, ready in {time.monotonic() - started:.1f}s"

    def remove_api(self) -> str:
        """The terminals' requests in flight on the second API are retried on the first."""
        return self._remove_second("API", self.fleet.kill_api, self.fleet.stop_api)

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

    # ---- the cluster's faults ------------------------------------------------------------------

    def _cluster(self) -> ClusterNodes:
        if self.nodes is None:
            raise RuntimeError("a cluster fault on a single-broker run (use --cluster)")
        return self.nodes

    def _commands_partition(self) -> int:
        return self.rng.randrange(self.fleet.settings.kafka_command_partitions)

    def kill_leader(self) -> FaultDone:
        """kill -9 of the leader of a random commands partition; once another replica leads it,
        the node is started again and the round waits until every replica is back in sync."""
        nodes = self._cluster()
        topic, partition = self.fleet.settings.topics.commands, self._commands_partition()
        return self._kill_until_moved(
            FaultKind.LEADER_KILL,
            _ask(lambda: nodes.leader_of(topic, partition)),
            lambda: nodes.leader_of(topic, partition),
            f"leader of commands-{partition}",
        )

    def kill_controller(self) -> FaultDone:
        """kill -9 of the active controller (the KRaft quorum leader): another voter is elected;
        the node is restarted once it is (and rejoins as a voter)."""
        nodes = self._cluster()
        return self._kill_until_moved(
            FaultKind.CONTROLLER_KILL,
            nodes.handle.active_controller(timeout=LEADER_MOVE_TIMEOUT_S),
            nodes.active_controller,
            "active controller",
        )

    def _kill_until_moved(
        self, kind: FaultKind, node: int, leader: Callable[[], int], what: str
    ) -> FaultDone:
        """kill -9 of `node`, the one `leader()` names, and its restart after a short hold; while
        it starts (a JVM: longer than the controller takes to fence it), the time until
        `leader()` names another node (-1: none yet) is measured. Returns once the node is back
        and every replica is in sync."""
        nodes = self._cluster()
        killed = time.monotonic()
        nodes.kill(node)
        successor: list[int] = []

        def moved_on() -> bool:
            now = leader()
            if now not in (node, -1):
                successor.append(now)
            return bool(successor)

        hold = self.rng.uniform(0.0, 1.0)
        restart = self._restart_later(node, hold)
        _wait_for(lambda: moved_on() or restart.done(), LEADER_MOVE_TIMEOUT_S)
        moved = time.monotonic() - killed if successor else None
        if moved is None:
            moved_text = "no other node led it before the restart"
        else:
            moved_text = f"node {successor[0]} after {moved:.1f}s"
        return FaultDone(
            kind,
            f"{what} {node} killed; {moved_text}; restart after {hold:.1f}s",
            node=node,
            moved_s=moved,
            restart=restart,
        )

    def kill_follower(self) -> FaultDone:
        """kill -9 of a follower of a random commands partition (not its leader, and not the
        active controller when another follower will do), restarted after a short hold."""
        nodes = self._cluster()
        topic, partition = self.fleet.settings.topics.commands, self._commands_partition()
        node = self._follower(nodes, topic, partition)
        nodes.kill(node)
        hold = self.rng.uniform(0.5, 3.0)
        return FaultDone(
            FaultKind.FOLLOWER_KILL,
            f"follower {node} of commands-{partition} killed; restart after {hold:.1f}s",
            node=node,
            restart=self._restart_later(node, hold),
        )

    def drop_from_isr(self) -> FaultDone:
        """SIGSTOP of a follower of a random commands partition until it is out of the ISR of every
        partition it holds (its leaders' followers shrink the ISR after KAFKA_REPLICA_LAG_MAX_MS,
        and the controller fences it as the leader of its own partitions), then SIGCONT and a wait
        until it is back in every ISR."""
        nodes = self._cluster()
        topic, partition = self.fleet.settings.topics.commands, self._commands_partition()
        node = self._follower(nodes, topic, partition)
        paused = time.monotonic()
        nodes.pause(node)
        try:
            dropped = _wait_for(lambda: not holding(nodes.partitions(), node), ISR_DROP_TIMEOUT_S)
            drop_s = None if dropped is None else time.monotonic() - paused
        finally:
            nodes.resume(node)
        resumed = time.monotonic()
        synced = nodes.wait_in_sync(IN_SYNC_TIMEOUT_S)
        back = (
            "not back in sync"
            if synced is None
            else f"in sync {time.monotonic() - resumed:.1f}s later"
        )
        dropped_text = (
            f"out of every ISR after {drop_s:.1f}s"
            if drop_s is not None
            else f"still in an ISR after {ISR_DROP_TIMEOUT_S:.0f}s"
        )
        return FaultDone(
            FaultKind.ISR_DROP,
            f"broker {node} (follower of commands-{partition}) paused: {dropped_text}; resumed, {back}",
            node=node,
            isr_drop_s=drop_s,
        )

    def _follower(self, nodes: ClusterNodes, topic: str, partition: int) -> int:
        state = _ask(lambda: nodes.partition(topic, partition))
        followers = [n for n in state.replicas if n != state.leader] or list(state.replicas)
        controller = nodes.active_controller()
        return self.rng.choice([n for n in followers if n != controller] or followers)

    def _restart_later(self, node: int, hold: float) -> Future[str]:
        """Starts `node` again after `hold` seconds, in the background; see FaultDone.restart."""

        def restart() -> str:
            time.sleep(hold)
            return self._restart(node)

        self._restarting = self._restarts.submit(restart)
        return self._restarting

    def _restart(self, node: int) -> str:
        assert self.nodes is not None
        started = time.monotonic()
        try:
            self.nodes.start(node)
        except (RuntimeError, subprocess.TimeoutExpired) as failed:  # once more, from scratch
            self.fleet.unexpected_exits.append(f"broker {node} did not start: {str(failed)[-300:]}")
            with contextlib.suppress(RuntimeError):  # "not running" is what it should be
                self.nodes.kill(node)
            self.nodes.start(node)
        up = time.monotonic() - started
        synced = self.nodes.wait_in_sync(IN_SYNC_TIMEOUT_S)
        if synced is None:
            return f"up in {up:.1f}s, NOT in sync after {IN_SYNC_TIMEOUT_S:.0f}s"
        return f"up in {up:.1f}s, in sync {synced:.1f}s later"

    def _hold(self, low: float, high: float) -> float:
        hold = self.rng.uniform(low, high)
        time.sleep(hold)
        return hold


def holding(states: Sequence[PartitionState], node: int) -> list[PartitionState]:
    """The partitions whose ISR still holds `node`."""
    return [s for s in states if node in s.isrs]


def _ask(question: Callable[[], T], timeout_s: float = 30.0) -> T:
    """`question()`, asked again while it raises (metadata while the nodes move), for a while."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return question()
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(POLL_S)


def _wait_for(condition: Callable[[], bool], timeout_s: float) -> float | None:
    """Seconds until `condition()` held (polled); None when it did not within `timeout_s`. A
    condition that raises (a broker not answering metadata) counts as not yet."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        try:
            if condition():
                return time.monotonic() - started
        except Exception:  # a metadata request to a dying node: try again
            pass
        time.sleep(POLL_S)
    return None


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
    kinds: Sequence[FaultKind] | Mapping[FaultKind, int] = SINGLE_BROKER_KINDS
    """The kinds, or (cluster) the kinds with their weights; see fault_plan."""
    calm_s: tuple[float, float] = (1.0, 3.0)


async def run_rounds(
    targets: Targets,
    injector: FaultInjector,
    log: AnswerLog,
    report: Callable[[RoundRecord], None],
    rng: random.Random,
    report_back: Callable[[RoundRecord, str], None] | None = None,
) -> list[RoundRecord]:
    """The planned rounds, spread over the load: before each one, the commands are let catch up
    with the rounds (for at most CATCH_UP_S), and after the last the load runs on until the command
    target is met. All of it within `targets.max_seconds`. A killed broker restarts in the
    background while the next rounds go on; a broker fault first waits for it (`report_back` hears
    of each restart done)."""
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
        if planned in NODE_KINDS:
            await asyncio.to_thread(injector.settle)
        fault_at, fault_wall = time.monotonic(), time.time()
        done = await asyncio.to_thread(injector.inject, planned)
        back_at, back_wall = time.monotonic(), time.time()
        recovered = await wait_for_progress(log, PROGRESS_ANSWERS, STALL_AFTER_S)
        if recovered is None:
            await asyncio.to_thread(injector.fleet.restart_workers)
        client = None
        if done.kind in CLIENT_VIEW_KINDS:
            client = client_view(attempts_of(log.requests), [(fault_wall, time.time())])
        record = RoundRecord(
            len(records) + 1,
            done.kind,
            done.detail,
            back_at - fault_at,
            recovered,
            log.accepted(),
            started_at=fault_wall,
            back_at=back_wall,
            node=done.node,
            moved_s=done.moved_s,
            isr_drop_s=done.isr_drop_s,
            client=client,
        )
        records.append(record)
        report(record)
        if done.restart is not None:
            done.restart.add_done_callback(functools.partial(_node_back, record, report_back))
    await asyncio.to_thread(injector.settle)
    while log.accepted() < targets.commands and not out_of_time():
        await asyncio.sleep(0.2)
    return records


def _node_back(
    record: RoundRecord,
    report_back: Callable[[RoundRecord, str], None] | None,
    restart: Future[str],
) -> None:
    if restart.exception() is not None:
        return  # settle() raises it
    record.node_back_at = time.time()
    record.detail += f"; {restart.result()}"
    if report_back is not None:
        report_back(record, restart.result())
