"""Which alerts the chaos run's faults fired, how soon, and whether they cleared: the verdict.

Pure (no I/O): the fault timeline (what the rounds and drills did, when) and the alert timeline
(Prometheus's ALERTS series over the run, turned into episodes by `episodes_from_alerts`) go in; a
table per kind of fault, the pages that were owed and never came, and the noise come out.

The rules, in one place (MUST_PAGE):
- A fault the runbook says must page (a worker down with lag growing, a broker unreachable, dead
  letters, 5xx), brought about by a drill, owes its page once it lasted at least the alert's own
  `for:` (`owed_after_s`). It is paid when one of the listed alerts was firing at
  some moment between the fault's start and `DETECT_S` after its end; firing already (an earlier
  fault's page still on) counts: the pager is ringing. Owed and not paid fails the run.
- A drill that did not bring about its condition (no lag grew, no 5xx came) proves nothing: it
  fails too (`Fault.provoked` False).
- An alert belongs to the latest fault that began before it went active, if it went active before
  that fault's end + `ATTRIBUTION_GRACE_S` (after-effects: a restarted broker catching up). A firing
  alert that belongs to no fault is noise (reported, not failed)."""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

DETECT_S = 20.0
"""After a fault's end: scrape + evaluation intervals and a metric's own delay (a dead letter is
counted once the worker polled it)."""
ATTRIBUTION_GRACE_S = 45.0
"""An alert that went active this long after a fault's end is still that fault's."""
IGNORED: Mapping[str, str] = {
    "NotifierDown": "the chaos fleet runs no webhook notifier (the rule fires on its absence)",
}
"""Alerts that say nothing about the faults, and why; listed in the report, never judged."""


@dataclass(frozen=True)
class Page:
    """A page the runbook owes for a kind of fault."""

    alerts: frozenset[str]
    """Any one of them pays it."""
    owed_after_s: float
    """The fault owes the page once it lasted this long: the alert's `for:`."""
    why: str


WORKER_DOWN = Page(
    frozenset({"OrderStatusWorkerDown"}), 60, "worker down with lag growing (runbook 5)"
)
BROKER_UNREACHABLE = Page(frozenset({"KafkaBrokerDown"}), 30, "broker unreachable (runbook 9)")
DEAD_LETTERS = Page(frozenset({"OrderStatusDeadLetters"}), 0, "dead letters (runbook 6)")
SERVER_ERRORS = Page(frozenset({"OrderStatusServerErrors"}), 0, "5xx answers (runbook 3)")

MUST_PAGE: Mapping[str, tuple[Page, ...]] = {
    "drill-worker-down": (WORKER_DOWN,),
    "drill-broker-down": (BROKER_UNREACHABLE,),
    "drill-dead-letter": (DEAD_LETTERS,),
    "drill-5xx": (SERVER_ERRORS,),
}
"""Fault kind -> the pages it owes: the drills (tests/chaos/alert_drills.py), each holding its fault
until the page is owed. What any fault fires beyond them is reported, not judged."""

SHORT = "a round's fault is undone within seconds, before the alert's for: is up (a drill holds it)"
OWES_NO_PAGE: Mapping[str, str] = {
    "worker-kill9": SHORT,
    "worker-sigterm": SHORT,
    "broker-restart": SHORT,
    "leader-kill9": SHORT,
    "controller-kill9": SHORT,
    "follower-kill9": SHORT,
    "isr-drop": SHORT,
    "api-kill9": SHORT,
    "postgres-restart": SHORT,
    "worker-add": "nothing is down: a worker joins the group",
    "worker-remove": "scale-in: the other worker takes the partitions over",
    "api-add": "nothing is down: an API process joins",
    "api-remove": "scale-in: the other API process serves",
}
"""The chaos rounds' kinds (tests/chaos/actions.py FaultKind) and why none owes a page: a round's
duration is the harness's (it includes the restart and, for brokers, the ISR refilling), not how
long the part was unreachable, so it cannot say that an alert's `for:` was reached."""


@dataclass(frozen=True)
class Fault:
    kind: str
    started_at: float
    """Epoch seconds (the harness's clock and Prometheus's are the same machine's)."""
    ended_at: float
    """When the fault was undone: a drill's restart issued (the bad record sent); a round's part
    back (restarted and ready: a broker's exporter may answer, and its alert clear, before)."""
    detail: str = ""
    provoked: bool | None = None
    """Drills only: whether the condition the page is about really held (lag grew, 5xx came)."""

    @property
    def seconds(self) -> float:
        return self.ended_at - self.started_at


