"""`orderstatus api` refuses to start with the public dev JWT secret outside an explicitly local
environment (issue 10, scenario 4): it exits before it listens, with the reason in its log."""

from __future__ import annotations

import subprocess

import pytest

from services.adapters.settings import Settings
from tests.stack import ORDERSTATUS, free_port, settings_env


@pytest.mark.parametrize("environment", ["production", "staging", "Prod", None])
def test_the_api_refuses_to_start(environment: str | None) -> None:
    env = settings_env(Settings(api_port=free_port()))
    env.pop("JWT_SECRET", None)  # the default: the dev secret
    env.pop("ENVIRONMENT", None)
    if environment is not None:
        env["ENVIRONMENT"] = environment
    done = subprocess.run([ORDERSTATUS, "api"], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert "refusing to start" in done.stderr
    assert "development JWT secret" in done.stderr
