"""The audit as one self-contained HTML page (Jinja2, autoescape on).

Everything is inline: CSS, SVG charts and base64 image thumbnails; no scripts, fonts, external
URLs or images, and a Content-Security-Policy that forbids the browser from fetching anything.
Chart geometry is computed here (numbers only); every string from the user's data (concept
names, label values, column names, paths) reaches the page through Jinja2's autoescaping,
and each one inside a sentence built here is shown in its own bidi isolate (``show``).
"""

from __future__ import annotations

import math
from dataclasses import asdict
from decimal import Decimal

from audit.fairness.result import AuditResult, ConceptFinding
from audit.fairness.stages.focus import TABLE_CONCEPTS
from audit.report.templating import bidi_isolate, render, thumbnail
from audit.report.wording import (
    concept_note,
    direction_note,
    group_name,
    name_checks_line,
    verdict_note,
)

PALETTE = ("#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1", "#9c755f")
FOREST_ROWS = 20
ACTIVATION_ROWS = 8
THUMBNAIL = 112
TABLE_THUMBNAIL = 40


# ------------------------------------------------------------------------------------------
# Chart geometry (numbers only; labels are escaped by the template)
# ------------------------------------------------------------------------------------------


def _scale(lo: float, hi: float, x0: float, x1: float):  # type: ignore[no-untyped-def]
    span = (hi - lo) or 1.0
    return lambda v: round(x0 + (float(v) - lo) / span * (x1 - x0), 2)


def group_bars(result: AuditResult) -> dict:
    """Accuracy with its Wilson CI per group on a shared [lo, 1] axis."""
    groups = result.groups
    lo = min([0.5] + [g.ci[0] for g in groups])
    lo = max(0.0, (int(lo * 10)) / 10)
    sx = _scale(lo, 1.0, 240, 620)
    rows = []
    for i, g in enumerate(groups):
        y = 30 + 26 * i
        rows.append(
            {
                "y": y,
                "name": group_name(result, g.name, bidi_isolate),
                "x_lo": sx(g.ci[0]),
                "x_hi": sx(g.ci[1]),
                "x": sx(g.accuracy),
                "worst": g.name == result.worst_group,
                "text": f"{g.accuracy:.3f}  (n={g.n:,})",
            }
        )
    values, decimals = nice_ticks(lo, 1.0)
    ticks = [{"x": sx(t), "label": f"{t:.{decimals}f}"} for t in values]
    return {
        "rows": rows,
        "ticks": ticks,
        "height": 50 + 26 * len(groups),
        "axis_y": 38 + 26 * len(groups),
    }


def nice_ticks(lo: float, hi: float, n: int = 5) -> tuple[list[float], int]:
    """Ticks at multiples of a round step (1, 2, 2.5 or 5 × 10^k) inside ``[lo, hi]``, about
    ``n`` of them, and the decimals that show each tick exactly.

    >>> nice_ticks(0.5, 1.0)
    ([0.5, 0.6, 0.7, 0.8, 0.9, 1.0], 1)
    >>> nice_ticks(0.0, 1.0, 4)
    ([0.0, 0.25, 0.5, 0.75, 1.0], 2)
    >>> nice_ticks(-0.013, 0.062)
    ([0.0, 0.02, 0.04, 0.06], 2)
    """
    span = (hi - lo) or 1.0
    power = 10.0 ** math.floor(math.log10(span / max(1, n)))
    steps = [m * p for p in (power / 10, power, power * 10) for m in (1, 2, 2.5, 5)]

    def count(step: float) -> int:
        return math.floor(hi / step + 1e-9) - math.ceil(lo / step - 1e-9) + 1

    # The round step whose tick count is closest to n + 1 (ties: the coarser step).
    step = min(steps, key=lambda st: (abs(count(st) - (n + 1)), -st))
    decimals = max(0, -Decimal(repr(round(step, 12))).normalize().as_tuple().exponent)
    first = math.ceil(lo / step - 1e-9)
    ticks = [round(k * step, decimals) + 0.0 for k in range(first, first + count(step))]
    return ticks, decimals


def forest_plot(result: AuditResult) -> dict:
    """ΔWGA with its bootstrap CI and the null's central 95 % band for the top concepts."""
    concepts = result.concepts[:FOREST_ROWS]
    min_dwga = result.settings.min_dwga
    values = [0.0, min_dwga]
    for c in concepts:
        values += [c.ci[0], c.ci[1], c.delta_wga]
        if c.null_band:
            values += c.null_band
    lo, hi = min(values), max(values)
    pad = 0.05 * ((hi - lo) or 1.0)
    lo, hi = lo - pad, hi + pad
    sx = _scale(lo, hi, 260, 640)
    rows = []
    for i, c in enumerate(concepts):
        y = 30 + 24 * i
        band = c.null_band
        rows.append(
            {
                "y": y,
                "label": c.label,
                "tested": c.tested,
                "flagged": c.flagged,
                "x": sx(c.delta_wga),
                "x_lo": sx(c.ci[0]),
                "x_hi": sx(c.ci[1]),
                "band": None
                if not band
                else {"x": sx(band[0]), "w": max(1.0, sx(band[1]) - sx(band[0]))},
                "text": f"{c.delta_wga:+.3f}",
            }
        )
    values, decimals = nice_ticks(lo, hi)
    ticks = [{"x": sx(t), "label": f"{t:+.{decimals}f}" if t else "0"} for t in values]
    height = 50 + 24 * len(concepts)
    return {
        "rows": rows,
        "ticks": ticks,
        "zero": sx(0.0),
        "threshold": sx(min_dwga),
        "height": height,
        "axis_y": height - 12,
    }


