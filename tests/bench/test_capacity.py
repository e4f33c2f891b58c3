"""The capacity model (tests/bench/capacity.py) and the figures block of docs/scaling.md: pure."""

from __future__ import annotations

from pathlib import Path

from tests.bench.capacity import Costs, capacity, cores, partitions_for
from tests.bench.scaling import ScalingResults
from tests.bench.scaling_report import BLOCK_BEGIN, BLOCK_END, write_figures

COSTS = Costs(
    api_ms=1.2,
    worker_ms=0.6,
    kafka_ms=0.3,
    postgres_ms=0.5,
    kafka_log_bytes=2_000,
    wal_bytes=2_500,
    worker_drain_per_s=1_000,
)


def test_cores_are_the_cpu_time_per_second_at_the_target_utilisation() -> None:
    assert cores(1_000, 1.2) == 2.0  # 1.2 cores busy, run at 60 %


def test_partitions_leave_room_to_double_the_workers_and_never_fall_below_today() -> None:
    assert partitions_for(1) == 12
    assert partitions_for(6) == 12
    assert partitions_for(7) == 24
    assert partitions_for(30) == 60


def test_today_fits_one_of_each_and_the_minimum_cluster() -> None:
    c = capacity(200, 1, COSTS)
    assert (c.rate, c.api_processes, c.workers, c.partitions, c.brokers, c.primaries) == (
        200,
        1,
        1,
        12,
        3,
        1,
    )


def test_workers_are_bound_by_the_measured_drain_when_it_is_below_their_cpu_limit() -> None:
    # 1000/0.6 = 1667/s by CPU, but one worker drained only 1000/s: 600/s each at 60 %.
    c = capacity(200, 100, COSTS)  # 20,000/s
    assert c.workers == 34 and c.partitions == 72
    assert c.api_processes == 40  # 20,000 x 1.2 ms = 24 cores at 60 %


def test_brokers_and_primaries_grow_with_the_largest_of_their_limits() -> None:
    c = capacity(200, 1000, COSTS)  # 200,000/s
    # RF 3: 200,000 x 0.3 ms / 0.6 x 3 = 300 cores = 38 brokers of 8 cores;
    # writes 200,000 x 2 kB x 3 = 1,200 MB/s = 20 brokers at 60 % of 100 MB/s: cores win.
    assert (c.broker_cores, c.broker_write_mb_s, c.brokers) == (300.0, 1200.0, 38)
    # 200,000 x 0.5 ms / 0.6 = 167 cores = 6 primaries of 32; WAL 500 MB/s = 6 at 60 % of 150.
    assert (c.postgres_cores, c.wal_mb_s, c.primaries) == (166.7, 500.0, 6)


def test_the_figures_block_of_the_doc_is_replaced_and_the_prose_kept(tmp_path: Path) -> None:
    doc = tmp_path / "scaling.md"
    doc.write_text(f"# Scaling\n\nprose\n{BLOCK_BEGIN}\nold figures\n{BLOCK_END}\n\nmore prose\n")
    assert write_figures(ScalingResults(skipped=["drain with 3 workers"]), ["- date: x"], doc)
    text = doc.read_text()
    assert "old figures" not in text and "- date: x" in text and "drain with 3 workers" in text
    assert text.startswith("# Scaling\n\nprose\n") and text.endswith(f"{BLOCK_END}\n\nmore prose\n")
    assert not write_figures(ScalingResults(), [], tmp_path / "missing.md")
