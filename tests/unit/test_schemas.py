"""The committed JSON Schemas in schemas/ are what the models render (re-run `orderstatus schemas`
after changing a contract), and real encoded messages validate against them.

jsonschema is not a dependency, so a small validator below covers the keywords pydantic emits
here; a test fails if the schemas start using one it does not know, rather than skip it."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from hypothesis import given

from services.adapters.schemas import CONTRACTS, render, write_schemas
from services.core.events import OrderCloudEvent, encode_cloud_event
from services.core.messages import ChangeStatus, CommandResult, CreateOrder, encode
from tests.unit.strategies import (
    CHANGE_STATUS_EXAMPLE,
    UNIT_SETTINGS,
    cloud_events,
    command_results,
    commands,
)

SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"

Json = Any

CHECKED_KEYWORDS = {
    "$ref", "type", "properties", "required", "additionalProperties", "enum", "const", "anyOf",
    "oneOf", "items", "format", "minLength", "maxLength", "pattern", "minimum",
}  # fmt: skip
ANNOTATIONS = {"$schema", "$defs", "title", "description", "default", "discriminator"}

RFC3339 = re.compile(
    r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$", re.IGNORECASE
)
JSON_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,),
    "array": (list,),
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "null": (type(None),),
}


def committed(name: str) -> Json:
    return json.loads((SCHEMAS / name).read_text())


def violations(instance: Json, schema: Json, root: Json, path: str = "$") -> Iterator[str]:
    """Every way `instance` breaks `schema` (draft 2020-12, restricted to CHECKED_KEYWORDS)."""
    if "$ref" in schema:
        target = root
        for part in schema["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        yield from violations(instance, target, root, path)
    if "type" in schema:
        kinds = JSON_TYPES[schema["type"]]
        if not isinstance(instance, kinds) or (
            isinstance(instance, bool) and schema["type"] != "boolean"
        ):
            yield f"{path}: {instance!r} is not of type {schema['type']}"
            return
    if "enum" in schema and instance not in schema["enum"]:
        yield f"{path}: {instance!r} not in {schema['enum']}"
    if "const" in schema and instance != schema["const"]:
        yield f"{path}: {instance!r} is not {schema['const']!r}"
    if "anyOf" in schema and not any(
        not list(violations(instance, option, root, path)) for option in schema["anyOf"]
    ):
        yield f"{path}: {instance!r} matches none of anyOf"
    if "oneOf" in schema:
        matching = sum(not list(violations(instance, o, root, path)) for o in schema["oneOf"])
        if matching != 1:
            yield f"{path}: {instance!r} matches {matching} of oneOf"
    if isinstance(instance, str):
        if len(instance) < schema.get("minLength", 0):
            yield f"{path}: shorter than {schema['minLength']}"
        if len(instance) > schema.get("maxLength", len(instance)):
            yield f"{path}: longer than {schema['maxLength']}"
        if "pattern" in schema and not re.search(schema["pattern"], instance):
            yield f"{path}: does not match {schema['pattern']}"
        if schema.get("format") == "uuid" and not is_uuid(instance):
            yield f"{path}: {instance!r} is not a uuid"
        if schema.get("format") == "date-time" and not RFC3339.match(instance):
            yield f"{path}: {instance!r} is not an RFC 3339 date-time"
    if isinstance(instance, int | float) and instance < schema.get("minimum", instance):
        yield f"{path}: {instance} is below {schema['minimum']}"
    if isinstance(instance, list) and "items" in schema:
        for i, item in enumerate(instance):
            yield from violations(item, schema["items"], root, f"{path}[{i}]")
    if isinstance(instance, dict):
        properties = schema.get("properties", {})
        for name in schema.get("required", []):
            if name not in instance:
                yield f"{path}: missing {name}"
        for name, value in instance.items():
            if name in properties:
                yield from violations(value, properties[name], root, f"{path}.{name}")
            elif schema.get("additionalProperties") is False:
                yield f"{path}: unexpected {name}"


def is_uuid(text: str) -> bool:
    try:
        return str(UUID(text)) == text.lower()
    except ValueError:
        return False


def keywords(schema: Json) -> Iterator[str]:
    if isinstance(schema, list):
        for item in schema:
            yield from keywords(item)
    if not isinstance(schema, dict):
        return
    for key, value in schema.items():
        yield key
        if key in ("properties", "$defs"):
            for sub in value.values():
                yield from keywords(sub)
        elif key not in ("discriminator", "enum", "const", "default", "required"):
            yield from keywords(value)


# ---- the committed files are current -------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(CONTRACTS))
def test_committed_schema_is_what_the_model_renders(name: str) -> None:
    assert (SCHEMAS / name).read_text() == render(CONTRACTS[name]), (
        f"schemas/{name} is out of date: run `orderstatus schemas` and commit the result"
    )


def test_schemas_folder_holds_exactly_the_contracts() -> None:
    assert sorted(p.name for p in SCHEMAS.glob("*.json")) == sorted(CONTRACTS)


def test_write_schemas_writes_every_contract(tmp_path: Path) -> None:
    written = write_schemas(tmp_path / "out")
    assert sorted(p.name for p in written) == sorted(CONTRACTS)
    for path in written:
        assert path.read_text() == (SCHEMAS / path.name).read_text()


@pytest.mark.parametrize("name", sorted(CONTRACTS))
def test_the_schema_uses_only_keywords_this_test_checks(name: str) -> None:
    assert set(keywords(committed(name))) <= CHECKED_KEYWORDS | ANNOTATIONS


def test_the_command_schema_discriminates_on_type() -> None:
    schema = committed("command.schema.json")
    assert schema["discriminator"]["propertyName"] == "type"
    assert set(schema["discriminator"]["mapping"]) == {"create_order", "change_status"}
    for name in ("CreateOrder", "ChangeStatus"):
        definition = schema["$defs"][name]
        assert definition["additionalProperties"] is False
        assert definition["properties"]["schema_version"]["const"] == 1
        assert {"command_id", "order_id", "actor", "issued_at"} <= set(definition["required"])
    assert schema["$defs"]["OrderStatus"]["enum"] == [
        "pending", "accepted", "rejected", "preparing", "ready", "completed", "cancelled",
    ]  # fmt: skip


# ---- encoded messages validate ----------------------------------------------------------------


@UNIT_SETTINGS
@given(command=commands)
def test_an_encoded_command_validates(command: CreateOrder | ChangeStatus) -> None:
    schema = committed("command.schema.json")
    assert list(violations(json.loads(encode(command)), schema, schema)) == []


@UNIT_SETTINGS
@given(result=command_results)
def test_an_encoded_result_validates(result: CommandResult) -> None:
    schema = committed("command-result.schema.json")
    assert list(violations(json.loads(encode(result)), schema, schema)) == []


@UNIT_SETTINGS
@given(event=cloud_events)
def test_an_encoded_event_validates(event: OrderCloudEvent) -> None:
    schema = committed("order-event.schema.json")
    assert list(violations(json.loads(encode_cloud_event(event)), schema, schema)) == []


SAMPLE: dict[str, Json] = CHANGE_STATUS_EXAMPLE


@pytest.mark.parametrize(
    "change",
    [
        {"status": "shipped"},
        {"schema_version": 2},
        {"type": "refund"},
        {"surprise": True},
        {"expected_version": 0},
        {"order_id": "not-a-uuid"},
        {"issued_at": "yesterday"},
        {"actor": {"sub": "", "role": "authenticated"}},
        {"actor": {"sub": "x", "role": "admin"}},
        {"actor": {"sub": "x", "role": "authenticated", "restaurant_ids": [7]}},
        {"reason": "x" * 501},
    ],
    ids=lambda change: next(iter(change)),
)
def test_the_validator_rejects_what_the_decoder_rejects(change: dict[str, Json]) -> None:
    """Guards the hand-written validator against passing everything."""
    schema = committed("command.schema.json")
    assert list(violations(SAMPLE, schema, schema)) == []
    assert list(violations(SAMPLE | change, schema, schema)) != []
    with pytest.raises(ValueError):
        ChangeStatus.model_validate_json(json.dumps(SAMPLE | change))


def test_the_validator_reports_a_missing_required_field() -> None:
    schema = committed("command.schema.json")
    incomplete = {k: v for k, v in SAMPLE.items() if k != "command_id"}
    assert list(violations(incomplete, schema, schema)) != []
