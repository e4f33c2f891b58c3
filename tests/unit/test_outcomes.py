"""The one outcome table (services/core/outcomes.py): every outcome has every column, and the
names it gives are the ones the runbook, dashboards, alert rules and API clients already use."""

from __future__ import annotations

import dataclasses

import pytest

from services.core.messages import Outcome
from services.core.outcomes import OUTCOME_NAMES, TIMEOUT_EVENT, UNAVAILABLE_EVENT
from services.observability import sentry
from services.observability.api_metrics import OUTCOME_OF_EVENT


def test_every_outcome_has_a_row() -> None:
    assert set(OUTCOME_NAMES) == set(Outcome)


@pytest.mark.parametrize("outcome", list(Outcome))
def test_every_outcome_has_every_column(outcome: Outcome) -> None:
    names = OUTCOME_NAMES[outcome]
    for column in dataclasses.fields(names):
        value = getattr(names, column.name)
        if column.name == "problem":
            # applied is the one outcome that is no refusal, and so has no problem body
            assert (value is None) == (outcome is Outcome.APPLIED)
            if value is not None:
                assert value.kind and value.title
        elif column.name != "sentry_message":
            assert value, column.name
    assert isinstance(names.sentry_message, bool)
    assert 200 <= names.http_status < 600


@pytest.mark.parametrize("column", ["evt", "metric", "http_status"])
def test_no_two_outcomes_share_a_name(column: str) -> None:
    values = [getattr(names, column) for names in OUTCOME_NAMES.values()]
    assert len(set(values)) == len(values)


def test_the_names_in_use_are_unchanged() -> None:
    """The runbook's evts, the metric labels (the Outcome's value) and the HTTP statuses as
    they were before the table: changing one breaks searches, dashboards or clients."""
    assert {o.value: (n.evt, n.metric, n.http_status) for o, n in OUTCOME_NAMES.items()} == {
        "applied": ("order_status_success", "applied", 200),
        "conflict": ("order_status_conflict", "conflict", 409),
        "forbidden": ("order_status_forbidden", "forbidden", 403),
        "not_found": ("order_status_not_found", "not_found", 404),
        "invalid": ("order_status_invalid", "invalid", 422),
        "error": ("order_status_exception", "error", 500),
    }
    assert all(n.metric == o.value for o, n in OUTCOME_NAMES.items())


def test_the_views_are_derived_from_the_table() -> None:
    assert {
        **{n.evt: n.metric for n in OUTCOME_NAMES.values()},
        UNAVAILABLE_EVENT: "unavailable",
        TIMEOUT_EVENT: "timeout",
    } == OUTCOME_OF_EVENT
    assert sentry.MESSAGE_OF_EVENT == {
        "order_status_conflict": "order-status-conflict",
        "order_status_forbidden": "order-status-forbidden",
    }
    assert (sentry.SUCCESS, sentry.EXCEPTION) == ("order-status-success", "order-status-exception")
