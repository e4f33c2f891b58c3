"""The API fuzzed from its own OpenAPI spec (schemathesis strategies): whatever arrives, no 5xx, no
hang, and every answer conforms to the documented schema."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from tests.conftest import Stack
from tests.stack import Tokens

JUDGED_BEYOND_THE_SCHEMA = {"POST /webhooks/endpoints"}
"""Where a schema-valid request may still be refused with a 422: a webhook URL is resolved and
refused for loopback, private or reserved addresses (SSRF rules, docs/webhooks.md), which no JSON
Schema can say. Every other check still applies there."""


def operations(stack: Stack) -> list[Any]:
    schema = schemathesis.openapi.from_url(f"{stack.url}/openapi.json")
    return [result.ok() for result in schema.get_all_operations()]


@pytest.mark.timeout(600)
def test_no_input_makes_the_api_fail_or_break_its_contract(stack: Stack, tokens: Tokens) -> None:
    headers = {"Authorization": f"Bearer {tokens.staff(uuid.uuid4())}"}
    checked = []
    for operation in operations(stack):
        excluded = [positive_data_acceptance] if operation.label in JUDGED_BEYOND_THE_SCHEMA else []

        @given(case=operation.as_strategy())
        @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
        def survives(case: Any) -> None:
            response = case.call(base_url=stack.url, headers=headers, timeout=15)
            assert response.status_code < 500, (case.method, case.formatted_path, response.text)
            case.validate_response(response, excluded_checks=excluded)  # noqa: B023 (called here)

        survives()
        checked.append(operation.label)
    assert "PATCH /orders/{order_id}/status" in checked
