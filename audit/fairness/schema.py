"""The JSON Schema of the audit JSON, generated from the typed result (one statement of the
format). ``docs/schemas/audit.schema.json`` is this module's output, and a test keeps it so::

    python -m audit.fairness.schema > docs/schemas/audit.schema.json
"""

from __future__ import annotations

import json
from typing import Any

from audit.fairness.result import AuditResult
from audit.fairness.serialize import SCHEMA, SCHEMA_VERSION
from audit.typedjson import json_schema

SCHEMA_ID = "https://msae-audit.invalid/schemas/audit.schema.json"


def audit_schema() -> dict[str, Any]:
    return json_schema(
        AuditResult,
        title="msae-audit audit result",
        schema_id=SCHEMA_ID,
        const={"schema": SCHEMA, "version": SCHEMA_VERSION},
    )


if __name__ == "__main__":
    print(json.dumps(audit_schema(), indent=2, ensure_ascii=False))
