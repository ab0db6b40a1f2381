"""Validation of written JSON against the schemas in docs/schemas/."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

SCHEMAS = Path(__file__).resolve().parents[1] / "docs" / "schemas"


@cache
def validator(name: str) -> Any:
    import jsonschema

    schema = json.loads((SCHEMAS / f"{name}.schema.json").read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def assert_valid(document: Any, name: str) -> None:
    """``document`` is a valid ``name`` JSON (``audit``, ``eval``); else every error, listed."""
    errors = sorted(validator(name).iter_errors(document), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{list(e.path)}: {e.message[:200]}" for e in errors[:10])


def assert_valid_file(path: Path, name: str) -> None:
    assert_valid(json.loads(Path(path).read_text(encoding="utf-8")), name)
