"""Where the API and the worker spend their time under closed-loop wrk load (issue 9): py-spy
samples both processes twice, once with idle stacks (every thread, waiting or not) and once with
running stacks only, so each thread's on-CPU share is the ratio of the two.

    .venv/bin/python -m tests.bench.profile [--seconds 15] [--connections 32] [--out PROFILE.md]

Needs ptrace rights on its own children (root, or kernel.yama.ptrace_scope = 0)."""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import threading
from collections import Counter
from pathlib import Path

from bench.wrk import WrkResult, run_wrk, write_orders
from services.adapters.settings import Settings
from services.loadgen import seed
from tests.bench.systems import sampled_pid
from tests.stack import ServiceProcess, free_port, isolated_settings

PY_SPY = str(Path(sys.executable).with_name("py-spy"))
RATE = 50


def record(pid: int, seconds: float, out: Path, *, idle: bool) -> subprocess.Popen[bytes]:
    argv = [PY_SPY, "record", "-p", str(pid), "-d", f"{seconds:g}", "-r", str(RATE)]
    argv += ["--format", "raw", "--threads", "--nonblocking", "-o", str(out)]
    # With idle stacks: every sample of every thread. Without: only stacks holding the GIL, i.e.
    # running Python (a C call that waits without releasing the GIL would count as running).
    argv.append("--idle" if idle else "--gil")
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def stacks(path: Path) -> Counter[tuple[str, ...]]:
    """py-spy's raw (collapsed) format: `thread;frame;frame... count`, root first."""
    counts: Counter[tuple[str, ...]] = Counter()
    if not path.exists():
        return counts
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if stack:
            counts[tuple(stack.split(";"))] += int(count)
    return counts


def thread_of(stack: tuple[str, ...]) -> str:
    """`thread (1234): MainThread` -> `MainThread`; pool threads share one name."""
    return stack[0].partition("): ")[2] or "unnamed" if stack else "?"


def short(frame: str) -> str:
    """`name (path/to/file.py:12)` -> `name (file.py:12)`."""
    name, _, where = frame.partition(" (")
    return f"{name} ({where.rsplit('/', 1)[-1]}" if where else name


def report(
    name: str, everything: Counter[tuple[str, ...]], running: Counter[tuple[str, ...]], top: int
) -> list[str]:
    lines = [f"### {name}", ""]
    total, busy = sum(everything.values()), sum(running.values())
    if not total:
        return [*lines, "(no samples)", ""]
    per_thread_all: Counter[str] = Counter()
    per_thread_cpu: Counter[str] = Counter()
    for stack, n in everything.items():
        per_thread_all[thread_of(stack)] += n
    for stack, n in running.items():
        per_thread_cpu[thread_of(stack)] += n
    lines += [
        "| thread (threads of one name summed) | samples, all | holding the GIL | share |",
        "|---|---:|---:|---:|",
    ]
    for thread, n in per_thread_all.most_common():
        cpu = per_thread_cpu.get(thread, 0)
        lines.append(f"| {thread} | {n} | {cpu} | {100 * cpu / n:.0f} % |")
    lines += ["", f"Samples holding the GIL: {busy} of {total} ({100 * busy / total:.0f} %).", ""]
    main_thread = Counter({s: n for s, n in everything.items() if thread_of(s) == "MainThread"})
    for title, counts in (
        ("MainThread, waiting included", main_thread),
        ("every thread, holding the GIL", running),
    ):
        leaves: Counter[str] = Counter()
        inclusive: Counter[str] = Counter()
        for stack, n in counts.items():
            frames = [short(f) for f in stack[1:]]
            if frames:
                leaves[frames[-1]] += n
            for frame in set(frames):
                inclusive[frame] += n
        size = sum(counts.values()) or 1
        lines += [f"Top leaf frames ({title}):", "", "| % | frame |", "|---:|---|"]
        lines += [f"| {100 * n / size:.1f} | `{f}` |" for f, n in leaves.most_common(top)]
        lines += ["", f"Top inclusive frames ({title}):", "", "| % | frame |", "|---:|---|"]
        lines += [f"| {100 * n / size:.1f} | `{f}` |" for f, n in inclusive.most_common(top)]
        lines.append("")
    return lines


def profile(
    settings: Settings,
    api: ServiceProcess,
    worker: ServiceProcess,
    work: Path,
    *,
    seconds: float,
    connections: int = 32,
    top: int = 12,
) -> list[str]:
    """Samples the running `api` and `worker` under wrk load; the report as Markdown lines."""
    tenants = seed(settings, restaurants=4, orders_per_restaurant=int(1_000 * seconds))
    orders = write_orders(work / "profile-orders.txt", tenants)
    url = f"http://127.0.0.1:{settings.api_port}"
    load: list[WrkResult] = []
    wrk_seconds = 2 * seconds + 6
    driver = threading.Thread(
        target=lambda: load.append(
            run_wrk(url, orders, mode="fresh", connections=connections, seconds=wrk_seconds)
        )
    )
    driver.start()
    threading.Event().wait(2)  # warm-up
    samples: dict[tuple[str, bool], Path] = {}
    for idle in (True, False):
        spies = []
        for name, process in (("api", api), ("worker", worker)):
            assert process.process is not None
            out = work / f"{name}-{'all' if idle else 'gil'}.txt"
            samples[(name, idle)] = out
            spies.append(record(sampled_pid(process), seconds, out, idle=idle))
        for spy in spies:
            spy.wait(seconds + 30)
    driver.join(wrk_seconds + 40)
    lines = ["## Profile (py-spy) under closed-loop wrk load", ""]
    if load:
        figures = load[0].summary()
        lines += [
            f"Load: wrk, {connections} connections, each request a distinct pending order "
            f"moved to accepted: {figures['requests_per_s']} PATCH/s, p50 {figures['p50_ms']} ms, "
            f"p95 {figures['p95_ms']} ms, statuses {figures['statuses']}.",
            f"Sampling: {RATE}/s, {seconds:g} s with idle stacks (`--idle`), then {seconds:g} s "
            "of stacks holding the GIL only (`--gil`); `py-spy record --format raw --threads`.",
            "",
        ]
    for name in ("api", "worker"):
        lines += report(name, stacks(samples[(name, True)]), stacks(samples[(name, False)]), top)
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=15.0, help="per sampling phase")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--top", type=int, default=12)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: deploy/local/bench-tools.sh install")
    work = Path(tempfile.mkdtemp(prefix="orderstatus-profile-"))
    with isolated_settings(Settings()) as settings:
        worker = ServiceProcess("worker", settings, work, worker_metrics_port=free_port()).start()
        api = ServiceProcess("api", settings, work, log_level="WARNING").start()
        try:
            lines = profile(
                settings,
                api,
                worker,
                work,
                seconds=args.seconds,
                connections=args.connections,
                top=args.top,
            )
        finally:
            api.terminate()
            worker.terminate()
    text = "\n".join(lines)
    print(text)
    print(f"raw samples: {work}")
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