def activation_bars(result: AuditResult) -> dict:
    """Mean activation per group of the top concepts (one small bar chart per concept)."""
    groups = [g.name for g in result.groups]
    concepts = [c for c in result.concepts if c.mean_activation][:ACTIVATION_ROWS]
    peak = max([1e-12] + [v for c in concepts for v in c.mean_activation.values()])
    charts = []
    for c in concepts:
        bars = []
        for i, g in enumerate(groups):
            v = c.mean_activation.get(g, 0.0)
            h = round(60 * v / peak, 2)
            bars.append(
                {
                    "x": 10 + 22 * i,
                    "y": 70 - h,
                    "h": h,
                    "color": PALETTE[i % len(PALETTE)],
                    "group": group_name(result, g, bidi_isolate),
                    "value": v,
                }
            )
        charts.append({"label": c.label, "bars": bars, "width": 20 + 22 * len(groups)})
    legend = [
        {"group": group_name(result, g, bidi_isolate), "color": PALETTE[i % len(PALETTE)]}
        for i, g in enumerate(groups)
    ]
    return {"charts": charts, "legend": legend}


def dose_charts(result: AuditResult) -> list[dict]:
    """WGA and every group's accuracy as the concept is steered, α = 0 … 3."""
    charts = []
    y_values, decimals = nice_ticks(0.0, 1.0, 4)
    for d in result.dose_response:
        alphas = d.alphas
        sx = _scale(min(alphas), max(alphas), 50, 420)
        sy = _scale(0.0, 1.0, 210, 20)
        lines = []
        for i, (g, ys) in enumerate(sorted(d.accuracy_by_group.items())):
            pts = " ".join(f"{sx(a)},{sy(v)}" for a, v in zip(alphas, ys, strict=True))
            lines.append(
                {
                    "points": pts,
                    "color": PALETTE[i % len(PALETTE)],
                    "group": group_name(result, g, bidi_isolate),
                    "wga": False,
                }
            )
        pts = " ".join(
            f"{sx(a)},{sy(v)}" for a, v in zip(alphas, d.worst_group_accuracy, strict=True)
        )
        lines.append({"points": pts, "color": "#111", "group": "worst-group accuracy", "wga": True})
        charts.append(
            {
                "label": d.label,
                "flagged": d.flagged,
                "lines": lines,
                "x_ticks": [
                    {"x": sx(a), "label": f"{a:g}"} for a in alphas if float(a).is_integer()
                ],
                "y_ticks": [{"y": sy(t), "label": f"{t:.{decimals}f}"} for t in y_values],
                "baseline": sx(1.0),
            }
        )
    return charts


def example_galleries(result: AuditResult) -> list[dict]:
    """Thumbnails of the example rows whose ``path`` is a readable image."""
    galleries = []
    for ex in result.examples:
        sections = []
        for rows, title in (
            (ex.top_activating, "top-activating"),
            (ex.flipped, "flipped by the ablation"),
        ):
            items = []
            for item in rows:
                uri = thumbnail(item.path, THUMBNAIL)
                if uri:
                    items.append({**asdict(item), "uri": uri})
            if items:
                sections.append({"title": title, "items": items})
        if sections:
            galleries.append({"label": ex.label, "sections": sections})
    return galleries


def table_examples(
    result: AuditResult, concepts: tuple[ConceptFinding, ...], size: int = TABLE_THUMBNAIL
) -> list[list[dict]]:
    """For each concept of the top table, small thumbnails of its most-activating rows whose
    ``path`` is a readable image (aligned with ``concepts``)."""
    by_latents = {tuple(ex.latents): ex for ex in result.examples}
    out = []
    for c in concepts:
        ex = by_latents.get(tuple(c.latents))
        items = []
        for item in ex.top_activating if ex else ():
            uri = thumbnail(item.path, size)
            if uri:
                alt = item.id if item.id is not None else str(item.row)
                group = group_name(result, item.group, bidi_isolate)
                title = f"{bidi_isolate(str(alt))}: {group}, z={item.activation:.2f}"
                items.append({"uri": uri, "alt": alt, "title": title})
        out.append(items)
    return out


def table_notes(result: AuditResult, concepts: tuple[ConceptFinding, ...]) -> list[str | None]:
    """For each concept of the top table, the note shown under its name."""
    return [concept_note(result, c, bidi_isolate) for c in concepts]


def render_html(result: AuditResult) -> str:
    """The full page for one audit result."""
    top = result.concepts[:TABLE_CONCEPTS]
    return render(
        "audit.html.j2",
        r=result,
        groups_chart=group_bars(result),
        forest=forest_plot(result),
        activations=activation_bars(result),
        doses=dose_charts(result),
        galleries=example_galleries(result),
        top_concepts=top,
        table_examples=table_examples(result, top),
        table_notes=table_notes(result, top),
        verdict_note=verdict_note(result),
        direction_note=direction_note(result, bidi_isolate),
        name_checks_line=name_checks_line(result.concepts, bidi_isolate),
        gname=lambda name: group_name(result, name, bidi_isolate),
    )
