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
    SECOND,
    FaultInjector,
    FaultKind,
    RoundRecord,
    Targets,
    run_rounds,
)
from tests.chaos.checker import Verdict, check, collect, wait_until_drained
from tests.chaos.infra import CHAOS_ROOT, KEEP_DATA_MARK, ChaosInfra, Fleet
from tests.chaos.load import AnswerLog, drive
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


@dataclass(frozen=True)
class ChaosConfig:
    rounds: int = 100
    commands: int = 20_000
    terminals: int = 16
    max_minutes: float = 25.0
    seed: int = field(default_factory=lambda: random.randrange(1_000_000))
    kinds: tuple[FaultKind, ...] = tuple(FaultKind)
    keep_data: bool = False
    parent: Path = CHAOS_ROOT


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

    @property
    def stalls(self) -> int:
        return sum(1 for r in self.rounds if r.recovered_s is None)

    @property
    def targets_met(self) -> bool:
        return (
            len(self.rounds) >= self.config.rounds
            and self.verdict.accepted >= self.config.commands
            and all(any(r.kind is kind for r in self.rounds) for kind in self.config.kinds)
        )

    @property
    def passed(self) -> bool:
        return (
            self.verdict.passed
            and self.stalls == 0
            and self.targets_met
            and self.drain_seconds is not None
        )


def run_chaos(config: ChaosConfig, console: Console | None = None) -> ChaosResult:
    console = console or Console()
    started = time.monotonic()
    infra = ChaosInfra.create(config.parent)
    console.print(f"[bold]chaos run[/] {infra.root}  seed={config.seed}")
    try:
        infra.start()
        console.print(f"own broker {infra.bootstrap}, own PostgreSQL 127.0.0.1:{infra.pg_port}")
        settings = infra.prepare(api_reply_timeout_s=API_REPLY_TIMEOUT_S)
        fleet = Fleet(settings, infra.services_log_dir)
        try:
            return _run(config, infra, settings, fleet, console, started)
        finally:
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
) -> ChaosResult:
    rng = random.Random(config.seed)
    fleet.start_worker("1")
    fleet.start_api()
    tokens = Tokens(settings)
    log = AnswerLog()
    targets = Targets(config.rounds, config.commands, config.max_minutes * 60, config.kinds)

    def report(record: RoundRecord) -> None:
        recovered = f"{record.recovered_s:5.1f}s" if record.recovered_s is not None else "STALL"
        console.print(
            f"round {record.number:3d}  {record.kind.value:<19} back {record.down_s:5.1f}s  "
            f"progress {recovered}  commands {record.accepted_after:6d}  {record.detail}",
            highlight=False,
        )

    async def faults(stop: asyncio.Event) -> list[RoundRecord]:
        try:
            injector = FaultInjector(infra, fleet, rng)
            rounds = await run_rounds(targets, injector, log, report, rng)
            if SECOND in fleet.workers:  # back to one worker for the drain
                await asyncio.to_thread(fleet.stop_worker, SECOND)
            return rounds
        finally:
            stop.set()  # the terminals finish the request in hand (bounded by its budget)

    async def restart_policy(stop: asyncio.Event) -> None:
        while not stop.is_set():
            await asyncio.to_thread(fleet.supervise)
            await asyncio.sleep(SUPERVISE_EVERY_S)

    async def scenario() -> tuple[list[RoundRecord], float]:
        stop = asyncio.Event()
        load_started = time.monotonic()
        rounds, *_ = await asyncio.gather(
            faults(stop),
            restart_policy(stop),
            drive(
                f"http://127.0.0.1:{settings.api_port}",
                [tokens.service(sub=f"chaos-terminal-{n}") for n in range(config.terminals)],
                [uuid.UUID(int=rng.getrandbits(128)) for _ in range(RESTAURANTS)],
                log,
                stop,
                run_tag=f"chaos{config.seed}",
                seed=config.seed,
            ),
        )
        return rounds, time.monotonic() - load_started

    rounds, load_seconds = asyncio.run(scenario())
    fleet.supervise()
    console.print("load stopped; waiting for the worker to drain")
    drain_seconds = _drain(settings, fleet, console)
    verdict = check(collect(settings, log.requests))
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
    )
    _write_report(result)
    return result


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
        "passed": result.passed,
        "seconds": round(result.seconds, 1),
        "rounds": [asdict(r) for r in result.rounds],
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
    for kind in FaultKind:
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
        console.print(
            f"[bold red]targets not met[/]: {len(result.rounds)}/{result.config.rounds} rounds, "
            f"{verdict.accepted}/{result.config.commands} commands, every fault kind at least once"
        )
    outcome = "[bold green]PASS[/]" if result.passed else "[bold red]FAIL[/]"
    console.print(f"{outcome}  report: {result.run_dir / 'report.json'}  logs: {result.run_dir}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.chaos.run", description=__doc__)
    defaults = ChaosConfig()
    parser.add_argument("--rounds", type=int, default=defaults.rounds)
    parser.add_argument("--commands", type=int, default=defaults.commands)
    parser.add_argument("--terminals", type=int, default=defaults.terminals)
    parser.add_argument("--max-minutes", type=float, default=defaults.max_minutes)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument(
        "--keep-data", action="store_true", help="keep the broker and database data"
    )
    parser.add_argument(
        "--faults",
        type=lambda text: tuple(FaultKind(k.strip()) for k in text.split(",")),
        default=defaults.kinds,
        help=f"comma-separated subset of: {', '.join(k.value for k in FaultKind)}",
    )
    args = parser.parse_args(argv)
    config = ChaosConfig(
        rounds=args.rounds,
        commands=args.commands,
        terminals=args.terminals,
        max_minutes=args.max_minutes,
        seed=args.seed,
        keep_data=args.keep_data,
        kinds=args.faults,
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
