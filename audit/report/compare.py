"""``msae-audit compare``: several SAEs' eval results side by side (the paper's Table 1), as JSON,
table rows and a self-contained HTML page with inline SVG figures (no scripts, no fonts, no
network requests; every user-provided string is escaped).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from markupsafe import Markup, escape

from audit import __version__
from audit.report.templating import bidi_isolate, render

COMPARE_SCHEMA = "msae-audit/compare"
COMPARE_VERSION = 1

#: Table 1 columns: (result key, header, format, better: "high" | "low" | "").
COLUMNS: tuple[tuple[str, str, str, str], ...] = (
    ("arch", "arch", "", ""),
    ("n_latents", "n", ",d", ""),
    ("l0", "L0", ".1f", ""),
    ("frac_zeros", "frac. zeros", ".3f", "high"),
    ("fvu", "FVU", ".4f", "low"),
    ("fvu_per_sample", "FVU/sample", ".4f", "low"),
    ("cosine", "CS", ".4f", "high"),
    ("cknna", "CKNNA", ".3f", "high"),
    ("decoder_orthogonality", "DO", ".2e", "low"),
    ("dead_latents", "NDN", ",d", "low"),
    ("lp_kl", "LP-KL", ".4f", "low"),
    ("lp_agreement", "LP-agr.", ".4f", "high"),
)

#: Colour-blind-safe colours (Okabe–Ito without its pale yellow, then Tol's wine/olive/teal).
PALETTE = (
    "#0072B2",
    "#E69F00",
    "#009E73",
    "#D55E00",
    "#CC79A7",
    "#56B4E9",
    "#000000",
    "#882255",
    "#999933",
    "#44AA99",
)


def build_comparison(results: Sequence[dict[str, Any]], names: Sequence[str]) -> dict[str, Any]:
    """The compare JSON: the store once, then every model's eval result under its name."""
    if len(results) != len(names):
        raise ValueError("one name per result")
    return {
        "schema": COMPARE_SCHEMA,
        "version": COMPARE_VERSION,
        "msae_audit_version": __version__,
        "store": results[0]["store"] if results else None,
        "models": [{"name": name, **result} for name, result in zip(names, results, strict=True)],
    }


def model_names(paths: Sequence[str]) -> list[str]:
    """Folder names when they are unique, else the paths as given."""
    short = [Path(p).name or str(p) for p in paths]
    return short if len(set(short)) == len(short) else [str(p) for p in paths]


def _value(model: dict[str, Any], key: str) -> Any:
    return model["sae"]["arch"] if key == "arch" else model.get(key)


def format_cell(value: Any, spec: str) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    return format(value, spec) if spec else str(value)


def table_rows(comparison: dict[str, Any]) -> list[list[str]]:
    """One row of formatted cells per model: name, then :data:`COLUMNS`."""
    return [
        [model["name"], *(format_cell(_value(model, key), spec) for key, _, spec, _ in COLUMNS)]
        for model in comparison["models"]
    ]


