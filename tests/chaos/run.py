"""`make chaos` / `python -m tests.chaos.run`: fault rounds under load, then the checker's verdict.

Starts its own Kafka broker and PostgreSQL under .local/chaos/<run>/ on free loopback ports, an API
and a worker on them, drives the load while the rounds run, removes the second worker, waits until
every command has been processed, checks, prints the figures, and stops everything (also on Ctrl-C
or a failure). Exits 0 only when nothing was lost, duplicated or reordered, no key created a second order,
every answer agrees with what was stored, every request got a known final answer, no 409 came
unprovoked, no round stalled and the targets (rounds, commands) were met."""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import signal
import statistics
import sys
import time
import uuid
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType

from rich.console import Console
from rich.table import Table

from services.adapters.settings import Settings
from tests.chaos.actions import (
    CLIENT_VIEW_KINDS,
    CLUSTER_SHARES,
    CLUSTER_WEIGHTS,
    SECOND,
    SINGLE_BROKER_KINDS,
    FaultInjector,
    FaultKind,
    RoundRecord,
    Targets,
    minimum_counts,
    run_rounds,
)
from tests.chaos.alert_drills import Drills
from tests.chaos.alert_verdicts import AlertVerdict
from tests.chaos.alerts import AlertWatch, print_alerts
from tests.chaos.checker import Verdict, check, collect, wait_until_drained
from tests.chaos.infra import CHAOS_ROOT, KEEP_DATA_MARK, ChaosInfra, Fleet
from tests.chaos.load import AnswerLog, ClientView, attempts_of, client_view, drive
from tests.stack import Tokens

RESTAURANTS = 5
SUPERVISE_EVERY_S = 1.0
NOTES_SHOWN = 12
FINDINGS = (
    "lost",
    "duplicated",
    "out_of_order",
    "duplicate_orders",
    "inconsistent",
    "disagreements",
)
API_REPLY_TIMEOUT_S = 3.0
"""Shorter than the default, so faults produce 504s and the retry/look-up paths get exercised."""


CLUSTER_BROKERS = 3
CLUSTER_TERMINALS = 24
"""More terminals than on one broker: during a leader move each waits seconds for its answer."""
CLUSTER_MAX_MINUTES = 40.0
"""A broker kill costs a JVM start (20-60 s here) and 10-15 s without a leader, and the load ran
at 8.5 commands/s (60 rounds, 10,000 commands in 20 minutes) on the shared 2-core machine: the
full targets take about 40 minutes there."""


@dataclass(frozen=True)
class ChaosConfig:
    rounds: int = 100
    commands: int = 20_000
    terminals: int = 16
    max_minutes: float = 25.0
    seed: int = field(default_factory=lambda: random.randrange(1_000_000))
    kinds: tuple[FaultKind, ...] = ()
    """The fault kinds to inject; empty: all of the run's (single broker, or cluster)."""
    keep_data: bool = False
    parent: Path = CHAOS_ROOT
    drills: bool = False
    """After the rounds, hold each must-page fault past its alert's `for:` (alert_drills.py)."""
    cluster: bool = False
    """Three brokers (KRaft), topics with replication factor 3 and min.insync.replicas 2, and the
    node faults (leader, controller, follower kills, ISR drops) instead of the broker restart."""

    @property
    def weights(self) -> dict[FaultKind, int]:
        """The kinds of the plan with their weight per cycle (fault_plan)."""
        if self.cluster:
            return {k: CLUSTER_WEIGHTS.get(k, 1) for k in self.kinds or CLUSTER_WEIGHTS}
        return dict.fromkeys(self.kinds or SINGLE_BROKER_KINDS, 1)

    @property
    def minimums(self) -> dict[FaultKind, int]:
        """Rounds of a kind the run must hold (cluster: 20 leader kills, 10 ISR drops in 100)."""
        if not self.cluster:
            return {}
        return {
            kind: n
            for kind, n in minimum_counts(self.rounds, CLUSTER_SHARES).items()
            if kind in self.weights
        }


