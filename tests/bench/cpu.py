"""CPU time of the processes a benchmark step loads, read from /proc (no psutil): each process's
user + system ticks from /proc/<pid>/stat, the machine's from /proc/stat, taken at the start and
the end of a step. Groups name what a process is (api, worker, kafka, postgres); a group finds its
process ids at every snapshot, so a process born during the step counts from zero, and one that
ended during the step is lost (said in `CpuUse.lost`).

Percentages are of one core (top's convention): 100 % is one core busy for the whole step."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PROC = Path("/proc")

ProcessKey = tuple[int, int]
"""(pid, start time in ticks since boot): a pid reused by another process is another key."""
Finder = Callable[[], Iterable[int]]


@dataclass(frozen=True)
class ProcessTimes:
    pid: int
    name: str
    cpu_ticks: int
    """utime + stime: the process's own threads, not its waited-for children."""
    start_ticks: int


def parse_stat(text: str) -> ProcessTimes:
    """/proc/<pid>/stat. The name (field 2) is in parentheses and may hold spaces and
    parentheses itself, so the fields are counted from its last ')'."""
    head, _, tail = text.rpartition(")")
    pid, _, name = head.partition(" (")
    fields = tail.split()  # fields[0] is field 3 (state): field n is fields[n - 3]
    return ProcessTimes(
        pid=int(pid),
        name=name,
        cpu_ticks=int(fields[14 - 3]) + int(fields[15 - 3]),
        start_ticks=int(fields[22 - 3]),
    )


@dataclass(frozen=True)
class MachineTimes:
    busy_ticks: int
    total_ticks: int


def parse_machine(text: str) -> MachineTimes:
    """The all-CPU line of /proc/stat: busy = user, nice, system, irq, softirq and steal (guest
    time is already inside user and nice); idle and iowait are not busy."""
    line = next(x for x in text.splitlines() if x.startswith("cpu "))
    user, nice, system, idle, iowait, irq, softirq, steal = (int(v) for v in line.split()[1:9])
    busy = user + nice + system + irq + softirq + steal
    return MachineTimes(busy_ticks=busy, total_ticks=busy + idle + iowait)


def parse_uptime_ticks(text: str) -> int:
    """/proc/uptime's seconds since boot, in the clock ticks /proc/<pid>/stat counts start in."""
    return int(float(text.split()[0]) * CLOCK_TICKS)


@dataclass
class Snapshot:
    monotonic_s: float
    uptime_ticks: int
    machine: MachineTimes
    groups: dict[str, dict[ProcessKey, int]]
    names: dict[ProcessKey, str] = field(default_factory=dict)


@dataclass
class GroupUse:
    processes: list[float]
    """Each process's CPU seconds over the step, largest first."""

    @property
    def seconds(self) -> float:
        return sum(self.processes)


@dataclass
class CpuUse:
    wall_s: float
    machine_busy_s: float
    """CPU seconds of every core together."""
    groups: dict[str, GroupUse]
    lost: list[str]
    """Processes seen at the start but gone at the end: their step's CPU is not counted."""

    def percent(self, group: str) -> float:
        return percent(self.groups[group].seconds, self.wall_s) if group in self.groups else 0.0

    def each_percent(self, group: str) -> list[float]:
        use = self.groups.get(group)
        return [percent(s, self.wall_s) for s in use.processes] if use else []

    @property
    def machine_percent(self) -> float:
        return percent(self.machine_busy_s, self.wall_s)

    @property
    def other_percent(self) -> float:
        """The machine's busy time no measured group accounts for (the kernel, other users)."""
        measured = sum(g.seconds for g in self.groups.values())
        return percent(max(0.0, self.machine_busy_s - measured), self.wall_s)


def percent(seconds: float, wall_s: float) -> float:
    return round(100 * seconds / wall_s, 1) if wall_s > 0 else 0.0


def cpu_between(before: Snapshot, after: Snapshot) -> CpuUse:
    """What each group's processes used from `before` to `after`."""
    groups: dict[str, GroupUse] = {}
    lost: list[str] = []
    for name, ended in after.groups.items():
        began = before.groups.get(name, {})
        used = []
        for key, ticks in ended.items():
            if key in began:
                used.append((ticks - began[key]) / CLOCK_TICKS)
            elif key[1] >= before.uptime_ticks:  # born during the step: all of its time
                used.append(ticks / CLOCK_TICKS)
            # else: existed before but not found then (a finder's race): not counted
        groups[name] = GroupUse(sorted(used, reverse=True))
        lost += [f"{name} {key[0]}" for key in began if key not in ended]
    return CpuUse(
        wall_s=after.monotonic_s - before.monotonic_s,
        machine_busy_s=(after.machine.busy_ticks - before.machine.busy_ticks) / CLOCK_TICKS,
        groups=groups,
        lost=lost,
    )


def read_process(pid: int) -> ProcessTimes | None:
    try:
        return parse_stat((PROC / str(pid) / "stat").read_text())
    except (OSError, ValueError, IndexError):
        return None  # gone (or not a process)


class CpuSampler:
    """Snapshots of groups of processes: `groups` maps a name to a function listing its pids."""

    def __init__(self, groups: dict[str, Finder]) -> None:
        self.groups = groups

    def snapshot(self) -> Snapshot:
        taken: dict[str, dict[ProcessKey, int]] = {}
        names: dict[ProcessKey, str] = {}
        for name, find in self.groups.items():
            taken[name] = {}
            for pid in set(find()):
                times = read_process(pid)
                if times is not None:
                    key = (times.pid, times.start_ticks)
                    taken[name][key] = times.cpu_ticks
                    names[key] = times.name
        return Snapshot(
            monotonic_s=time.monotonic(),
            uptime_ticks=parse_uptime_ticks((PROC / "uptime").read_text()),
            machine=parse_machine((PROC / "stat").read_text()),
            groups=taken,
            names=names,
        )


# ---- finding the processes -------------------------------------------------------------------


def process_tree(pid: int) -> list[int]:
    """The process and all its descendants (an API's uvicorn supervisor and its processes)."""
    found = [pid]
    for task in (PROC / str(pid) / "task").glob("*"):
        try:
            children = [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
        for child in children:
            found += process_tree(child)
    return found


def listening_inodes(ports: set[int], tables: Iterable[str] = ("tcp", "tcp6")) -> set[str]:
    """Socket inodes listening (state 0A) on any of `ports`, from /proc/net/tcp{,6}."""
    inodes = set()
    for table in tables:
        try:
            lines = (PROC / "net" / table).read_text().splitlines()[1:]
        except OSError:
            continue
        inodes |= listening_in(lines, ports)
    return inodes


def listening_in(lines: Iterable[str], ports: set[int]) -> set[str]:
    """The inodes of the /proc/net/tcp lines that listen on one of `ports`."""
    found = set()
    for line in lines:
        fields = line.split()
        if len(fields) > 9 and fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) in ports:
            found.add(fields[9])
    return found


def pids_listening_on(ports: set[int]) -> list[int]:
    """The processes holding a listening socket on one of `ports` (this user's processes only:
    another user's /proc/<pid>/fd cannot be read)."""
    wanted = {f"socket:[{inode}]" for inode in listening_inodes(ports)}
    pids = []
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            links = {os.readlink(fd) for fd in (entry / "fd").iterdir()}
        except OSError:
            continue
        if links & wanted:
            pids.append(int(entry.name))
    return pids
