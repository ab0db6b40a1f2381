"""The search result as one self-contained HTML gallery (before and after the edit)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from audit.report.templating import render, thumbnail


def _items(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for item in rows:
        label = str(item.get("path") or item.get("id") or f"row {item['row']}")
        out.append({**item, "uri": thumbnail(item.get("path")), "label": Path(label).name or label})
    return out


def render_search_html(result: dict[str, Any]) -> str:
    query = result.get("query", {})
    if query.get("kind") == "text":
        label = f'text "{query.get("text", "")}"'
    elif query.get("kind") == "image":
        label = f"image {query.get('path', '')}"
    else:
        label = f"gallery row {query.get('row', '?')}"
    thumb = thumbnail(query.get("path")) if query.get("kind") in ("image", "row") else None
    return render(
        "search.html.j2",
        r=result,
        query_label=label,
        query_thumb=thumb,
        columns=[
            ("Before the edit", _items(result["before"])),
            ("After the edit", _items(result["after"])),
        ],
    )
