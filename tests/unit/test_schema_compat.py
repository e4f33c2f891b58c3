"""Each current schema in schemas/ keeps what every released version in schemas/history/ promised
(services/core/schema_compat.py), and the check does fail on the changes that break consumers:
a real model change as well as hand-made schema edits."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import pytest
from hypothesis import given
from pydantic import BaseModel, create_model

from services.adapters.schemas import CONTRACTS, render
from services.core.events import OrderChangeData, OrderCloudEvent, encode_cloud_event
from services.core.schema_compat import breaking_changes
from services.core.statuses import OrderStatus
from tests.unit.strategies import UNIT_SETTINGS, cloud_events
from tests.unit.test_schemas import violations

SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"
HISTORY = SCHEMAS / "history"

Json = Any


def released(name: str) -> list[Path]:
    """`order-event.schema.json` -> history/order-event.v1.schema.json, v2, ..."""
    stem = name.removesuffix(".schema.json")
    return sorted(HISTORY.glob(f"{stem}.v*.schema.json"))


def load(path: Path) -> Json:
    return json.loads(path.read_text())


def event_schema() -> Json:
    return load(SCHEMAS / "order-event.schema.json")


@pytest.mark.parametrize("name", sorted(CONTRACTS))
def test_every_contract_has_a_released_version(name: str) -> None:
    assert released(name), f"no schemas/history/ copy of {name}: add its first release"


@pytest.mark.parametrize(
    "old",
    sorted(HISTORY.glob("*.schema.json")),
    ids=lambda path: path.name,
)
def test_the_current_schema_keeps_what_each_released_version_promised(old: Path) -> None:
    name = old.name.split(".v")[0] + ".schema.json"
    assert name in CONTRACTS, f"{old.name} is the history of no current contract"
    assert breaking_changes(load(old), json.loads(render(CONTRACTS[name]))) == []


@UNIT_SETTINGS
@given(event=cloud_events)
def test_events_the_first_release_accepted_the_current_schema_accepts(
    event: OrderCloudEvent,
) -> None:
    v1, current = load(HISTORY / "order-event.v1.schema.json"), event_schema()
    instance = json.loads(encode_cloud_event(event))
    assert list(violations(instance, v1, v1)) == []
    assert list(violations(instance, current, current)) == []


# ---- a breaking model change fails the check ------------------------------------------------------


def event_model_with_data(**changes: Any) -> type[BaseModel]:
    """OrderCloudEvent whose `data` has some fields changed (None removes one)."""
    fields: dict[str, Any] = {
        name: (info.annotation, info) for name, info in OrderChangeData.model_fields.items()
    }
    for name, definition in changes.items():
        if definition is None:
            del fields[name]
        else:
            fields[name] = definition
    data = create_model(  # type: ignore[call-overload]
        "OrderChangeData", __config__=OrderChangeData.model_config, **fields
    )
    envelope: dict[str, Any] = {
        name: (info.annotation, info) for name, info in OrderCloudEvent.model_fields.items()
    }
    envelope["data"] = (data, ...)
    model: type[BaseModel] = create_model(  # type: ignore[call-overload]
        "OrderCloudEvent", __config__=OrderCloudEvent.model_config, **envelope
    )
    return model


FewerStatuses = Literal["pending", "accepted", "rejected", "preparing", "ready", "completed"]


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"reason": None}, "$.data.reason: no longer required"),
        ({"version": (str, ...)}, "$.data.version: type changed from integer to string"),
        ({"table": (int, ...)}, "$.data.table: newly required"),
        ({"to_status": (FewerStatuses, ...)}, "values no longer allowed: ['cancelled']"),
        ({"from_status": (OrderStatus, ...)}, "$.data.from_status: type changed from null"),
    ],
    ids=["field removed", "type changed", "field added as required", "enum shrunk", "null dropped"],
)
def test_a_breaking_model_change_fails_the_check(change: dict[str, Any], expected: str) -> None:
    v1 = load(HISTORY / "order-event.v1.schema.json")
    changed = json.loads(render(event_model_with_data(**change)))
    problems = breaking_changes(v1, changed)
    assert any(expected in p for p in problems), problems


def test_an_optional_field_added_to_the_model_passes_the_check() -> None:
    v1 = load(HISTORY / "order-event.v1.schema.json")
    changed = json.loads(render(event_model_with_data(eta=(datetime | None, None))))
    assert changed != v1
    assert breaking_changes(v1, changed) == []


# ---- the rules, one schema edit at a time ---------------------------------------------------------

Edit = Callable[[Json], None]


def _data(schema: Json) -> Json:
    return schema["$defs"]["OrderChangeData"]


def _set(path: list[str], value: Json) -> Edit:
    def edit(schema: Json) -> None:
        target = schema
        for part in path[:-1]:
            target = target[part]
        target[path[-1]] = value

    return edit


def _drop_status(schema: Json) -> None:
    schema["$defs"]["OrderStatus"]["enum"].remove("cancelled")


def _drop_type(schema: Json) -> None:
    schema["properties"]["type"]["enum"].remove("com.orderstatus.order.created.v1")


def _rename_actor(schema: Json) -> None:
    data = _data(schema)
    data["properties"]["actor_sub"] = data["properties"].pop("actor")
    data["required"] = ["actor_sub" if n == "actor" else n for n in data["required"]]


def _require_new_field(schema: Json) -> None:
    _data(schema)["properties"]["table"] = {"type": "integer"}
    _data(schema)["required"].append("table")


def _unrequire(schema: Json) -> None:
    _data(schema)["required"].remove("rid")


BREAKING: dict[str, Edit] = {
    "status enum shrunk": _drop_status,
    "event type dropped": _drop_type,
    "field renamed": _rename_actor,
    "new required field": _require_new_field,
    "field no longer required": _unrequire,
    "version narrowed to string": _set(
        ["$defs", "OrderChangeData", "properties", "version", "type"], "string"
    ),
    "minimum raised": _set(["$defs", "OrderChangeData", "properties", "version", "minimum"], 2),
    "maxLength imposed": _set(["properties", "id", "maxLength"], 36),
    "minLength raised": _set(["properties", "id", "minLength"], 5),
    "pattern imposed": _set(["properties", "source", "pattern"], "^/"),
    "format changed": _set(["properties", "time", "format"], "date"),
    "specversion changed": _set(["properties", "specversion", "const"], "2.0"),
    "additional properties forbidden": _set(["additionalProperties"], False),
    "null no longer allowed": _set(
        ["$defs", "OrderChangeData", "properties", "reason"], {"type": "string"}
    ),
}


def _add_status(schema: Json) -> None:
    schema["$defs"]["OrderStatus"]["enum"].append("refunded")


def _add_optional(schema: Json) -> None:
    _data(schema)["properties"]["eta"] = {"format": "date-time", "type": "string"}


COMPATIBLE: dict[str, Edit] = {
    "status enum extended": _add_status,
    "optional field added": _add_optional,
    "description changed": _set(["description"], "another text"),
    "minimum lowered": _set(["$defs", "OrderChangeData", "properties", "version", "minimum"], 0),
    "integer widened to number": _set(
        ["$defs", "OrderChangeData", "properties", "version", "type"], "number"
    ),
    "null allowed": _set(
        ["properties", "subject"], {"anyOf": [{"type": "string"}, {"type": "null"}]}
    ),
}


@pytest.mark.parametrize("edit", list(BREAKING.values()), ids=list(BREAKING))
def test_a_breaking_edit_is_named(edit: Edit) -> None:
    old = event_schema()
    new = copy.deepcopy(old)
    edit(new)
    assert breaking_changes(old, new) != []


@pytest.mark.parametrize("edit", list(COMPATIBLE.values()), ids=list(COMPATIBLE))
def test_a_compatible_edit_passes(edit: Edit) -> None:
    old = event_schema()
    new = copy.deepcopy(old)
    edit(new)
    assert new != old
    assert breaking_changes(old, new) == []


def test_the_reverse_of_a_widening_is_a_break() -> None:
    """Checks direction: what the new schema may drop is what the old one allowed."""
    narrow = event_schema()
    wide = copy.deepcopy(narrow)
    _add_status(wide)
    assert breaking_changes(narrow, wide) == []
    assert breaking_changes(wide, narrow) != []