def best_cells(comparison: dict[str, Any]) -> list[list[bool]]:
    """Which cells hold the best value of their column (for bold type), per :data:`COLUMNS`;
    none in a column where every model has the same value."""
    models = comparison["models"]
    flags = [[False] * len(COLUMNS) for _ in models]
    for c, (key, _, _, better) in enumerate(COLUMNS):
        values = [_value(m, key) for m in models]
        finite = [v for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
        if not better or len(finite) < 2 or min(finite) == max(finite):
            continue  # nothing to single out
        target = max(finite) if better == "high" else min(finite)
        for r, v in enumerate(values):
            flags[r][c] = v == target
    return flags


# ------------------------------------------------------------------------------------------
# Inline SVG charts
# ------------------------------------------------------------------------------------------


@dataclass
class Series:
    name: str
    color: str
    points: list[tuple[float, float]]
    highlight: tuple[float, float] | None = None  # drawn as a large marker (an operating point)


@dataclass
class _Axis:
    lo: float
    hi: float
    kind: str  # "linear" | "log10" | "log2"
    start: float  # pixel position of lo
    end: float  # pixel position of hi

    @classmethod
    def fit(cls, values: list[float], kind: str, start: float, end: float) -> _Axis:
        if kind == "linear":
            lo, hi = min(values), max(values)
            if hi == lo:
                lo, hi = lo - 0.5, hi + 0.5
            step = _nice_step((hi - lo) / 5)
            lo, hi = math.floor(lo / step) * step, math.ceil(hi / step) * step
        else:
            base = 10.0 if kind == "log10" else 2.0
            logs = [math.log(v, base) for v in values]
            lo, hi = math.floor(min(logs) + 1e-9), math.ceil(max(logs) - 1e-9)
            if hi == lo:
                hi = lo + 1
        return cls(lo, hi, kind, start, end)

    def position(self, value: float) -> float:
        if self.kind != "linear":
            value = math.log(value, 10.0 if self.kind == "log10" else 2.0)
        return self.start + (value - self.lo) / (self.hi - self.lo) * (self.end - self.start)

    def ticks(self) -> list[tuple[float, str]]:
        if self.kind == "linear":
            step = _nice_step((self.hi - self.lo) / 5)
            count = round((self.hi - self.lo) / step)
            return [(self.lo + i * step, f"{self.lo + i * step:g}") for i in range(count + 1)]
        if self.kind == "log2":
            exponents = range(int(self.lo), int(self.hi) + 1)
            stride = max(1, math.ceil(len(exponents) / 10))
            return [(2.0**e, f"{2**e:,}") for e in exponents if (e - int(self.lo)) % stride == 0]
        ticks = []
        for e in range(int(self.lo), int(self.hi) + 1):
            ticks.append((10.0**e, f"{10.0**e:g}"))
            if self.hi - self.lo <= 2 and e < self.hi:
                ticks += [(m * 10.0**e, f"{m * 10.0**e:g}") for m in (2, 5)]
        return sorted(ticks)


def _nice_step(raw: float) -> float:
    exponent = math.floor(math.log10(raw)) if raw > 0 else 0
    for mult in (1, 2, 5, 10):
        if mult * 10.0**exponent >= raw:
            return mult * 10.0**exponent
    return 10.0 ** (exponent + 1)


def _usable(x: float, y: float, x_kind: str, y_kind: str) -> bool:
    ok = all(isinstance(v, (int, float)) and math.isfinite(v) for v in (x, y))
    return ok and (x_kind == "linear" or x > 0) and (y_kind == "linear" or y > 0)


def _usable_series(series: Sequence[Series], x_kind: str, y_kind: str) -> list[Series]:
    """The series without the points an axis cannot show."""
    return [
        Series(
            s.name,
            s.color,
            [(x, y) for x, y in s.points if _usable(x, y, x_kind, y_kind)],
            s.highlight if s.highlight and _usable(*s.highlight, x_kind, y_kind) else None,
        )
        for s in series
    ]


def _svg_axes(ax: _Axis, ay: _Axis, box: tuple[int, int, int, int], labels: tuple[str, str]) -> str:
    """Frame, grid, ticks and axis labels (box: left, top, right, bottom pixel edges)."""
    left, top, right, bottom = box
    parts = [
        f'<rect x="{left}" y="{top}" width="{right - left}" height="{bottom - top}" class="frame"/>'
    ]
    for value, label in ax.ticks():
        px = ax.position(value)
        parts.append(
            f'<line x1="{px:.1f}" x2="{px:.1f}" y1="{top}" y2="{bottom}" class="grid"/>'
            f'<text x="{px:.1f}" y="{bottom + 16}" text-anchor="middle" '
            f'class="tick">{escape(label)}</text>'
        )
    for value, label in ay.ticks():
        py = ay.position(value)
        parts.append(
            f'<line x1="{left}" x2="{right}" y1="{py:.1f}" y2="{py:.1f}" class="grid"/>'
            f'<text x="{left - 6}" y="{py + 4:.1f}" text-anchor="end" class="tick">'
            f"{escape(label)}</text>"
        )
    parts.append(
        f'<text x="{(left + right) / 2:.1f}" y="{bottom + 42}" text-anchor="middle" '
        f'class="axis-label">{escape(labels[0])}</text>'
        f'<text transform="translate(16 {(top + bottom) / 2:.1f}) rotate(-90)" '
        f'text-anchor="middle" class="axis-label">{escape(labels[1])}</text>'
    )
    return "".join(parts)


def _svg_series(s: Series, ax: _Axis, ay: _Axis) -> str:
    """One series: its line, a dot per point and the highlighted point."""
    coords = [(ax.position(x), ay.position(y)) for x, y in s.points]
    color = escape(s.color)
    name = escape(bidi_isolate(s.name))  # a folder name: its own isolate, before the numbers
    parts = []
    if len(coords) > 1:
        path = " ".join(f"{px:.1f},{py:.1f}" for px, py in coords)
        parts.append(f'<polyline points="{path}" fill="none" stroke="{color}" class="line"/>')
    for (x, y), (px, py) in zip(s.points, coords, strict=True):
        parts.append(
            f'<circle cx="{px:.1f}" cy="{py:.1f}" r="3" fill="{color}">'
            f"<title>{name}: ({x:.4g}, {y:.4g})</title></circle>"
        )
    if s.highlight is not None:
        x, y = s.highlight
        parts.append(
            f'<circle cx="{ax.position(x):.1f}" cy="{ay.position(y):.1f}" r="7" '
            f'fill="{color}" stroke="#fff" stroke-width="2">'
            f"<title>{name}: ({x:.4g}, {y:.4g})</title></circle>"
        )
    return "".join(parts)


def svg_chart(
    series: Sequence[Series],
    *,
    title: str,
    x_label: str,
    y_label: str,
    x_kind: str = "linear",
    y_kind: str = "linear",
    width: int = 560,
    height: int = 360,
) -> Markup:
    """A line chart as inline SVG markup. Points a log axis cannot show (≤ 0) are left out."""
    left, right, top, bottom = 68, 16, 34, 52
    clean = _usable_series(series, x_kind, y_kind)
    points = [p for s in clean for p in [*s.points, *([s.highlight] if s.highlight else [])]]
    parts = [
        f'<svg role="img" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
        f'class="chart"><title>{escape(title)}</title>',
        f'<text x="{width / 2:.1f}" y="20" text-anchor="middle" class="chart-title">'
        f"{escape(title)}</text>",
    ]
    if not points:
        parts.append(
            f'<text x="{width / 2:.1f}" y="{height / 2:.1f}" text-anchor="middle">no data</text>'
        )
        return Markup("".join([*parts, "</svg>"]))
    ax = _Axis.fit([p[0] for p in points], x_kind, left, width - right)
    ay = _Axis.fit([p[1] for p in points], y_kind, height - bottom, top)
    box = (left, top, width - right, height - bottom)
    parts.append(_svg_axes(ax, ay, box, (x_label, y_label)))
    parts.extend(_svg_series(s, ax, ay) for s in clean)
    return Markup("".join([*parts, "</svg>"]))


def comparison_figures(comparison: dict[str, Any]) -> list[Markup]:
    """Sparsity–fidelity (FVU against L0) and progressive recovery (FVU and cosine against k)."""
    models = comparison["models"]
    colors = [PALETTE[i % len(PALETTE)] for i in range(len(models))]

    def curve(model: dict[str, Any], x_key: str, y_key: str) -> list[tuple[float, float]]:
        return [(level[x_key], level[y_key]) for level in model["progressive"]]

    frontier = [
        Series(m["name"], c, curve(m, "l0", "fvu"), (m["l0"], m["fvu"]))
        for m, c in zip(models, colors, strict=True)
    ]
    fvu_k = [
        Series(m["name"], c, curve(m, "k", "fvu")) for m, c in zip(models, colors, strict=True)
    ]
    cos_k = [
        Series(m["name"], c, curve(m, "k", "cosine")) for m, c in zip(models, colors, strict=True)
    ]
    return [
        svg_chart(
            frontier,
            title="Sparsity–fidelity: FVU against L0",
            x_label="L0 (mean active latents, log scale)",
            y_label="FVU (dataset-level, log scale)",
            x_kind="log10",
            y_kind="log10",
        ),
        svg_chart(
            fvu_k,
            title="Progressive recovery: FVU with the top-k latents",
            x_label="k (latents kept, log scale)",
            y_label="FVU (log scale)",
            x_kind="log2",
            y_kind="log10",
        ),
        svg_chart(
            cos_k,
            title="Progressive recovery: cosine with the top-k latents",
            x_label="k (latents kept, log scale)",
            y_label="cosine(x, x̂)",
            x_kind="log2",
        ),
    ]


def render_compare_html(comparison: dict[str, Any]) -> str:
    """The self-contained HTML page (template ``audit/report/templates/compare.html.j2``)."""
    models = comparison["models"]
    return render(
        "compare.html.j2",
        comparison=comparison,
        headers=["model", *(header for _, header, _, _ in COLUMNS)],
        better=["", *(better for *_, better in COLUMNS)],
        rows=table_rows(comparison),
        best=[[False, *flags] for flags in best_cells(comparison)],
        colors=[PALETTE[i % len(PALETTE)] for i in range(len(models))],
        figures=comparison_figures(comparison),
        version=__version__,
    )
