"""JSON Schemas of the wire contracts, generated from the pydantic models into `schemas/`.

`schemas/history/` keeps each released version (`<name>.v<N>.schema.json`); every current schema
must keep what those promised (services/core/schema_compat.py, tests/unit/test_schema_compat.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from services.core.events import OrderCloudEvent
from services.core.messages import COMMAND_ADAPTER, CommandResult

CONTRACTS: dict[str, Any] = {
    "command.schema.json": COMMAND_ADAPTER,
    "command-result.schema.json": CommandResult,
    "order-event.schema.json": OrderCloudEvent,
}


def render(contract: Any) -> str:
    schema = (
        contract.model_json_schema()
        if isinstance(contract, type) and issubclass(contract, BaseModel)
        else contract.json_schema()
    )
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


def write_schemas(folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, contract in CONTRACTS.items():
        path = folder / name
        path.write_text(render(contract))
        written.append(path)
    return written