@dataclass
class ChaosResult:
    config: ChaosConfig
    run_dir: Path
    rounds: list[RoundRecord]
    verdict: Verdict
    answers: Counter[str]
    unexpected_exits: list[str]
    slow_starts: list[str]
    seconds: float
    load_seconds: float
    drain_seconds: float | None
    """None: the worker group never caught up."""
    client: dict[str, ClientView] = field(default_factory=dict)
    """What the terminals saw while a leader moved, over all rounds of each such kind."""
    metrics_ports: dict[str, int] = field(default_factory=dict)
    """Where each process of the run served /metrics ("api-1", "worker-2", "broker-3")."""
    alerts: AlertVerdict | None = None
    """Which alerts the faults fired (alert_verdicts.py); a page owed and missed fails the run."""
    alerts_report: dict[str, object] = field(default_factory=dict)

    @property
    def stalls(self) -> int:
        return sum(1 for r in self.rounds if r.recovered_s is None)

    def count(self, kind: FaultKind) -> int:
        """Rounds of `kind` that did what it says (an ISR drop: the broker left every ISR)."""
        return sum(1 for r in self.rounds if r.kind is kind and r.counts)

    @property
    def every_kind_required(self) -> bool:
        """A cluster run shorter than one cycle of its plan need not hold every kind."""
        return not self.config.cluster or self.config.rounds >= sum(self.config.weights.values())

    @property
    def targets_met(self) -> bool:
        kinds = self.config.weights if self.every_kind_required else {}
        return (
            len(self.rounds) >= self.config.rounds
            and self.verdict.accepted >= self.config.commands
            and all(any(r.kind is kind for r in self.rounds) for kind in kinds)
            and all(self.count(k) >= n for k, n in self.config.minimums.items())
        )

    @property
    def passed(self) -> bool:
        return (
            self.verdict.passed
            and self.stalls == 0
            and self.targets_met
            and self.drain_seconds is not None
            and (self.alerts is None or self.alerts.passed)
        )


def run_chaos(config: ChaosConfig, console: Console | None = None) -> ChaosResult:
    console = console or Console()
    started = time.monotonic()
    infra = ChaosInfra.create(config.parent, CLUSTER_BROKERS if config.cluster else 1)
    console.print(f"[bold]chaos run[/] {infra.root}  seed={config.seed}")
    try:
        infra.start()
        kafka = "cluster" if config.cluster else "broker"
        console.print(f"own {kafka} {infra.bootstrap}, own PostgreSQL 127.0.0.1:{infra.pg_port}")
        settings = infra.prepare(api_reply_timeout_s=API_REPLY_TIMEOUT_S)
        api_slots = Fleet.SLOTS if config.cluster else Fleet.SLOTS[:1]
        fleet = Fleet(settings, infra.services_log_dir, api_slots)
        watch = AlertWatch.of_run(infra.root, fleet, broker_metrics_ports(infra))
        try:
            return _run(config, infra, settings, fleet, console, started, watch)
        finally:
            watch.stop()
            fleet.stop()
    finally:
        infra.stop()
        if config.keep_data:
            (infra.root / KEEP_DATA_MARK).touch()
        else:
            infra.remove_data()


