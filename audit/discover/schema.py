"""The JSON Schema of the discover JSON, generated from the typed result::

python -m audit.discover.schema > docs/schemas/discover.schema.json
"""

from __future__ import annotations

import json
from typing import Any

from audit.discover.result import DiscoverResult
from audit.discover.serialize import SCHEMA, SCHEMA_VERSION
from audit.typedjson import json_schema

SCHEMA_ID = "https://msae-audit.invalid/schemas/discover.schema.json"


def discover_schema() -> dict[str, Any]:
    return json_schema(
        DiscoverResult,
        title="msae-audit discover result",
        schema_id=SCHEMA_ID,
        const={"schema": SCHEMA, "version": SCHEMA_VERSION},
    )


if __name__ == "__main__":
    print(json.dumps(discover_schema(), indent=2, ensure_ascii=False))
