"""External tools some tests need (promtool, prometheus). Missing on a developer's machine: those
tests are skipped, saying so. Where ORDERSTATUS_REQUIRE_TOOLS=1 (CI: .ci/run sets it) or CI is set,
a missing tool fails them instead: the suite never passes by not running them."""

from __future__ import annotations

import os
import shutil

import pytest

REQUIRED = os.environ.get("ORDERSTATUS_REQUIRE_TOOLS") == "1" or bool(os.environ.get("CI"))


def which(name: str) -> str | None:
    return shutil.which(name)


def needs_tool(path: str | None, name: str) -> pytest.MarkDecorator:
    """A module mark: skip when `name` is missing, unless tools are required (then the tests run
    and fail on the missing tool, see require())."""
    return pytest.mark.skipif(
        path is None and not REQUIRED,
        reason=f"{name} missing: deploy/local/prometheus.sh install brings it "
        "(with ORDERSTATUS_REQUIRE_TOOLS=1, as in CI, this fails instead)",
    )


def require(path: str | None, name: str) -> str:
    """The tool's path, or a failure that names it."""
    if path is None:
        pytest.fail(f"{name} missing (required: ORDERSTATUS_REQUIRE_TOOLS / CI)", pytrace=False)
    return path
