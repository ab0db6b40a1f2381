"""The discover JSON: one writer and one reader of :class:`DiscoverResult` (numbers rounded to
6 decimals, sorted keys: the same inputs and seed give the same bytes)."""

from __future__ import annotations

import json
from typing import Any

from audit.discover.result import DiscoverResult
from audit.errors import InputError
from audit.fairness.serialize import canonical
from audit.typedjson import from_plain, to_plain

SCHEMA = "msae-audit/discover"
SCHEMA_VERSION = 1


def to_json(result: DiscoverResult) -> dict[str, Any]:
    return canonical(to_plain(result))


def dumps(result: DiscoverResult) -> str:
    text = json.dumps(
        to_json(result), indent=2, sort_keys=True, ensure_ascii=False, allow_nan=False
    )
    return text + "\n"


def parse_discover(document: Any) -> DiscoverResult:
    """A discover JSON (parsed) back into a :class:`DiscoverResult`; :class:`InputError` when it
    is not one or a field is damaged."""
    if not isinstance(document, dict) or document.get("schema") != SCHEMA:
        raise InputError(f"not a discover result: 'schema' must be '{SCHEMA}'")
    return from_plain(DiscoverResult, document, what="discover result")


def published(result: DiscoverResult) -> DiscoverResult:
    """The result as the JSON holds it (numbers rounded): what reports render."""
    return parse_discover(to_json(result))