@dataclass(frozen=True)
class AlertEpisode:
    """One alert instance from pending (or firing, without `for:`) to resolved."""

    name: str
    labels: tuple[tuple[str, str], ...]
    active_since: float
    firing_since: float | None
    """None: it went pending and resolved before its `for:` was up (it never paged)."""
    resolved_at: float | None
    """None: still active when the run ended."""

    def firing_during(self, start: float, end: float) -> bool:
        if self.firing_since is None or self.firing_since > end:
            return False
        return self.resolved_at is None or self.resolved_at >= start

    def describe(self) -> str:
        shown = ",".join(f"{k}={v}" for k, v in self.labels if k not in ("severity", "job"))
        return f"{self.name}{{{shown}}}" if shown else self.name


@dataclass(frozen=True)
class AlertFigures:
    """One alert over the faults of one kind."""

    name: str
    faults: int
    """Faults of the kind that fired it."""
    fired_after_s: list[float]
    """From each fault's start to the alert firing."""
    cleared_after_s: list[float]
    """From each fault's end (recovery) to the alert resolving."""
    not_cleared: int
    """Fired and still firing at the end of the run."""
    pending_only: int
    """Went pending and resolved before its `for:` was up."""


@dataclass(frozen=True)
class KindSummary:
    kind: str
    faults: int
    longest_s: float
    alerts: list[AlertFigures]
    already_firing: list[str]
    """Owed alerts that were firing from an earlier fault when this kind's faults began."""


@dataclass(frozen=True)
class MissedPage:
    kind: str
    started_at: float
    seconds: float
    expected: list[str]
    why: str


@dataclass
class AlertVerdict:
    kinds: list[KindSummary]
    missed: list[MissedPage]
    noise: list[AlertEpisode]
    ignored: list[tuple[str, str]]
    owed: int = 0
    """Pages owed over the run (paid + missed)."""
    episodes: list[AlertEpisode] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.missed


def judge(
    faults: Sequence[Fault],
    episodes: Sequence[AlertEpisode],
    must_page: Mapping[str, tuple[Page, ...]] = MUST_PAGE,
) -> AlertVerdict:
    faults = sorted(faults, key=lambda f: f.started_at)
    judged = [e for e in episodes if e.name not in IGNORED]
    ignored = sorted({(e.name, IGNORED[e.name]) for e in episodes if e.name in IGNORED})
    owners = {id(e): _owner(e, faults) for e in judged}
    missed: list[MissedPage] = []
    owed = 0
    for fault in faults:
        for page in must_page.get(fault.kind, ()):
            if fault.provoked is False:
                owed += 1
                why = f"the drill did not bring about its condition ({fault.detail})"
                missed.append(_missed(fault, page, why))
                continue
            if fault.seconds < page.owed_after_s:
                continue
            owed += 1
            window_end = fault.ended_at + DETECT_S
            if not any(
                e.name in page.alerts and e.firing_during(fault.started_at, window_end)
                for e in judged
            ):
                missed.append(_missed(fault, page, page.why))
    noise = [e for e in judged if owners[id(e)] is None and e.firing_since is not None]
    kinds = [
        _summary(kind, [f for f in faults if f.kind == kind], judged, owners, must_page)
        for kind in dict.fromkeys(f.kind for f in faults)
    ]
    return AlertVerdict(kinds, missed, noise, ignored, owed, list(episodes), list(faults))


def _missed(fault: Fault, page: Page, why: str) -> MissedPage:
    return MissedPage(fault.kind, fault.started_at, fault.seconds, sorted(page.alerts), why)


def _owner(episode: AlertEpisode, faults: Sequence[Fault]) -> Fault | None:
    """The latest fault that began before the episode went active, if the episode went active
    within its grace (`active_since` is sampled: never earlier than the alert went active)."""
    before = [f for f in faults if f.started_at <= episode.active_since]
    if not before:
        return None
    latest = before[-1]
    return latest if episode.active_since <= latest.ended_at + ATTRIBUTION_GRACE_S else None


