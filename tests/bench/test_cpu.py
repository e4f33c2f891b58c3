"""The /proc parsing and CPU arithmetic of make bench's scaling phase (tests/bench/cpu.py): pure."""

from __future__ import annotations

import os

from tests.bench.cpu import (
    CLOCK_TICKS,
    MachineTimes,
    Snapshot,
    cpu_between,
    listening_in,
    parse_machine,
    parse_stat,
    read_process,
)
from tests.bench.scaling import saturation

# A real line's shape (python3.11, pid 4242): utime 1500, stime 250, starttime 987654.
STAT = (
    "4242 (python3.11) S 4200 4242 4200 0 -1 4194560 12345 0 0 0 1500 250 7 3 20 0 9 0 "
    "987654 123456789 4567 18446744073709551615 1 1 0 0 0 0 0 16781312 17642 0 0 0 17 1 0 0 0 "
    "0 0 0 0 0 0 0 0 0 0"
)


def test_stat_gives_user_plus_system_ticks_and_the_start_time() -> None:
    times = parse_stat(STAT)
    assert (times.pid, times.name, times.cpu_ticks, times.start_ticks) == (
        4242,
        "python3.11",
        1750,
        987654,
    )


def test_a_process_name_with_spaces_and_parentheses_does_not_shift_the_fields() -> None:
    text = STAT.replace("(python3.11)", "(postgres: app (idle) x)")
    times = parse_stat(text)
    assert (times.name, times.cpu_ticks, times.start_ticks) == (
        "postgres: app (idle) x",
        1750,
        987654,
    )


def test_this_process_parses_with_a_start_before_now() -> None:
    times = read_process(os.getpid())
    assert times is not None and times.pid == os.getpid() and times.cpu_ticks >= 0


def test_machine_busy_excludes_idle_and_iowait() -> None:
    text = "cpu  100 5 50 1000 40 3 2 1 0 0\ncpu0 50 2 25 500 20 1 1 0 0 0\nintr 1 2\n"
    assert parse_machine(text) == MachineTimes(busy_ticks=161, total_ticks=1201)


def snapshot(
    at: float, uptime: int, busy: int, groups: dict[str, dict[tuple[int, int], int]]
) -> Snapshot:
    return Snapshot(at, uptime, MachineTimes(busy, busy * 2), groups)


def test_cpu_between_counts_a_process_born_in_the_step_from_zero_and_reports_the_lost() -> None:
    hz = CLOCK_TICKS
    before = snapshot(10.0, 1000, 0, {"worker": {(1, 50): 5 * hz, (2, 60): hz}, "kafka": {}})
    after = snapshot(
        12.0,
        1200,
        3 * hz,
        {
            "worker": {(1, 50): 6 * hz, (3, 1100): hz // 2},  # 3 born during the step
            "kafka": {(9, 900): 4 * hz},  # existed before but was not found then: not counted
        },
    )
    use = cpu_between(before, after)
    assert use.wall_s == 2.0
    assert use.groups["worker"].processes == [1.0, 0.5]
    assert use.each_percent("worker") == [50.0, 25.0]
    assert use.percent("kafka") == 0.0
    assert use.machine_percent == 150.0
    assert use.other_percent == 75.0  # 3 s busy, 1.5 s accounted for
    assert use.lost == ["worker 2"]


def test_a_pid_reused_by_another_process_is_another_process() -> None:
    hz = CLOCK_TICKS
    before = snapshot(0.0, 100, 0, {"api": {(7, 10): 9 * hz}})
    after = snapshot(1.0, 200, hz, {"api": {(7, 150): hz // 4}})
    use = cpu_between(before, after)
    assert use.groups["api"].processes == [0.25] and use.lost == ["api 7"]


def test_listening_sockets_by_port_from_proc_net_tcp() -> None:
    lines = [
        "   0: 0100007F:4AA4 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 31337 1",
        "   1: 0100007F:4AA4 0100007F:D2F0 01 00000000:00000000 00:00000000 00000000     0        0 31338 1",
        "   2: 00000000:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4444 1",
    ]
    assert listening_in(lines, {19108}) == {"31337"}  # 0x4AA4; the established one is not
    assert listening_in(lines, {8080, 19108}) == {"31337", "4444"}


def test_saturation_names_hot_processes_and_a_busy_machine() -> None:
    each = {"worker": [97.0, 40.0], "kafka": [60.0], "postgres": [30.0]}
    verdict = saturation(each, machine_percent=190.0, cores=2)
    assert verdict.startswith("the machine's 2 cores (190 % of 200); one core of worker 1 (97 %)")
    assert verdict.endswith("busiest: worker 137 %, kafka 60 %, postgres 30 %")
    calm = saturation({"api": [20.0]}, machine_percent=50.0, cores=2)
    assert calm == "nothing (below the limits); busiest: api 20 %"
