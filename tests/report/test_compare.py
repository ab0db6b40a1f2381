"""The comparison page's pieces: best-cell marking, SVG charts and escaping."""

from __future__ import annotations

import re

from audit.report.compare import (
    Series,
    best_cells,
    build_comparison,
    model_names,
    render_compare_html,
    svg_chart,
    table_rows,
)


def _result(arch: str, fvu: float, l0: float, dead: int) -> dict:
    levels = [
        {
            "k": k,
            "l0": min(k, l0),
            "fvu": fvu * 64 / min(k, 64),
            "cosine": 0.9,
            "fvu_per_sample": fvu,
        }
        for k in (16, 32, 64)
    ]
    return {
        "schema": "msae-audit/eval",
        "sae": {"arch": arch, "path": f"/m/{arch}", "fingerprint": "sha256:0"},
        "store": {"path": "/s", "count": 10, "dim": 4, "model": None, "modality": None},
        "inference": {"code": "relu(pre)"},
        "cknna_detail": {"samples": 10},
        "timing": {"seconds_total": 1.0, "device": "cpu"},
        "n_latents": 64,
        "l0": l0,
        "frac_zeros": 1 - l0 / 64,
        "fvu": fvu,
        "fvu_per_sample": fvu,
        "cosine": 0.9,
        "cknna": None,
        "decoder_orthogonality": 0.01,
        "dead_latents": dead,
        "lp_kl": None,
        "lp_agreement": None,
        "progressive": levels,
    }


def test_best_cells_mark_the_best_value_and_skip_ties_across_all_models():
    comparison = build_comparison(
        [_result("topk", 0.2, 8.0, 0), _result("relu", 0.1, 30.0, 0)], ["a", "b"]
    )
    headers = [
        "arch", "n", "l0", "frac_zeros", "fvu", "fvu_per_sample", "cosine", "cknna", "do",
        "dead", "lp_kl", "lp_agreement",
    ]  # fmt: skip
    flags = [dict(zip(headers, row, strict=True)) for row in best_cells(comparison)]
    assert (flags[0]["fvu"], flags[1]["fvu"]) == (False, True)  # lower FVU wins
    assert (flags[0]["frac_zeros"], flags[1]["frac_zeros"]) == (True, False)  # sparser wins
    assert not flags[0]["cosine"] and not flags[1]["cosine"]  # equal everywhere: no winner
    assert not flags[0]["dead"] and not flags[1]["dead"]
    assert table_rows(comparison)[0][:3] == ["a", "topk", "64"]
    assert table_rows(comparison)[0][8] == "–"  # missing CKNNA


def test_svg_chart_escapes_text_and_drops_points_a_log_axis_cannot_show():
    svg = str(
        svg_chart(
            [Series("<b>&", "#000", [(1.0, 0.0), (10.0, 0.1), (100.0, 0.01)])],
            title="t<i>",
            x_label="x",
            y_label="y",
            x_kind="log10",
            y_kind="log10",
        )
    )
    assert "<b>" not in svg and "&lt;b&gt;&amp;" in svg and "t&lt;i&gt;" in svg
    assert svg.count("<circle") == 2  # (1, 0) cannot sit on a log axis
    assert str(svg_chart([], title="empty", x_label="x", y_label="y")).count("no data") == 1


def test_html_is_self_contained():
    comparison = build_comparison([_result("topk", 0.2, 8.0, 1)], ["<script>alert(1)</script>"])
    page = render_compare_html(comparison)
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert not re.search(r"https?://|\s(src|href)\s*=", page)
    assert page.count("<svg") == 3


def test_model_names_fall_back_to_paths_when_folder_names_clash():
    assert model_names(["/a/sae", "/b/other"]) == ["sae", "other"]
    assert model_names(["/a/sae", "/b/sae"]) == ["/a/sae", "/b/sae"]
