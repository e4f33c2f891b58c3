"""The retention purge against a real database: which rows of command_outcomes and widget_events
go, which stay, and the floor migrations 0007 and 0014 keep whatever the settings say (issue 10,
scenario 7). Both tables are partitioned by day (migration 0015): old days go as whole partitions
(as the owner), refused outcomes younger than the full retention row by row (as the services' login
role)."""

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
        for table in ("command_outcomes", "widget_events"):  # the past days' partitions
            conn.execute(
                "SELECT count(*) FROM partition_create_days(%s, current_date - 41, current_date)",
                (table,),
            )
        for (age_name, age), outcome in [(a, o) for a in AGES.items() for o in OUTCOMES]:
            conn.execute(
                """INSERT INTO command_outcomes
                   (command_id, order_id, command_type, outcome, result, created_at, issued_at)
                   VALUES (%s, %s, 'change_status', %s, %s, now() - %s, now() - %s)""",
                (uuid.uuid4(), uuid.uuid4(), outcome, f'{{"age": "{age_name}"}}', age, age),
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


def partition_days(admin_url: str, table: str) -> set[int]:
    """How many days back each of the table's daily partitions is."""
    with psycopg.connect(admin_url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT current_date - day FROM partition_days(%s) WHERE day <= current_date", (table,)
        ).fetchall()
    return {int(days) for (days,) in rows}


def test_old_rows_go_refused_ones_sooner_errors_and_young_rows_stay(
    urls: tuple[str, str], base_settings: Settings
) -> None:
    app_url, admin_url = urls
    seed(admin_url)
    settings = base_settings.model_copy(
        update={
            "database_url": app_url,
            "database_admin_url": admin_url,
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
    # The 40-day-old day went whole; of the 10-day-old one, the refused rows one by one.
    assert purged.outcomes == 4
    assert 40 not in partition_days(admin_url, "command_outcomes")
    assert {0, 2, 10} <= partition_days(admin_url, "command_outcomes")
    assert widgets == 2 * len(OUTCOMES)  # 30min and 2d
    assert purged.widget_events == 0  # whole partitions: days 6 and older
    assert max(partition_days(admin_url, "widget_events")) == 5
    assert "command_outcomes_default" not in purged.partitions_dropped
    assert len(purged.partitions_dropped) == (41 - 30) + (41 - 5)


def test_nothing_younger_than_an_hour_goes_whatever_the_settings(
    urls: tuple[str, str], base_settings: Settings
) -> None:
    app_url, admin_url = urls
    seed(admin_url)
    tiny = 1e-6  # days: well under a second
    settings = base_settings.model_copy(
        update={
            "database_url": app_url,
            "database_admin_url": admin_url,
            "retention_outcomes_days": tiny,
            "retention_refused_days": tiny,
            "retention_widget_events_days": tiny,
        }
    )
    purge(settings)
    outcomes, widgets = remaining(admin_url)
    assert outcomes == {("30min", outcome) for outcome in OUTCOMES}
    assert widgets == len(OUTCOMES)
    # The partition holding rows of 30 minutes ago stays, even when that was yesterday.
    assert 0 in partition_days(admin_url, "command_outcomes")


def test_rows_the_default_partition_caught_are_purged_row_by_row(
    urls: tuple[str, str], base_settings: Settings
) -> None:
    """No daily partition for 40 days ago (only the migration's days exist): the default
    partition holds those rows, and the row purge still deletes them."""
    app_url, admin_url = urls
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(
            """INSERT INTO command_outcomes
               (command_id, order_id, command_type, outcome, result, created_at, issued_at)
               VALUES (%s, %s, 'change_status', 'applied', '{}', now() - interval '40 days',
                       now() - interval '40 days')""",
            (uuid.uuid4(), uuid.uuid4()),
        )
        held = conn.execute("SELECT count(*) FROM command_outcomes_default").fetchone()
    assert held == (1,)
    settings = base_settings.model_copy(
        update={"database_url": app_url, "database_admin_url": admin_url}
    )
    assert purge(settings).outcomes == 1


def test_without_the_owner_the_row_purge_still_runs(
    urls: tuple[str, str], base_settings: Settings
) -> None:
    """An API given no usable owner URL cannot keep partitions (the functions are the owner's):
    that is logged, and the row purge runs all the same."""
    app_url, admin_url = urls
    seed(admin_url)
    settings = base_settings.model_copy(
        update={"database_url": app_url, "database_admin_url": app_url}
    )
    purged = purge(settings)
    assert purged.partitions_dropped == []
    assert purged.outcomes > 0 and purged.widget_events > 0