def _run(
    config: ChaosConfig,
    infra: ChaosInfra,
    settings: Settings,
    fleet: Fleet,
    console: Console,
    started: float,
    watch: AlertWatch,
) -> ChaosResult:
    rng = random.Random(config.seed)
    fleet.start_worker("1")
    fleet.start_api()
    watch.start()  # Prometheus, scraping the fleet and the brokers (tests/chaos/alerts.py)
    tokens = Tokens(settings)
    log = AnswerLog()
    targets = Targets(config.rounds, config.commands, config.max_minutes * 60, config.weights)
    nodes = infra.cluster(settings) if config.cluster else None

    def report(record: RoundRecord) -> None:
        recovered = f"{record.recovered_s:5.1f}s" if record.recovered_s is not None else "STALL"
        console.print(
            f"round {record.number:3d}  {record.kind.value:<19} back {record.down_s:5.1f}s  "
            f"progress {recovered}  commands {record.accepted_after:6d}  {record.detail}",
            highlight=False,
        )
        if record.client is not None:
            console.print(f"           client saw: {describe(record.client)}", highlight=False)

    def report_back(record: RoundRecord, how: str) -> None:
        console.print(f"           node {record.node} of round {record.number} back: {how}")

    async def faults(stop: asyncio.Event) -> list[RoundRecord]:
        injector = FaultInjector(infra, fleet, rng, nodes)
        try:
            rounds = await run_rounds(targets, injector, log, report, rng, report_back)
            if SECOND in fleet.workers:  # back to one worker for the drain
                await asyncio.to_thread(fleet.stop_worker, SECOND)
            return rounds
        finally:
            stop.set()
            await asyncio.to_thread(
                injector.close
            )  # the terminals finish the request in hand (bounded by its budget)

    async def restart_policy(load_done: asyncio.Event) -> None:
        """Until the last terminal has finished: a worker that dies while the terminals finish
        the requests in hand is restarted too, or they would wait out their whole budgets."""
        while not load_done.is_set():
            await asyncio.to_thread(fleet.supervise)
            await asyncio.sleep(SUPERVISE_EVERY_S)

    async def load(
        stop: asyncio.Event, load_done: asyncio.Event, restaurants: list[uuid.UUID]
    ) -> None:
        try:
            await drive(
                fleet.endpoints,
                [tokens.service(sub=f"chaos-terminal-{n}") for n in range(config.terminals)],
                restaurants,
                log,
                stop,
                run_tag=f"chaos{config.seed}",
                seed=config.seed,
            )
        finally:
            load_done.set()

    async def scenario() -> tuple[list[RoundRecord], float]:
        stop, load_done = asyncio.Event(), asyncio.Event()
        restaurants = [uuid.UUID(int=rng.getrandbits(128)) for _ in range(RESTAURANTS)]
        load_started = time.monotonic()
        rounds, *_ = await asyncio.gather(
            faults(stop), restart_policy(load_done), load(stop, load_done, restaurants)
        )
        return rounds, time.monotonic() - load_started

    rounds, load_seconds = asyncio.run(scenario())
    fleet.supervise()
    console.print("load stopped; waiting for the worker to drain")
    drain_seconds = _drain(settings, fleet, console)
    verdict = check(collect(settings, log.requests))
    drills = Drills(infra, fleet, settings, watch.prometheus, tokens.service(sub="alert-drill"))
    alerts = watch.judge(rounds, drills.run if config.drills else None)
    result = ChaosResult(
        config,
        infra.root,
        rounds,
        verdict,
        log.statuses,
        fleet.unexpected_exits,
        fleet.slow_starts,
        time.monotonic() - started,
        load_seconds,
        drain_seconds,
        client_views(log, rounds),
        {**fleet.metrics_ports(), **broker_metrics_ports(infra)},
        alerts,
        watch.report(alerts),
    )
    _write_report(result)
    return result


def client_views(log: AnswerLog, rounds: list[RoundRecord]) -> dict[str, ClientView]:
    """Per kind whose rounds move a leader: the client's figures over all its rounds' windows
    (from the fault until the load progressed again)."""
    views: dict[str, ClientView] = {}
    for kind in sorted(CLIENT_VIEW_KINDS):
        windows = [
            (r.started_at, r.recovered_at or r.back_at)
            for r in rounds
            if r.kind is kind and r.client is not None
        ]
        if windows:
            views[kind.value] = client_view(attempts_of(log.requests), windows)
    return views


def broker_metrics_ports(infra: ChaosInfra) -> dict[str, int]:
    return {f"broker-{n}": port for n, port in enumerate(infra.metrics_ports, start=1)}


def describe(view: ClientView) -> str:
    """One line: answers by status, latency, the longest stretch without a 2xx."""
    answers = " ".join(f"{status}x{n}" for status, n in view.answers.items()) or "no answers"

    def ms(value: float | None) -> str:
        return "-" if value is None else f"{value:.0f}"

    return (
        f"{answers}; latency p50/p95/max {ms(view.p50_ms)}/{ms(view.p95_ms)}/{ms(view.max_ms)} ms;"
        f" longest without a 2xx {view.longest_gap_2xx_s:.1f}s of {view.window_s:.1f}s"
    )


def _drain(settings: Settings, fleet: Fleet, console: Console) -> float | None:
    """Seconds until the worker group committed every offset; None when it never did (then the
    checker reports what is missing). A worker hung at this point gets one restart."""
    try:
        return wait_until_drained(settings)
    except TimeoutError:
        console.print("[bold red]not drained[/]: restarting the workers once")
        fleet.unexpected_exits.append("not drained after the load: workers restarted")
        fleet.restart_workers()
    try:
        return wait_until_drained(settings)
    except TimeoutError:
        return None


