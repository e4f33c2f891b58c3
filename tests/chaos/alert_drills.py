"""Drills: each fault the runbook says must page, held long enough for its alert's `for:`.

The chaos rounds are ~10 s each, shorter than most alerts' `for:`; so after the rounds (and after
the checker has read everything back: the drills' own commands and their dead letter are not the
load's), each must-page fault is brought about once and held until its alert fires (bounded), then
undone, and the clearing waited for (bounded). Every drill is a fault of the timeline (ending when
its undoing begins: the clearing is timed from the restart), with the alert it owes
(alert_verdicts.MUST_PAGE) and whether its condition really held:

| drill             | fault                                              | alert owed              |
| ----------------- | -------------------------------------------------- | ----------------------- |
| drill-dead-letter | a record that is no command, on the commands topic | OrderStatusDeadLetters  |
| drill-worker-down | every worker stopped, commands keep coming         | OrderStatusWorkerDown   |
| drill-broker-down | a broker stopped (one broker: all of Kafka)        | KafkaBrokerDown         |
| drill-5xx         | inside it, POSTs while Kafka cannot take them (one | OrderStatusServerErrors |
|                   | broker: it is down; three: a second one is killed) |                         |

OrderStatusServerErrors and OrderStatusDeadLetters count over 5 and 10 minutes: they clear when
their event leaves the window, which the drills do not wait for (the report says "not cleared").
The rounds' own 5xx (504s while a worker restarts, 503s while a broker does) usually keep
OrderStatusServerErrors firing into the drills: the 5xx drill then waits until the alert's count of
5xx on its route rises by its own answers (and the verdict counts the page as ringing)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

import httpx

from services.adapters.settings import Settings
from services.ops.kafka_checks import worker_lag
from tests.chaos.alert_verdicts import Fault
from tests.chaos.alerts import SCRAPE_S, ChaosPrometheus
from tests.topics import (
    RawRecord,
    command_record,
    create_command,
    produce,
    read_topic,
    signed,
)

WORKER_DOWN_FOR_S = 60.0
BROKER_DOWN_FOR_S = 30.0
"""The rules' `for:` (deploy/prometheus/rules): a drill waits this + FIRE_MARGIN_S at most."""
FIRE_MARGIN_S = 45.0
CLEAR_TIMEOUT_S = 45.0
ENQUEUE_EVERY_S = 3.0
COMMANDS_PER_ENQUEUE = 5
SERVER_ERROR_REQUESTS_S = 30.0
"""The longest the 5xx drill sends requests for while waiting for the alert."""
SETTLE_S = 1.5
"""Between drills: the alert timeline is sampled every second (alerts.QUERY_STEP_S), so an alert
seen active at the end of one drill may be sampled a second later."""
DRILL_ROUTE = "/orders"


class DrillFleet(Protocol):
    """What the drills need of tests/chaos/infra.Fleet."""

    @property
    def workers(self) -> Mapping[str, object]: ...

    def metrics_ports(self) -> dict[str, int]: ...

    def stop_worker(self, slot: str) -> int: ...

    def start_worker(self, slot: str, ready_timeout: float = 60) -> float: ...

    def url(self, slot: str) -> str: ...


class DrillInfra(Protocol):
    """What the drills need of tests/chaos/infra.ChaosInfra."""

    @property
    def brokers(self) -> int: ...

    def script(self, component: str, action: str, *args: str) -> None: ...


