"""The domain (services/core) is plain Python: it imports no adapter, no I/O library, nothing of the
services around it, so that the folder names say which code decides and which code talks."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

DOMAIN = Path(__file__).resolve().parents[2] / "services" / "core"
ALLOWED_ROOTS = {
    "__future__",
    "base64",
    "binascii",
    "collections",
    "dataclasses",
    "datetime",
    "enum",
    "functools",
    "hashlib",
    "hmac",
    "itertools",
    "json",
    "math",
    "pydantic",
    "re",
    "types",
    "typing",
    "uuid",
}


def imported_modules(path: Path) -> set[str]:
    modules: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            modules.add(node.module)
    return modules


@pytest.mark.parametrize("path", sorted(DOMAIN.glob("*.py")), ids=lambda p: p.name)
def test_domain_module_imports_only_the_domain_and_pure_libraries(path: Path) -> None:
    outside = {
        module
        for module in imported_modules(path)
        if module.split(".")[0] not in ALLOWED_ROOTS and not module.startswith("services.core")
    }
    assert outside == set(), f"{path.name} imports {sorted(outside)}"


def test_the_check_sees_a_forbidden_import(tmp_path: Path) -> None:
    module = tmp_path / "leaky.py"
    module.write_text("import psycopg\nfrom services.adapters.settings import Settings\n")
    assert imported_modules(module) == {"psycopg", "services.adapters.settings"}
