"""The discover result as one self-contained HTML page (Jinja2, autoescape on, no scripts or
external URLs): the ranked concepts, each flagged or top concept's group accuracies as bars
(before and after removing it), example images of each of its groups, and the re-check commands.
"""

from __future__ import annotations

from audit.discover import DiscoverResult
from audit.discover.result import ConceptGroupAccuracy, DiscoveredConcept
from audit.report.templating import bidi_isolate, render, thumbnail
from audit.report.wording import discover_note, name_checks_line

THUMBNAIL = 96
CHART_CONCEPTS = 8


def concept_bars(c: DiscoveredConcept) -> dict:
    """Accuracy (with its Wilson interval) and accuracy after removal per group, on [0, 1]."""
    x0, x1 = 230, 500

    def sx(v: float) -> float:
        return round(x0 + float(v) * (x1 - x0), 2)

    rows = []
    for i, g in enumerate(c.groups):
        y = 24 + 30 * i
        rows.append({
            "y": y, "name": g.name, "x": sx(g.accuracy), "after": sx(g.accuracy_after),
            "x_lo": sx(g.ci[0]), "x_hi": sx(g.ci[1]), "worst": g.name == c.worst_group,
            "text": _bar_text(g),
        })  # fmt: skip
    ticks = [{"x": sx(t / 4), "label": f"{t / 4:.2f}"} for t in range(5)]
    height = 44 + 30 * len(c.groups)
    return {"rows": rows, "ticks": ticks, "height": height, "axis_y": height - 12, "x0": x0}


def _bar_text(g: ConceptGroupAccuracy) -> str:
    """Before → after; for an own model the edit runs on the surrogate, so its accuracy is the
    'before' of the arrow and the model's own comes first."""
    if g.surrogate_accuracy is None:
        return f"{g.accuracy:.3f} → {g.accuracy_after:.3f} (n={g.n:,})"
    agrees = "" if g.surrogate_agreement is None else f", agrees {g.surrogate_agreement:.1%}"
    return (
        f"model {g.accuracy:.3f}; surrogate {g.surrogate_accuracy:.3f} → "
        f"{g.accuracy_after:.3f} (n={g.n:,}{agrees})"
    )


def _galleries(result: DiscoverResult) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for ex in result.examples:
        groups = []
        for group, items in ex.groups.items():
            shown = [
                {"uri": uri, "row": it.row, "correct": it.correct, "activation": it.activation}
                for it in items
                if (uri := thumbnail(it.path, THUMBNAIL))
            ]
            if shown:
                groups.append({"name": group, "items": shown})
        out[ex.name] = groups
    return out


def render_discover_html(result: DiscoverResult) -> str:
    galleries = _galleries(result)
    charted = [c for c in result.concepts if c.flagged] or list(result.concepts)
    charts = [
        {"c": c, "bars": concept_bars(c), "gallery": galleries.get(c.name, [])}
        for c in charted[:CHART_CONCEPTS]
    ]
    top = result.concepts[:40]
    notes = [discover_note(c, bidi_isolate) for c in top]  # the terminal's words, names isolated
    return render(
        "discover.html.j2", r=result, charts=charts, top=top, notes=notes,
        name_checks_line=name_checks_line(result.concepts, bidi_isolate),
    )  # fmt: skip
