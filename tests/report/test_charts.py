"""Chart geometry of the HTML report: every axis tick says the value it sits at."""

from __future__ import annotations

import itertools
import json
from dataclasses import replace
from pathlib import Path

import pytest

from audit.fairness import parse_result
from audit.report.html import dose_charts, forest_plot, group_bars, nice_ticks

GOLDEN = Path(__file__).parents[1] / "golden" / "expected" / "planted_bias_raw.json"


def golden_result():
    return parse_result(json.loads(GOLDEN.read_text(encoding="utf-8")))


def _assert_ticks_say_their_position(ticks: list[dict], x0: float, v0: float, x1: float,
                                     v1: float, key: str = "x") -> None:  # fmt: skip
    """Each label, read back as a number, is the value at the tick's position."""
    labels = [t["label"] for t in ticks]
    assert len(set(labels)) == len(labels), labels
    for t in ticks:
        value = v0 + (t[key] - x0) / (x1 - x0) * (v1 - v0)
        assert float(t["label"]) == pytest.approx(value, abs=5e-3 * abs(v1 - v0)), (t, value)


@pytest.mark.parametrize(("lo", "hi"), [(0.43, 1.0), (0.0, 1.0), (-0.013, 0.062), (0.7, 1.0),
                                        (-0.3, 0.45), (0.9, 1.0)])  # fmt: skip
def test_nice_ticks_are_round_exact_and_inside(lo, hi):
    ticks, decimals = nice_ticks(lo, hi)
    assert 3 <= len(ticks) <= 11 and all(lo - 1e-12 <= t <= hi + 1e-12 for t in ticks)
    assert all(float(f"{t:.{decimals}f}") == t for t in ticks)  # the label is the value
    steps = {round(b - a, 12) for a, b in itertools.pairwise(ticks)}
    assert len(steps) == 1


def test_group_axis_labels_match_their_positions_with_enough_digits():
    result = golden_result()
    low = replace(result.groups[0], ci=(0.43, 0.6))  # an axis from 0.4: 0.4, 0.52, … before
    result = replace(result, groups=(low, *result.groups[1:]))
    chart = group_bars(result)
    _assert_ticks_say_their_position(chart["ticks"], 240, 0.4, 620, 1.0)


def test_dose_axis_shows_three_quarters_as_0_75():
    result = golden_result()
    assert result.dose_response
    chart = dose_charts(result)[0]
    labels = [t["label"] for t in chart["y_ticks"]]
    assert "0.75" in labels and "0.8" not in labels
    _assert_ticks_say_their_position(chart["y_ticks"], 210, 0.0, 20, 1.0, key="y")


def test_forest_axis_labels_match_their_positions():
    chart = forest_plot(golden_result())
    ticks = chart["ticks"]
    zero = next(t for t in ticks if float(t["label"]) == 0)
    assert zero["x"] == pytest.approx(chart["zero"])
    step = float(ticks[1]["label"]) - float(ticks[0]["label"])
    pixels = ticks[1]["x"] - ticks[0]["x"]
    for t in ticks:
        expected = (t["x"] - chart["zero"]) / pixels * step
        assert float(t["label"]) == pytest.approx(expected, abs=0.01 * step)
