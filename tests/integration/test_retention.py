"""The retention purge against a real database, as the services' login role: which rows of
command_outcomes and widget_events go, which stay, and the floor migration 0007 keeps whatever the
settings say (issue 10, scenario 7)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import timedelta

import psycopg
import pytest

from services.adapters.settings import Settings
from services.ops.retention import purge
from tests.stack import migrated_database

AGES = {
    "30min": timedelta(minutes=30),
    "2d": timedelta(days=2),
    "10d": timedelta(days=10),
    "40d": timedelta(days=40),
}
OUTCOMES = ["applied", "conflict", "forbidden", "not_found", "invalid", "error"]


@pytest.fixture
def urls(base_settings: Settings) -> Iterator[tuple[str, str]]:
    with migrated_database(base_settings) as urls:
        yield urls


def seed(admin_url: str) -> None:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        for (age_name, age), outcome in [(a, o) for a in AGES.items() for o in OUTCOMES]:
            conn.execute(
                """INSERT INTO command_outcomes
                   (command_id, order_id, command_type, outcome, result, created_at)
                   VALUES (%s, %s, 'change_status', %s, %s, now() - %s)""",
                (uuid.uuid4(), uuid.uuid4(), outcome, f'{{"age": "{age_name}"}}', age),
            )
            conn.execute(
                """INSERT INTO widget_events (type, payload, created_at)
                   VALUES ('order_status_conflict', %s, now() - %s)""",
                (f'{{"age": "{age_name}", "outcome": "{outcome}"}}', age),
            )


def remaining(admin_url: str) -> tuple[set[tuple[str, str]], int]:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        outcomes = {
            (str(age), str(outcome))
            for age, outcome in conn.execute(
                "SELECT result ->> 'age', outcome FROM command_outcomes"
            )
        }
        widgets = conn.execute("SELECT count(*) FROM widget_events").fetchone()
    assert widgets is not None
    return outcomes, int(widgets[0])


def test_old_rows_go_refused_ones_sooner_errors_and_young_rows_stay(
    urls: tuple[str, str], base_settings: Settings
) -> None:
    app_url, admin_url = urls
    seed(admin_url)
    settings = base_settings.model_copy(
        update={
            "database_url": app_url,
            "retention_outcomes_days": 30.0,
            "retention_refused_days": 7.0,
            "retention_widget_events_days": 5.0,
            "retention_purge_batch": 3,  # several batches
        }
    )
    purged = purge(settings)

    outcomes, widgets = remaining(admin_url)
    expected = {
        (age, outcome)
        for age in ("30min", "2d", "10d")
        for outcome in OUTCOMES
        if not (age == "10d" and outcome in ("conflict", "forbidden", "not_found", "invalid"))
    }
    assert outcomes == expected
    assert purged.outcomes == len(AGES) * len(OUTCOMES) - len(expected)
    assert widgets == 2 * len(OUTCOMES)  # 30min and 2d
    assert purged.widget_events == 2 * len(OUTCOMES)


def test_nothing_younger_than_an_hour_goes_whatever_the_settings(
    urls: tuple[str, str], base_settings: Settings
) -> None:
    app_url, admin_url = urls
    seed(admin_url)
    tiny = 1e-6  # days: well under a second
    settings = base_settings.model_copy(
        update={
            "database_url": app_url,
            "retention_outcomes_days": tiny,
            "retention_refused_days": tiny,
            "retention_widget_events_days": tiny,
        }
    )
    purge(settings)
    outcomes, widgets = remaining(admin_url)
    assert outcomes == {("30min", outcome) for outcome in OUTCOMES}
    assert widgets == len(OUTCOMES)