def _summary(
    kind: str,
    faults: Sequence[Fault],
    episodes: Sequence[AlertEpisode],
    owners: Mapping[int, Fault | None],
    must_page: Mapping[str, tuple[Page, ...]],
) -> KindSummary:
    by_alert: dict[str, list[tuple[Fault, AlertEpisode]]] = defaultdict(list)
    for episode in episodes:
        owner = owners[id(episode)]
        if owner is not None and owner.kind == kind:
            by_alert[episode.name].append((owner, episode))
    figures = []
    for name, pairs in sorted(by_alert.items()):
        fired = [(f, e) for f, e in pairs if e.firing_since is not None]
        figures.append(
            AlertFigures(
                name,
                len({id(f) for f, _ in fired}),
                [
                    round(e.firing_since - f.started_at, 1)
                    for f, e in fired
                    if e.firing_since is not None
                ],
                [
                    round(e.resolved_at - f.ended_at, 1)
                    for f, e in fired
                    if e.resolved_at is not None
                ],
                sum(1 for _, e in fired if e.resolved_at is None),
                len(pairs) - len(fired),
            )
        )
    owed_names = {name for page in must_page.get(kind, ()) for name in page.alerts}
    already = sorted(
        {
            e.name
            for f in faults
            for e in episodes
            if e.name in owed_names
            and e.firing_since is not None
            and e.firing_since < f.started_at
            and e.firing_during(f.started_at, f.ended_at)
        }
    )
    longest = max(f.seconds for f in faults)
    return KindSummary(kind, len(faults), round(longest, 1), figures, already)


def episodes_from_alerts(
    series: Iterable[Mapping[str, Any]], step_s: float, until: float
) -> list[AlertEpisode]:
    """Episodes from a query_range of `ALERTS` (step `step_s`, ending at `until`): one series per
    alert instance and state (pending, firing), present while the alert is. A gap of more than
    1.5 steps ends an episode; samples within 1.5 steps of `until` leave it unresolved."""
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], list[tuple[float, str]]] = defaultdict(
        list
    )
    for entry in series:
        metric = dict(entry["metric"])
        state = metric.pop("alertstate", "firing")
        name = metric.pop("alertname")
        metric.pop("__name__", None)
        identity = (name, tuple(sorted(metric.items())))
        samples[identity].extend((float(t), state) for t, _value in entry["values"])
    episodes = []
    gap = 1.5 * step_s
    for (name, labels), points in samples.items():
        points.sort()
        run: list[tuple[float, str]] = []
        for point in points:
            split = run and (
                point[0] - run[-1][0] > gap or (run[-1][1] == "firing" and point[1] == "pending")
            )
            if split:
                episodes.append(_episode(name, labels, run, step_s, until))
                run = []
            run.append(point)
        if run:
            episodes.append(_episode(name, labels, run, step_s, until))
    return sorted(episodes, key=lambda e: (e.active_since, e.name))


def _episode(
    name: str,
    labels: tuple[tuple[str, str], ...],
    run: Sequence[tuple[float, str]],
    step_s: float,
    until: float,
) -> AlertEpisode:
    firing = [t for t, state in run if state == "firing"]
    last = run[-1][0]
    resolved = None if until - last <= 1.5 * step_s else last + step_s
    return AlertEpisode(name, labels, run[0][0], firing[0] if firing else None, resolved)


def verdict_json(verdict: AlertVerdict, run_started: float) -> dict[str, Any]:
    """The verdict for report.json; times relative to the run's start."""

    def at(t: float | None) -> float | None:
        return None if t is None else round(t - run_started, 1)

    return {
        "passed": verdict.passed,
        "pages_owed": verdict.owed,
        "missed_pages": [
            {
                "kind": m.kind,
                "at_s": at(m.started_at),
                "lasted_s": round(m.seconds, 1),
                "expected": m.expected,
                "why": m.why,
            }
            for m in verdict.missed
        ],
        "kinds": [
            {
                "kind": k.kind,
                "faults": k.faults,
                "longest_s": k.longest_s,
                "already_firing": k.already_firing,
                "alerts": [
                    {
                        "alert": a.name,
                        "faults_fired": a.faults,
                        "fired_after_s": _spread(a.fired_after_s),
                        "cleared_after_s": _spread(a.cleared_after_s),
                        "not_cleared": a.not_cleared,
                        "pending_only": a.pending_only,
                    }
                    for a in k.alerts
                ],
            }
            for k in verdict.kinds
        ],
        "drills": [
            {
                "kind": f.kind,
                "at_s": at(f.started_at),
                "lasted_s": round(f.seconds, 1),
                "provoked": f.provoked,
                "detail": f.detail,
            }
            for f in verdict.faults
            if f.provoked is not None
        ],
        "noise": [
            {"alert": e.describe(), "active_at_s": at(e.active_since)} for e in verdict.noise
        ],
        "ignored": [{"alert": name, "why": why} for name, why in verdict.ignored],
        "timeline": [
            {
                "alert": e.describe(),
                "active_at_s": at(e.active_since),
                "firing_at_s": at(e.firing_since),
                "resolved_at_s": at(e.resolved_at),
            }
            for e in verdict.episodes
        ],
    }


def _spread(values: Sequence[float]) -> dict[str, float] | None:
    if not values:
        return None
    return {
        "min": min(values),
        "median": round(statistics.median(values), 1),
        "max": max(values),
    }
