"""The alert and recording rules pass promtool: syntax (`check rules`) and behaviour (`test rules`,
one test per alert firing and one not firing, in deploy/prometheus/tests)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import yaml

from tests.chaos import alerts as chaos_alerts
from tests.tools import needs_tool, require, which

PROMETHEUS_DIR = Path(__file__).resolve().parents[2] / "deploy" / "prometheus"
PROMTOOL = which("promtool")

pytestmark = needs_tool(PROMTOOL, "promtool")


def promtool(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [require(PROMTOOL, "promtool"), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_rule_files_pass_promtool_check_rules() -> None:
    rule_files = sorted((PROMETHEUS_DIR / "rules").glob("*.yml"))
    assert rule_files
    checked = promtool("check", "rules", *rule_files)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_the_rule_unit_tests_pass_promtool_test_rules() -> None:
    test_files = sorted((PROMETHEUS_DIR / "tests").glob("*.yml"))
    assert test_files
    tested = promtool("test", "rules", *test_files)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout


def test_the_local_prometheus_config_passes_promtool_check_config() -> None:
    checked = promtool("check", "config", PROMETHEUS_DIR / "prometheus.yml")
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_the_chaos_runs_prometheus_config_passes_promtool_check_config(tmp_path: Path) -> None:
    targets = tmp_path / "targets"
    targets.mkdir()
    config = tmp_path / "prometheus.yml"
    config.write_text(yaml.safe_dump(chaos_alerts.prometheus_config(targets)))
    checked = promtool("check", "config", config)
    assert checked.returncode == 0, checked.stdout + checked.stderr