def _write_report(result: ChaosResult) -> None:
    verdict = result.verdict
    report = {
        "seed": result.config.seed,
        "cluster": result.config.cluster,
        "passed": result.passed,
        "targets_met": result.targets_met,
        "seconds": round(result.seconds, 1),
        "rounds": [asdict(r) | {"recovered_at": r.recovered_at} for r in result.rounds],
        "client_while_leader_moves": {k: asdict(v) for k, v in result.client.items()},
        "metrics_ports": result.metrics_ports,
        "alerts": result.alerts_report,
        "accepted": verdict.accepted,
        "published": verdict.published,
        "outcomes": dict(verdict.outcomes),
        "final_answers": dict(verdict.final_answers),
        "answers": dict(result.answers),
        "findings": {name: asdict(getattr(verdict, name)) for name in FINDINGS},
        "unresolved": verdict.unresolved,
        "unexpected_conflicts": dict(verdict.unexpected_conflicts),
        "unexpected_exits": result.unexpected_exits,
        "slow_starts": result.slow_starts,
    }
    (result.run_dir / "report.json").write_text(json.dumps(report, indent=2, default=str))


def print_summary(result: ChaosResult, console: Console) -> None:
    verdict = result.verdict
    rounds = Table(title="Fault rounds", title_justify="left")
    for column in ("fault", "rounds", "back (mean s)", "progress (mean s)", "progress (max s)"):
        rounds.add_column(column, justify="left" if column == "fault" else "right")
    for kind in result.config.weights:
        mine = [r for r in result.rounds if r.kind is kind]
        recovered = [r.recovered_s for r in mine if r.recovered_s is not None]
        rounds.add_row(
            kind.value,
            str(len(mine)),
            f"{statistics.fmean(r.down_s for r in mine):.1f}" if mine else "-",
            f"{statistics.fmean(recovered):.1f}" if recovered else "-",
            f"{max(recovered):.1f}" if recovered else "-",
        )
    rounds.add_row("all", str(len(result.rounds)), "", "", f"stalls: {result.stalls}")
    console.print(rounds)
    if result.config.cluster:
        _print_cluster(result, console)

    figures = Table(title="Figures", title_justify="left", show_header=False)
    figures.add_column(justify="left")
    figures.add_column(justify="right")
    rows = [
        ("duration (whole run)", f"{result.seconds:.0f} s"),
        ("load duration", f"{result.load_seconds:.0f} s"),
        ("commands accepted (named by the API)", f"{verdict.accepted:,}"),
        ("commands published (commands topic)", f"{verdict.published:,}"),
        (
            "throughput (accepted / load duration)",
            f"{verdict.accepted / result.load_seconds:.1f}/s",
        ),
        ("orders", f"{verdict.orders:,}"),
        ("events (read_committed)", f"{verdict.events:,}"),
        (
            "drain after the load",
            "NEVER" if result.drain_seconds is None else f"{result.drain_seconds:.1f} s",
        ),
        ("dead letters", str(verdict.dead_letters)),
        *((f"outcome {k}", f"{n:,}") for k, n in sorted(verdict.outcomes.items())),
        *((f"final answer {k}", f"{n:,}") for k, n in sorted(verdict.final_answers.items())),
        *((f"every attempt {k}", f"{n:,}") for k, n in sorted(result.answers.items())),
        *(
            (f"unprovoked 409 {k}", f"{n:,}")
            for k, n in sorted(verdict.unexpected_conflicts.items())
        ),
        ("requests with no known outcome", str(verdict.unresolved)),
        ("unexpected process exits", str(len(result.unexpected_exits))),
    ]
    for name, value in rows:
        figures.add_row(name, value)
    console.print(figures)

    findings = Table(title="Checker", title_justify="left")
    findings.add_column("finding")
    findings.add_column("count", justify="right")
    findings.add_column("examples")
    for name in FINDINGS:
        finding = getattr(verdict, name)
        style = "green" if finding.count == 0 else "bold red"
        findings.add_row(
            name.replace("_", "-"), f"[{style}]{finding.count}[/]", "\n".join(finding.examples)
        )
    console.print(findings)
    notes = result.unexpected_exits + result.slow_starts
    for note in notes[:NOTES_SHOWN]:
        console.print(f"[yellow]note:[/] {note[:600]}", highlight=False)
    if len(notes) > NOTES_SHOWN:
        console.print(f"[yellow]... {len(notes) - NOTES_SHOWN} more in report.json[/]")
    if not result.targets_met:
        minimums = ", ".join(
            f"{result.count(k)}/{n} {k.value}" for k, n in result.config.minimums.items()
        )
        every = ", every fault kind at least once" if result.every_kind_required else ""
        console.print(
            f"[bold red]targets not met[/]: {len(result.rounds)}/{result.config.rounds} rounds, "
            f"{verdict.accepted}/{result.config.commands} commands"
            + (f", {minimums}" if minimums else "")
            + every
        )
    if result.alerts is not None:
        print_alerts(result.alerts, console)
    outcome = "[bold green]PASS[/]" if result.passed else "[bold red]FAIL[/]"
    console.print(f"{outcome}  report: {result.run_dir / 'report.json'}  logs: {result.run_dir}")