@dataclass
class Drills:
    infra: DrillInfra
    fleet: DrillFleet
    settings: Settings
    prometheus: ChaosPrometheus
    token: str
    """A service token for the API (the 5xx drill's requests)."""
    say: Callable[[str], None] = print

    def run(self) -> list[Fault]:
        """Every drill in turn; one that breaks down is a fault that provoked nothing (the
        verdict fails on it) and the next one still runs."""
        faults: list[Fault] = []
        drills: list[tuple[tuple[str, ...], Callable[[], list[Fault]]]] = [
            (("drill-dead-letter",), lambda: [self.dead_letter()]),
            (("drill-worker-down",), lambda: [self.worker_down()]),
            (("drill-broker-down", "drill-5xx"), self.broker_down),
        ]
        for kinds, drill in drills:
            started = time.time()
            try:
                faults += drill()
            except Exception as exc:  # reported as the drill's failure; the others go on
                self.say(f"{'/'.join(kinds)} broke down: {type(exc).__name__}: {exc}"[:600])
                done = time.time()
                faults += [
                    Fault(k, started, done, f"broke down: {exc}"[:300], False) for k in kinds
                ]
        return faults

    # ---- the drills ---------------------------------------------------------------------------

    def worker_down(self) -> Fault:
        """Every worker slot stopped (their targets kept), commands produced straight onto the
        commands topic as a POS integration would, until OrderStatusWorkerDown fires."""
        slots = sorted(self.fleet.workers)
        ports = self.fleet.metrics_ports()
        started = time.time()
        for slot in slots:
            self.prometheus.hold(f"worker-{slot}", ports[f"worker-{slot}"])
            self.fleet.stop_worker(slot)
        waiting_before = self._waiting()
        fired = self._while_waiting(
            "OrderStatusWorkerDown", WORKER_DOWN_FOR_S + FIRE_MARGIN_S, self._enqueue
        )
        waiting_after = self._waiting()
        ended = time.time()
        for slot in slots:
            self.fleet.start_worker(slot)
            self.prometheus.release(f"worker-{slot}")
        detail = (
            f"workers {','.join(slots)} down {ended - started:.0f}s, "
            f"commands waiting {waiting_before} -> {waiting_after}"
        )
        return self._done(
            "drill-worker-down",
            "OrderStatusWorkerDown",
            started,
            ended,
            fired,
            detail,
            waiting_after > waiting_before,
        )

    def dead_letter(self) -> Fault:
        """One signed record that is no command (not JSON) onto the commands topic."""
        topic = self.settings.topics.dead_letters
        before = len(read_topic(self.settings, topic))
        started = time.time()
        record = signed((b"alert-drill", b"\x00\xffnot a command", []))
        produce(self.settings, self.settings.topics.commands, [record])
        ended = time.time()
        fired = self.prometheus.wait_firing("OrderStatusDeadLetters", FIRE_MARGIN_S)
        after = len(read_topic(self.settings, topic))
        detail = f"dead letters {before} -> {after}"
        return self._done(
            "drill-dead-letter",
            "OrderStatusDeadLetters",
            started,
            ended,
            fired,
            detail,
            after > before,
            clears=False,
        )

    def broker_down(self) -> list[Fault]:
        """A broker stopped until KafkaBrokerDown fires, and the 5xx drill inside it: with one
        broker the API's publishes fail while it is down; with three a second broker is killed
        as well (2 of 3 down: no ISR of 2, no quorum)."""
        cluster = self.infra.brokers > 1
        down = self.infra.brokers  # node 3 of 3: whoever leads the partitions or the quorum
        started = time.time()
        self.infra.script("kafka", *(("kill-node", str(down)) if cluster else ("stop",)))
        self._wait_pending("KafkaBrokerDown")  # its episode begins in this drill, not the next
        first = [] if cluster else [self.server_errors(None)]
        fired = self.prometheus.wait_firing(
            "KafkaBrokerDown", BROKER_DOWN_FOR_S + FIRE_MARGIN_S - (time.time() - started)
        )
        second = [self.server_errors(down - 1)] if cluster else []
        unreachable = self.prometheus.targets_up("kafka").get(f"broker-{down}") == 0
        ended = time.time()
        self.infra.script("kafka", *(("start-node", str(down)) if cluster else ("start",)))
        detail = f"broker {down} down {ended - started:.0f}s"
        broker = self._done(
            "drill-broker-down", "KafkaBrokerDown", started, ended, fired, detail, unreachable
        )
        return [broker, *first, *second]

    def server_errors(self, second_node: int | None) -> Fault:
        """Requests to the API while Kafka cannot take them (with `second_node`: that broker killed
        too, 2 of 3 down) until Prometheus has scraped them and OrderStatusServerErrors fires on
        their route. It may already be firing from the rounds' 5xx (it counts over 5 minutes), and
        then its value can even fall while old 5xx leave the window (seen: 146 -> 139 with the
        drill's 12 503s in): so the drill's own 5xx are proven by the route's counter, and the page
        by the alert firing once they are in it."""
        started = time.time()
        if second_node is not None:
            self.infra.script("kafka", "kill-node", str(second_node))
        before = self._server_errors_total()
        answers: dict[str, int] = {}
        deadline = time.monotonic() + SERVER_ERROR_REQUESTS_S
        total, counted = before, 0.0
        with httpx.Client(base_url=self.fleet.url("1"), timeout=15) as client:
            while time.monotonic() < deadline and not (total > before and counted > 0):
                status = self._create_order(client)
                answers[status] = answers.get(status, 0) + 1
                total = self._server_errors_total()
                counted = self._server_errors_counted() if total > before else 0.0
        ended = time.time()
        if second_node is not None:
            self.infra.script("kafka", "start-node", str(second_node))
        errors = sum(n for status, n in answers.items() if status.startswith("5"))
        shown = " ".join(f"{status}x{n}" for status, n in sorted(answers.items()))
        what = (
            f"brokers {second_node} and {self.infra.brokers} down" if second_node else "Kafka down"
        )
        detail = (
            f"{what}: answers {shown}; 5xx counted on {DRILL_ROUTE} {before:.0f} -> {total:.0f}, "
            f"the alert's value then {counted:.0f}"
        )
        fired = total > before and counted > 0
        return self._done(
            "drill-5xx",
            "OrderStatusServerErrors",
            started,
            ended,
            fired,
            detail,
            errors > 0,
            clears=False,
        )

    def _server_errors_total(self) -> float:
        """The API processes' 5xx counter on the drill's route, as Prometheus last scraped it."""
        expr = f'sum(orderstatus_http_server_errors_total{{route="{DRILL_ROUTE}"}})'
        return self.prometheus.value(expr) or 0.0

    def _server_errors_counted(self) -> float:
        """OrderStatusServerErrors' value (5xx in 5 minutes) on the drill's route; 0: not firing."""
        return sum(
            float(a["value"])
            for a in self.prometheus.firing("OrderStatusServerErrors")
            if a["labels"].get("route") == DRILL_ROUTE
        )

    # ---- helpers ------------------------------------------------------------------------------

    def _create_order(self, client: httpx.Client) -> str:
        body = {"restaurant_id": str(uuid.uuid4()), "order_id": str(uuid.uuid4())}
        headers = {
            "Authorization": f"Bearer {self.token}",
            "Idempotency-Key": f'"alert-drill-{uuid.uuid4().hex}"',
        }
        try:
            return str(client.post(DRILL_ROUTE, json=body, headers=headers).status_code)
        except httpx.TransportError as exc:
            return type(exc).__name__

    def _enqueue(self) -> None:
        records: list[RawRecord] = [
            command_record(create_command(uuid.uuid4())) for _ in range(COMMANDS_PER_ENQUEUE)
        ]
        produce(self.settings, self.settings.topics.commands, records)

    def _waiting(self) -> int:
        return sum(p.lag for p in worker_lag(self.settings))

    def _while_waiting(self, alert: str, timeout_s: float, action: Callable[[], None]) -> bool:
        """Does `action` every ENQUEUE_EVERY_S until `alert` fires or `timeout_s` passes."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            action()
            if self.prometheus.firing(alert):
                return True
            time.sleep(ENQUEUE_EVERY_S)
        return False

    def _wait_pending(self, alert: str) -> None:
        """Until `alert` is pending or firing (bounded), then a settling gap."""
        deadline = time.monotonic() + 5 * SCRAPE_S
        while time.monotonic() < deadline:
            if any(a["labels"]["alertname"] == alert for a in self.prometheus.active_alerts()):
                break
            time.sleep(SCRAPE_S / 4)
        time.sleep(SETTLE_S)

    def _done(
        self,
        kind: str,
        alert: str,
        started: float,
        ended: float,
        fired: bool,
        detail: str,
        provoked: bool,
        clears: bool = True,
    ) -> Fault:
        """Waits (bounded) for the alert to clear, says what happened, and returns the fault."""
        cleared = self.prometheus.wait_cleared(alert, CLEAR_TIMEOUT_S) if clears else None
        back = "" if cleared is None else ("; cleared" if cleared else "; NOT cleared")
        fire = f"{alert} fired" if fired else f"{alert} did NOT fire"
        self.say(f"{kind:<18} {detail}: {fire}{back}")
        time.sleep(SETTLE_S)  # what the next drill fires is the next drill's
        return Fault(kind, started, ended, detail, provoked)
