"""The API fuzzed from its own OpenAPI spec (schemathesis strategies): whatever arrives, no 5xx, no
hang, and every answer conforms to the documented schema."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from tests.conftest import Stack
from tests.stack import Tokens


def operations(stack: Stack) -> list[Any]:
    schema = schemathesis.openapi.from_url(f"{stack.url}/openapi.json")
    return [result.ok() for result in schema.get_all_operations()]


@pytest.mark.timeout(600)
def test_no_input_makes_the_api_fail_or_break_its_contract(stack: Stack, tokens: Tokens) -> None:
    headers = {"Authorization": f"Bearer {tokens.staff(uuid.uuid4())}"}
    checked = []
    for operation in operations(stack):

        @given(case=operation.as_strategy())
        @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
        def survives(case: Any) -> None:
            response = case.call(base_url=stack.url, headers=headers, timeout=15)
            assert response.status_code < 500, (case.method, case.formatted_path, response.text)
            case.validate_response(response)

        survives()
        checked.append(operation.label)
    assert "PATCH /orders/{order_id}/status" in checked
