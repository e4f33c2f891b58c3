"""Whether a new JSON Schema keeps what an earlier version of the same contract promised.

Consumers built against the old schema must keep working, and messages already on the topics
(read again with `--from-beginning`, a replay, a lagging consumer) must still validate: so the new
schema keeps every required field and requires no new one, removes no property, narrows no type,
shrinks no enum, changes no constant and tightens no string or number bound. Pure: it compares two
schema documents (draft 2020-12, the keywords pydantic emits) and names each break it finds."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

Json = Any

ALTERNATIVES = ("anyOf", "oneOf")
PYTHON_TYPES: dict[str, type | tuple[type, ...]] = {
    "string": str,
    "integer": int,
    "number": (int, float),
    "boolean": bool,
}


def breaking_changes(old: Json, new: Json) -> list[str]:
    """Every way `new` fails to accept what `old` accepted or drops what it promised; [] if none."""
    return list(_compare(old, new, old, new, "$"))


def _resolve(schema: Json, root: Json) -> Json:
    while isinstance(schema, dict) and "$ref" in schema:
        target = root
        for part in schema["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        schema = {**target, **{k: v for k, v in schema.items() if k != "$ref"}}
    return schema


def _options(schema: Json) -> list[Json] | None:
    for keyword in ALTERNATIVES:
        if keyword in schema:
            options: list[Json] = schema[keyword]
            return options
    return None


def _compare(old: Json, new: Json, old_root: Json, new_root: Json, path: str) -> Iterator[str]:
    old, new = _resolve(old, old_root), _resolve(new, new_root)
    old_options, new_options = _options(old), _options(new)
    if old_options is not None:
        for option in old_options:
            yield from _compare(option, new, old_root, new_root, path)
        return
    if new_options is not None:
        attempts = [list(_compare(old, o, old_root, new_root, path)) for o in new_options]
        if all(attempts):
            yield f"{path}: no alternative of the new schema accepts the old one ({attempts[0][0]})"
        return
    yield from _compare_type(old, new, path)
    yield from _compare_values(old, new, path)
    yield from _compare_bounds(old, new, path)
    yield from _compare_object(old, new, old_root, new_root, path)
    if "items" in old and "items" in new:
        yield from _compare(old["items"], new["items"], old_root, new_root, f"{path}[]")
    elif "items" in new:
        yield f"{path}: items newly constrained"


def _compare_type(old: Json, new: Json, path: str) -> Iterator[str]:
    if "type" not in new:
        return
    if "type" not in old:
        if not _values_fit_type(old, new["type"]):
            yield f"{path}: type newly constrained to {new['type']}"
    elif old["type"] != new["type"] and (old["type"], new["type"]) != ("integer", "number"):
        yield f"{path}: type changed from {old['type']} to {new['type']}"


def _values_fit_type(old: Json, kind: str) -> bool:
    """A schema without a type may still only allow values of one (a const or an enum)."""
    values = [old["const"]] if "const" in old else old.get("enum")
    python = PYTHON_TYPES.get(kind)
    return values is not None and python is not None and all(isinstance(v, python) for v in values)


def _allowed_values(schema: Json) -> list[Json] | None:
    if "const" in schema:
        return [schema["const"]]
    values: list[Json] | None = schema.get("enum")
    return values


def _compare_values(old: Json, new: Json, path: str) -> Iterator[str]:
    new_values = _allowed_values(new)
    if new_values is None:
        return
    old_values = _allowed_values(old)
    if old_values is None:
        yield f"{path}: values newly restricted to {new_values}"
        return
    dropped = [v for v in old_values if v not in new_values]
    if dropped:
        yield f"{path}: values no longer allowed: {dropped}"


def _compare_bounds(old: Json, new: Json, path: str) -> Iterator[str]:
    for keyword, looser in (("minLength", min), ("minimum", min), ("maxLength", max), ("maximum", max)):  # fmt: skip
        if keyword not in new:
            continue
        if keyword not in old:
            yield f"{path}: {keyword} {new[keyword]} newly imposed"
        elif looser(old[keyword], new[keyword]) != new[keyword]:
            yield f"{path}: {keyword} tightened from {old[keyword]} to {new[keyword]}"
    for keyword in ("pattern", "format"):
        if keyword in new and new[keyword] != old.get(keyword):
            yield f"{path}: {keyword} changed from {old.get(keyword)!r} to {new[keyword]!r}"


def _compare_object(
    old: Json, new: Json, old_root: Json, new_root: Json, path: str
) -> Iterator[str]:
    if old.get("type") != "object" and new.get("type") != "object":
        return
    old_required, new_required = set(old.get("required", [])), set(new.get("required", []))
    for name in sorted(old_required - new_required):
        yield f"{path}.{name}: no longer required (consumers rely on it)"
    for name in sorted(new_required - old_required):
        yield f"{path}.{name}: newly required (earlier messages lack it)"
    old_properties, new_properties = old.get("properties", {}), new.get("properties", {})
    closed = new.get("additionalProperties") is False
    if closed and old.get("additionalProperties") is not False:
        yield f"{path}: additional properties newly forbidden"
    for name, schema in old_properties.items():
        if name in new_properties:
            yield from _compare(schema, new_properties[name], old_root, new_root, f"{path}.{name}")
        elif closed:
            yield f"{path}.{name}: property removed"
