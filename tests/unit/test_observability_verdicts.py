"""Doctor's verdicts against the runbook thresholds (tables), and properties of the lag arithmetic
and the verdict order."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import SecretStr

from services.adapters.settings import DEV_JWT_SECRET, Settings
from services.observability import slis
from services.observability.kafka_lag import PartitionLag, lag_of
from services.ops.doctor import window_seconds
from services.ops.verdicts import (
    LAG_FAIL,
    LAG_WARN,
    MIN_PATCHES_TO_JUDGE,
    Verdict,
    judge_config,
    judge_dead_letters,
    judge_indexes,
    judge_lag,
    judge_reachable,
    judge_server_errors,
    judge_sli,
    judge_statements,
    judge_targets,
    worst,
)

REAL_SIGNING_KEYS = "k1:" + base64.b64encode(b"s" * 32).decode()

ENOUGH = float(MIN_PATCHES_TO_JUDGE)


@pytest.mark.parametrize(
    ("sli", "value", "patches", "verdict"),
    [
        (slis.CONFLICT, 0.0, ENOUGH, Verdict.OK),
        (slis.CONFLICT, 0.02, ENOUGH, Verdict.OK),
        (slis.CONFLICT, 0.0201, ENOUGH, Verdict.FAIL),
        (slis.CONFLICT, 0.5, ENOUGH - 1, Verdict.INFO),
        (slis.DENIAL, 0.005, ENOUGH, Verdict.OK),
        (slis.DENIAL, 0.0051, ENOUGH, Verdict.FAIL),
        (slis.PATCH_P95, 0.3, ENOUGH, Verdict.OK),
        (slis.PATCH_P95, 0.31, ENOUGH, Verdict.FAIL),
        (slis.PATCH_P95, None, 0.0, Verdict.INFO),
        (slis.PATCH_P95, float("nan"), ENOUGH, Verdict.INFO),
    ],
)
def test_sli_verdicts(sli: slis.Sli, value: float | None, patches: float, verdict: Verdict) -> None:
    assert judge_sli(sli, value, patches).verdict is verdict


@pytest.mark.parametrize(
    ("errors", "value", "verdict"),
    [
        (0.0, 1.0, Verdict.OK),
        (0.0, None, Verdict.OK),
        (1.0, 0.9999, Verdict.FAIL),
        (3.0, 0.5, Verdict.FAIL),
    ],
)
def test_any_5xx_is_red(errors: float, value: float | None, verdict: Verdict) -> None:
    assert judge_server_errors(errors, value, ">= 99.90 %").verdict is verdict


def lags(*pairs: tuple[int | None, int]) -> list[PartitionLag]:
    """(committed, high) per partition, from a topic whose low watermark is 0."""
    return [PartitionLag(p, c, h, lag_of(0, h, c)) for p, (c, h) in enumerate(pairs)]


@pytest.mark.parametrize(
    ("before", "after", "verdict"),
    [
        (lags((10, 10)), lags((10, 10)), Verdict.OK),
        (lags((None, 0)), lags((None, 0)), Verdict.OK),
        (lags((5, 10)), lags((5, 10)), Verdict.FAIL),  # waiting, no progress: no worker
        (lags((None, 5)), lags((None, 5)), Verdict.FAIL),  # never consumed at all
        (lags((5, 10)), lags((8, 12)), Verdict.OK),  # in flight, progressing
        (lags((0, 0)), lags((1, LAG_WARN + 1)), Verdict.WARN),
        (lags((0, 0)), lags((1, LAG_FAIL + 1)), Verdict.FAIL),
        (lags((5, 10), (3, 3)), lags((5, 10), (4, 4)), Verdict.OK),  # another partition moved
    ],
)
def test_lag_verdicts(
    before: list[PartitionLag], after: list[PartitionLag], verdict: Verdict
) -> None:
    assert judge_lag(before, after, 2.0).verdict is verdict


@given(
    low=st.integers(0, 10**9),
    span=st.integers(0, 10**6),
    committed=st.one_of(st.none(), st.integers(-1001, 2 * 10**9)),
)
def test_lag_is_never_negative_nor_more_than_the_topic_holds(
    low: int, span: int, committed: int | None
) -> None:
    high = low + span
    lag = lag_of(low, high, committed)
    assert 0 <= lag <= span
    if committed is not None and low <= committed <= high:
        assert lag == high - committed


@given(st.lists(st.sampled_from(list(Verdict))))
def test_the_overall_verdict_is_the_worst_and_info_counts_as_green(verdicts: list[Verdict]) -> None:
    overall = worst(verdicts)
    assert all(overall.rank >= v.rank for v in verdicts)
    if Verdict.FAIL not in verdicts and Verdict.WARN not in verdicts:
        assert overall.rank == 0


@pytest.mark.parametrize(
    ("present", "verdict"),
    [
        (
            {
                ("orders", "orders_status_created_idx"),
                ("order_status_events", "order_status_events_created_idx"),
            },
            Verdict.OK,
        ),
        # The seed looked for orders_status_created_idx on order_status_events: not good enough.
        (
            {
                ("order_status_events", "orders_status_created_idx"),
                ("order_status_events", "order_status_events_created_idx"),
            },
            Verdict.FAIL,
        ),
        ({("orders", "orders_status_created_idx")}, Verdict.FAIL),
    ],
)
def test_index_verdicts(present: set[tuple[str, str]], verdict: Verdict) -> None:
    assert judge_indexes(present).verdict is verdict


@pytest.mark.parametrize(
    ("installed", "means", "verdict"),
    [
        (False, [], Verdict.WARN),
        (True, [], Verdict.OK),
        (True, [0.2, 12.0], Verdict.OK),
        (True, [150.0], Verdict.WARN),
        (True, [1500.0], Verdict.FAIL),
    ],
)
def test_statement_verdicts(installed: bool, means: list[float], verdict: Verdict) -> None:
    assert judge_statements(installed, means).verdict is verdict


@pytest.mark.parametrize(
    ("environment", "sentry", "dev_secret", "verdict"),
    [
        ("dev", False, True, Verdict.OK),
        ("test", False, True, Verdict.OK),
        ("prod", True, False, Verdict.OK),
        ("prod", False, False, Verdict.WARN),
        ("prod", True, True, Verdict.FAIL),
        ("staging", True, True, Verdict.FAIL),
        ("production", True, True, Verdict.FAIL),
        ("", True, True, Verdict.FAIL),
        ("local", False, True, Verdict.OK),
    ],
)
def test_config_verdicts(
    environment: str, sentry: bool, dev_secret: bool, verdict: Verdict
) -> None:
    settings = Settings(
        environment=environment,
        sentry_dsn="http://key@127.0.0.1:9/1" if sentry else None,
        jwt_secret=SecretStr(DEV_JWT_SECRET if dev_secret else "a-real-secret-" + "x" * 32),
        command_signing_keys=SecretStr(REAL_SIGNING_KEYS),
    )
    assert judge_config(settings).verdict is verdict


@pytest.mark.parametrize("environment", ["prod", ""])
def test_config_fails_without_signing_keys_outside_a_local_environment(environment: str) -> None:
    settings = Settings(
        environment=environment,
        sentry_dsn="http://key@127.0.0.1:9/1",
        jwt_secret=SecretStr("a-real-secret-" + "x" * 32),
        command_signing_keys=SecretStr(""),
    )
    judged = judge_config(settings)
    assert judged.verdict is Verdict.FAIL and "COMMAND_SIGNING_KEYS" in judged.summary


def test_small_verdicts() -> None:
    assert judge_dead_letters(0).verdict is Verdict.OK
    assert judge_dead_letters(3).verdict is Verdict.WARN
    assert judge_reachable("kafka", None).verdict is Verdict.OK
    assert judge_reachable("kafka", "timeout").verdict is Verdict.FAIL
    assert judge_reachable("prometheus", "timeout", required=False).verdict is Verdict.WARN
    assert judge_targets([]).verdict is Verdict.WARN
    assert (
        judge_targets([("command-api", "a", True), ("status-worker", "b", True)]).verdict
        is Verdict.OK
    )
    assert (
        judge_targets([("command-api", "a", True), ("status-worker", "b", False)]).verdict
        is Verdict.FAIL
    )


@pytest.mark.parametrize(
    ("window", "seconds"), [("30s", 30), ("15m", 900), ("1h", 3600), ("7d", 604800)]
)
def test_windows(window: str, seconds: int) -> None:
    assert window_seconds(window) == seconds


@pytest.mark.parametrize("window", ["", "15", "0m", "5 m", "1w", "1h30m", "-5m"])
def test_malformed_windows_are_refused(window: str) -> None:
    with pytest.raises(ValueError):
        window_seconds(window)
