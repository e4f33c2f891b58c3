"""The chaos run's Prometheus (tests/chaos/alerts.py) against real processes: it scrapes what the
fleet names, a target a drill holds down is scraped as down and its alert goes pending, a process
removed is no target any more, and the ALERTS timeline read back holds the episode."""

from __future__ import annotations

import time
from pathlib import Path

from services.adapters.settings import Settings
from tests.chaos.alerts import QUERY_STEP_S, ChaosPrometheus
from tests.observability_stack import wait_for
from tests.stack import ServiceProcess, free_port, isolated_settings


def test_the_run_prometheus_follows_the_fleet_and_times_a_held_down_target(
    base_settings: Settings, log_dir: Path, tmp_path: Path
) -> None:
    with isolated_settings(base_settings) as settings:
        worker_port = free_port()
        worker = ServiceProcess("worker", settings, log_dir, worker_metrics_port=worker_port)
        api = ServiceProcess("api", settings, log_dir)
        running = {"api-1": settings.api_port, "worker-1": worker_port}
        prometheus = ChaosPrometheus(tmp_path, lambda: dict(running))
        try:
            worker.start()
            api.start()
            prometheus.start()
            wait_for(
                lambda: (
                    prometheus.targets_up("status-worker") == {"worker-1": 1.0}
                    and prometheus.targets_up("command-api") == {"api-1": 1.0}
                ),
                60,
                "both scraped",
            )
            since = time.time()
            prometheus.hold("worker-2", free_port())  # a slot a drill stopped: nothing listens

            def pending() -> bool:
                return any(
                    a["labels"]["alertname"] == "OrderStatusWorkerDown"
                    and a["labels"].get("process") == "worker-2"
                    and a["state"] == "pending"
                    for a in prometheus.active_alerts()
                )

            wait_for(pending, 30, "OrderStatusWorkerDown pending for worker-2")
            assert prometheus.targets_up("status-worker") == {"worker-1": 1.0, "worker-2": 0.0}

            running.pop("worker-1")  # removed on purpose (scale-in): no target, no alert
            prometheus.release("worker-2")
            wait_for(lambda: not prometheus.targets_up("status-worker"), 30, "no worker targets")
            assert prometheus.wait_cleared("OrderStatusWorkerDown", 30)
            time.sleep(2 * QUERY_STEP_S)  # the timeline sees it resolved, not just ended

            episodes = prometheus.episodes(since, time.time())
            down = [e for e in episodes if e.name == "OrderStatusWorkerDown"]
            assert len(down) == 1 and ("process", "worker-2") in down[0].labels
            assert down[0].firing_since is None and down[0].resolved_at is not None
            assert since <= down[0].active_since <= down[0].resolved_at
        finally:
            prometheus.stop()
            api.terminate()
            worker.terminate()