def _print_cluster(result: ChaosResult, console: Console) -> None:
    """The node faults' own figures, and what a client saw while a leader moved."""
    nodes = Table(title="Cluster faults", title_justify="left")
    for column in (
        "fault",
        "rounds",
        "counted",
        "moved (mean / max s)",
        "out of ISR (mean / max s)",
        "node back in sync (mean / max s)",
    ):
        nodes.add_column(column, justify="left" if column == "fault" else "right")

    def spread(values: list[float]) -> str:
        return f"{statistics.fmean(values):.1f} / {max(values):.1f}" if values else "-"

    for kind in (
        FaultKind.LEADER_KILL,
        FaultKind.CONTROLLER_KILL,
        FaultKind.FOLLOWER_KILL,
        FaultKind.ISR_DROP,
    ):
        mine = [r for r in result.rounds if r.kind is kind]
        nodes.add_row(
            kind.value,
            str(len(mine)),
            str(result.count(kind)),
            spread([r.moved_s for r in mine if r.moved_s is not None]),
            spread([r.isr_drop_s for r in mine if r.isr_drop_s is not None]),
            spread([r.node_back_at - r.started_at for r in mine if r.node_back_at is not None]),
        )
    console.print(nodes)
    for name, view in result.client.items():
        console.print(
            f"[bold]client while a leader moves[/] ({name}, {view.windows} rounds): {describe(view)}",
            highlight=False,
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.chaos.run", description=__doc__)
    defaults = ChaosConfig()
    parser.add_argument("--rounds", type=int, default=defaults.rounds)
    parser.add_argument("--commands", type=int, default=defaults.commands)
    parser.add_argument(
        "--terminals",
        type=int,
        help=f"{defaults.terminals}; --cluster: {CLUSTER_TERMINALS}",
    )
    parser.add_argument(
        "--max-minutes",
        type=float,
        help=f"bound on the rounds and the load: {defaults.max_minutes:g}; "
        f"--cluster: {CLUSTER_MAX_MINUTES:g}",
    )
    parser.add_argument(
        "--cluster",
        action="store_true",
        help=f"{CLUSTER_BROKERS} brokers (RF 3, min ISR 2) and the node faults (make chaos-cluster)",
    )
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument(
        "--keep-data", action="store_true", help="keep the broker and database data"
    )
    parser.add_argument(
        "--no-drills",
        action="store_true",
        help="no alert drills after the rounds (alert_drills.py)",
    )
    parser.add_argument(
        "--faults",
        type=lambda text: tuple(FaultKind(k.strip()) for k in text.split(",")),
        default=defaults.kinds,
        help="comma-separated subset of: "
        f"{', '.join(k.value for k in SINGLE_BROKER_KINDS)} (or, --cluster, "
        f"{', '.join(k.value for k in CLUSTER_WEIGHTS)})",
    )
    args = parser.parse_args(argv)
    if not args.cluster and set(args.faults) - set(SINGLE_BROKER_KINDS):
        parser.error("the cluster's fault kinds need --cluster")
    config = ChaosConfig(
        rounds=args.rounds,
        commands=args.commands,
        terminals=args.terminals or (CLUSTER_TERMINALS if args.cluster else defaults.terminals),
        max_minutes=args.max_minutes
        or (CLUSTER_MAX_MINUTES if args.cluster else defaults.max_minutes),
        seed=args.seed,
        keep_data=args.keep_data,
        drills=not args.no_drills,
        kinds=args.faults,
        cluster=args.cluster,
    )

    def interrupt(signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, interrupt)
    console = Console(width=None if sys.stdout.isatty() else 140)
    try:
        result = run_chaos(config, console)
    except KeyboardInterrupt:
        console.print("[bold red]interrupted[/]: everything the run started has been stopped")
        return 130
    print_summary(result, console)
    return 0 if result.passed else 1


if __name__ == "__main__":
    sys.exit(main())
