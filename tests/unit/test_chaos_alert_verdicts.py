"""The alert verdict's rules on hand-made timelines: a must-page fault with its alert passes and one
without fails, a short fault owes nothing, a page already ringing counts, a drill that provoked
nothing fails, alerts belong to the fault before them and the rest is noise; ALERTS series from
Prometheus become episodes; and the run's Prometheus scrapes what runs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.chaos.actions import FaultKind
from tests.chaos.alert_verdicts import (
    ATTRIBUTION_GRACE_S,
    DETECT_S,
    MUST_PAGE,
    OWES_NO_PAGE,
    AlertEpisode,
    Fault,
    episodes_from_alerts,
    judge,
    verdict_json,
)
from tests.chaos.alerts import (
    JOBS,
    file_sd,
    fleet_targets,
    prometheus_config,
)

T0 = 1_800_000_000.0


def episode(
    name: str,
    active: float,
    firing: float | None,
    resolved: float | None,
    **labels: str,
) -> AlertEpisode:
    return AlertEpisode(
        name, tuple(sorted(labels.items())), T0 + active, _at(firing), _at(resolved)
    )


def _at(offset: float | None) -> float | None:
    return None if offset is None else T0 + offset


def fault(kind: str, start: float, end: float, provoked: bool | None = None) -> Fault:
    return Fault(kind, T0 + start, T0 + end, provoked=provoked)


def test_a_worker_drill_whose_alert_fired_and_cleared_passes_with_its_figures() -> None:
    faults = [fault("drill-worker-down", 0, 80, provoked=True)]
    alerts = [episode("OrderStatusWorkerDown", 2, 64, 82, instance="127.0.0.1:1")]
    verdict = judge(faults, alerts)
    assert verdict.passed and verdict.owed == 1 and verdict.noise == []
    (kind,) = verdict.kinds
    (figures,) = kind.alerts
    assert (figures.name, figures.faults) == ("OrderStatusWorkerDown", 1)
    assert figures.fired_after_s == [64.0] and figures.cleared_after_s == [2.0]
    assert figures.not_cleared == 0 and figures.pending_only == 0


def test_a_must_page_fault_that_fired_nothing_fails_the_verdict() -> None:
    faults = [fault("drill-broker-down", 0, 75, provoked=True)]
    verdict = judge(faults, [episode("OrderStatusServerErrors", 3, 3, None, route="/orders")])
    assert not verdict.passed
    (missed,) = verdict.missed
    assert missed.kind == "drill-broker-down" and missed.expected == ["KafkaBrokerDown"]
    assert "broker unreachable" in missed.why


def test_an_alert_of_another_kind_does_not_pay_the_page() -> None:
    faults = [fault("drill-dead-letter", 0, 1, provoked=True)]
    verdict = judge(faults, [episode("OrderStatusWorkerDown", 2, 5, 30)])
    assert [m.expected for m in verdict.missed] == [["OrderStatusDeadLetters"]]


def test_a_fault_shorter_than_the_alerts_for_owes_no_page() -> None:
    """A worker down 40 s: OrderStatusWorkerDown (for: 1m) cannot have fired yet. The rounds'
    faults owe none at all (their durations include restarts)."""
    faults = [
        fault("drill-worker-down", 0, 40, provoked=True),
        fault("worker-kill9", 50, 54),
        fault("broker-restart", 60, 120),
    ]
    verdict = judge(faults, [episode("OrderStatusWorkerDown", 1, None, 41)])
    assert verdict.passed and verdict.owed == 0
    assert verdict.kinds[0].alerts[0].pending_only == 1


def test_an_alert_belongs_to_the_fault_that_began_before_it_not_the_one_before_that() -> None:
    """The drills keep a gap between them for this: the table shows what each one fired. The
    page itself is paid by timing alone."""
    faults = [fault("drill-dead-letter", 0, 1, provoked=True), fault("drill-worker-down", 6, 40)]
    verdict = judge(faults, [episode("OrderStatusDeadLetters", 6, 6, None)])
    dead_letter, worker = verdict.kinds
    assert dead_letter.alerts == []
    assert [a.name for a in worker.alerts] == ["OrderStatusDeadLetters"]
    assert verdict.passed


def test_a_page_must_come_within_the_detection_time_after_the_fault() -> None:
    faults = [fault("drill-5xx", 0, 10, provoked=True)]
    late = 10 + DETECT_S + 1
    assert not judge(faults, [episode("OrderStatusServerErrors", late, late, None)]).passed
    in_time = 10 + DETECT_S - 1
    assert judge(faults, [episode("OrderStatusServerErrors", in_time, in_time, None)]).passed


def test_a_page_already_ringing_from_an_earlier_fault_pays() -> None:
    """5xx from a broker restart keep OrderStatusServerErrors on for its 5 minutes: the 5xx drill
    that follows finds the pager ringing."""
    faults = [fault("broker-restart", 0, 12), fault("drill-5xx", 60, 70, provoked=True)]
    verdict = judge(faults, [episode("OrderStatusServerErrors", 4, 4, 310, route="/orders")])
    assert verdict.passed and verdict.owed == 1
    drill = next(k for k in verdict.kinds if k.kind == "drill-5xx")
    assert drill.already_firing == ["OrderStatusServerErrors"] and drill.alerts == []


def test_a_drill_that_did_not_provoke_its_condition_fails_even_with_the_alert() -> None:
    faults = [fault("drill-5xx", 0, 10, provoked=False)]
    verdict = judge(faults, [episode("OrderStatusServerErrors", 2, 2, None)])
    assert not verdict.passed
    assert "did not bring about" in verdict.missed[0].why


def test_alerts_belong_to_the_latest_fault_before_them_and_the_rest_is_noise() -> None:
    faults = [fault("postgres-restart", 0, 5), fault("api-kill9", 100, 103)]
    alerts = [
        episode("OrderStatusServerErrors", 3, 3, 300, route="/orders"),  # postgres-restart
        episode("OrderStatusRebalancing", 5 + ATTRIBUTION_GRACE_S - 1, 50, 900),  # still its
        episode("OrderStatusConsumerLagHigh", 60, 360, 400),  # after the grace: noise
        episode("OrderStatusApiDown", 101, None, 104),  # pending only: the api-kill9's
        episode("OrderStatusConflictRateHigh", 500, None, 520),  # pending noise: not paged
    ]
    verdict = judge(faults, alerts)
    assert [e.name for e in verdict.noise] == ["OrderStatusConsumerLagHigh"]
    postgres, api = verdict.kinds
    assert [a.name for a in postgres.alerts] == [
        "OrderStatusRebalancing",
        "OrderStatusServerErrors",
    ]
    assert api.alerts[0].name == "OrderStatusApiDown" and api.alerts[0].faults == 0
    assert verdict.passed


def test_alerts_the_run_cannot_judge_are_listed_apart() -> None:
    verdict = judge([], [episode("NotifierDown", 120, 240, None)])
    assert verdict.noise == [] and verdict.ignored[0][0] == "NotifierDown"


def test_an_alert_still_firing_at_the_end_is_counted_not_cleared() -> None:
    faults = [fault("drill-dead-letter", 0, 1, provoked=True)]
    verdict = judge(faults, [episode("OrderStatusDeadLetters", 6, 6, None, reason="undecodable")])
    figures = verdict.kinds[0].alerts[0]
    assert figures.not_cleared == 1 and figures.cleared_after_s == []
    report = verdict_json(verdict, T0)
    assert report["passed"] is True
    assert report["kinds"][0]["alerts"][0]["fired_after_s"] == {
        "min": 6.0,
        "median": 6.0,
        "max": 6.0,
    }
    assert report["timeline"][0] == {
        "alert": "OrderStatusDeadLetters{reason=undecodable}",
        "active_at_s": 6.0,
        "firing_at_s": 6.0,
        "resolved_at_s": None,
    }


def test_every_drill_and_every_kind_of_round_is_in_the_table() -> None:
    drills = {"drill-worker-down", "drill-broker-down", "drill-dead-letter", "drill-5xx"}
    assert drills <= set(MUST_PAGE)
    unmapped = {k.value for k in FaultKind} - set(MUST_PAGE) - set(OWES_NO_PAGE)
    assert unmapped == set(), "a kind of fault with no entry in MUST_PAGE or OWES_NO_PAGE"


def series(state: str, times: list[float], **labels: str) -> dict[str, Any]:
    metric = {"__name__": "ALERTS", "alertstate": state, **labels}
    return {"metric": metric, "values": [[T0 + t, "1"] for t in times]}


def test_alerts_series_become_episodes_pending_then_firing_then_resolved() -> None:
    pending = series("pending", [10, 12, 14], alertname="OrderStatusWorkerDown", instance="w1")
    firing = series("firing", [16, 18, 20], alertname="OrderStatusWorkerDown", instance="w1")
    (found,) = episodes_from_alerts([firing, pending], step_s=2, until=T0 + 100)
    assert found == episode("OrderStatusWorkerDown", 10, 16, 22, instance="w1")


def test_a_gap_in_the_series_splits_episodes_and_the_last_one_may_still_be_active() -> None:
    fired = series("firing", [0, 2, 4, 20, 22], alertname="KafkaBrokerDown", instance="b2")
    first, second = episodes_from_alerts([fired], step_s=2, until=T0 + 22)
    assert (first.active_since, first.resolved_at) == (T0, T0 + 6)
    assert (second.active_since, second.resolved_at) == (T0 + 20, None)


def test_instances_are_episodes_of_their_own() -> None:
    a = series("firing", [0, 2], alertname="KafkaBrokerDown", instance="b1")
    b = series("firing", [0, 2], alertname="KafkaBrokerDown", instance="b2")
    assert len(episodes_from_alerts([a, b], step_s=2, until=T0 + 50)) == 2


class FleetNow:
    """The fleet as the Prometheus sees it: slots running now and every slot's metrics port."""

    def __init__(self, apis: list[str], workers: list[str]) -> None:
        self.apis = dict.fromkeys(apis, object())
        self.workers = dict.fromkeys(workers, object())

    def metrics_ports(self) -> dict[str, int]:
        return {"api-1": 8001, "api-2": 8002, "worker-1": 9001, "worker-2": 9002}


