"""The audit JSON: the one writer and the one reader of :class:`AuditResult`.

Numbers are written rounded to 6 decimals (−0 as 0, NaN and inf as null) with sorted keys, so
the same inputs and seed give the same bytes. p- and q-values keep 6 significant digits instead:
an exact test over thousands of rows gives p far below 1e-6, and a p-value written as 0 claims
what no test can. The reader checks every field (``msae-audit
check`` reads files users hand it): a damaged file is one :class:`InputError`, exit code 2.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from audit.errors import InputError
from audit.fairness.result import AuditResult
from audit.fairness.rounding import SIGNIFICANT_FIELDS, round_number
from audit.typedjson import from_plain, to_plain

SCHEMA = "msae-audit/audit"
SCHEMA_VERSION = 1


def canonical(obj: Any, significant: bool = False) -> Any:
    """Plain JSON types, floats rounded by :func:`round_number` (NaN/inf → null); floats under
    a key of :data:`SIGNIFICANT_FIELDS` keep significant digits."""
    if isinstance(obj, dict):
        return {str(k): canonical(v, str(k) in SIGNIFICANT_FIELDS) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [canonical(v, significant) for v in obj]
    if isinstance(obj, np.ndarray):
        return [canonical(v, significant) for v in obj.tolist()]
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        value = float(obj)
        return round_number(value, significant) if math.isfinite(value) else None
    if obj is None or isinstance(obj, str):
        return obj
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot write {type(obj).__name__} to the audit JSON")


def to_json(result: AuditResult) -> dict[str, Any]:
    """The audit JSON as a dictionary (what :func:`dumps` writes)."""
    return canonical(to_plain(result))


def dumps(result: AuditResult | dict) -> str:
    document = to_json(result) if isinstance(result, AuditResult) else canonical(result)
    text = json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False, allow_nan=False)
    return text + "\n"


def parse_result(document: Any) -> AuditResult:
    """An audit JSON (parsed) back into an :class:`AuditResult`; :class:`InputError` if it is not
    one or any field is damaged."""
    if not isinstance(document, dict) or document.get("schema") != SCHEMA:
        raise InputError(f"not an audit result: 'schema' must be '{SCHEMA}'")
    return from_plain(AuditResult, document, what="audit result")


def published(result: AuditResult) -> AuditResult:
    """The result as the JSON holds it (numbers rounded): what reports and ``check`` read."""
    return parse_result(to_json(result))
