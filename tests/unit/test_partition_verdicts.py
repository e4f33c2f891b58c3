"""doctor's verdict on the daily partitions (services/ops/verdicts.judge_partitions)."""

from __future__ import annotations

import pytest

from services.ops.verdicts import Verdict, judge_partitions

TABLES = ("order_status_events", "command_outcomes", "widget_events")


@pytest.mark.parametrize(
    ("ahead", "default_rows", "verdict", "says"),
    [
        ({t: 14 for t in TABLES}, dict.fromkeys(TABLES, 0), Verdict.OK, "14 days"),
        ({**{t: 14 for t in TABLES}, "widget_events": 2}, {}, Verdict.WARN, "widget_events"),
        ({**{t: 14 for t in TABLES}, "command_outcomes": -1}, {}, Verdict.FAIL, "no partition"),
        ({t: 14 for t in TABLES}, {"command_outcomes": 3}, Verdict.WARN, "default partition"),
        ({}, {}, Verdict.FAIL, "0015"),
    ],
)
def test_partitions_running_short_warn_and_none_for_today_fails(
    ahead: dict[str, int], default_rows: dict[str, int], verdict: Verdict, says: str
) -> None:
    judged = judge_partitions(ahead, default_rows)
    assert judged.verdict is verdict
    assert says in judged.summary