def test_the_targets_are_the_running_slots_and_every_broker() -> None:
    brokers = {"broker-1": 7001, "broker-2": 7002, "broker-3": 7003}
    targets = fleet_targets(FleetNow(["1"], ["1", "2"]), brokers)
    assert targets == {
        "api-1": 8001,
        "worker-1": 9001,
        "worker-2": 9002,
        "broker-1": 7001,
        "broker-2": 7002,
        "broker-3": 7003,
    }
    groups = file_sd(targets)
    assert [g["targets"] for g in groups["status-worker"]] == [
        ["127.0.0.1:9001"],
        ["127.0.0.1:9002"],
    ]
    assert groups["kafka"][0]["labels"] == {"process": "broker-1"}
    assert set(groups) == {"command-api", "status-worker", "kafka"}


def test_the_run_prometheus_evaluates_faster_than_the_rules_for() -> None:
    config = prometheus_config(Path("/tmp/targets"))
    assert config["global"]["evaluation_interval"] == "2s"
    assert config["global"]["scrape_timeout"] == "1500ms"  # below the interval, in Go syntax
    assert {job["job_name"] for job in config["scrape_configs"]} == set(JOBS.values())
    assert any(path.endswith("kafka.yml") for path in config["rule_files"])


def test_the_report_lists_each_drill_with_what_it_did() -> None:
    faults = [
        fault("worker-kill9", 0, 3),
        Fault("drill-5xx", T0 + 10, T0 + 14, "Kafka down: answers 503x2", provoked=True),
    ]
    report = verdict_json(judge(faults, [episode("OrderStatusServerErrors", 11, 11, None)]), T0)
    assert report["drills"] == [
        {
            "kind": "drill-5xx",
            "at_s": 10.0,
            "lasted_s": 4.0,
            "provoked": True,
            "detail": "Kafka down: answers 503x2",
        }
    ]
