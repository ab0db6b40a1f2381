"""Group metrics: Wilson golden values by hand, and agreement with fairlearn on the same data."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from audit.fairness.attributes import build_cells
from audit.fairness.groups import group_report, wilson_interval


def test_wilson_golden_values_by_hand():
    # 8 of 10 with z = 1.96: p = 0.8, z² = 3.8416, denominator 1 + z²/n = 1.38416,
    # centre (0.8 + 0.19208) / 1.38416 = 0.716738, half 1.96·sqrt(0.016 + 0.009604) / 1.38416
    # = 1.96 · 0.1600125 / 1.38416 = 0.226581  →  (0.490157, 0.943319).
    lo, hi = wilson_interval(8, 10, z=1.96)
    assert lo == pytest.approx(0.490157, abs=2e-6) and hi == pytest.approx(0.943319, abs=2e-6)
    # 0 of 10: centre = half = 0.19208 / 1.38416 = 0.138770  →  (0, 0.277540).
    lo, hi = wilson_interval(0, 10, z=1.96)
    assert lo == 0.0 and hi == pytest.approx(0.277540, abs=2e-6)
    # 50 of 100: centre 0.5, half 1.96·sqrt(0.0025 + 0.00009604) / 1.038416 = 0.096170.
    lo, hi = wilson_interval(50, 100, z=1.96)
    assert lo == pytest.approx(0.403830, abs=2e-6) and hi == pytest.approx(0.596170, abs=2e-6)


def test_wilson_is_inside_unit_interval_and_covers():
    rng = np.random.default_rng(0)
    p, n = 0.93, 40
    hits = 0
    for k in rng.binomial(n, p, 4000):
        lo, hi = wilson_interval(int(k), n)
        assert 0 <= lo <= k / n <= hi <= 1
        hits += lo <= p <= hi
    assert 0.92 < hits / 4000 < 0.98  # near nominal 95 % where the Wald interval under-covers


@pytest.mark.parametrize("seed", [0, 1])
def test_metrics_agree_with_fairlearn(seed):
    fairlearn_metrics = pytest.importorskip("fairlearn.metrics")
    from sklearn.metrics import accuracy_score

    rng = np.random.default_rng(seed)
    n = 3000
    y = rng.integers(0, 2, n)
    attr = rng.choice(["a", "b", "c"], n, p=[0.6, 0.3, 0.1])
    # Predictions whose quality depends on the attribute, so the gaps are not zero.
    flip = rng.random(n) < np.select([attr == "a", attr == "b"], [0.05, 0.2], 0.35)
    pred = np.where(flip, 1 - y, y)
    labels = pd.DataFrame({"T": y, "A": attr})
    report = group_report(build_cells(labels, "T", "A"), pred)

    mf = fairlearn_metrics.MetricFrame(
        metrics=accuracy_score, y_true=y, y_pred=pred, sensitive_features=labels[["T", "A"]]
    )
    ours = {(int(g.target), g.attribute): g.accuracy for g in report.groups}
    theirs = {(int(k[0]), k[1]): v for k, v in mf.by_group.items()}
    assert ours.keys() == theirs.keys()
    for key in ours:
        assert ours[key] == pytest.approx(theirs[key], abs=1e-12)
    assert report.worst_group_accuracy == pytest.approx(mf.group_min(), abs=1e-12)
    assert report.accuracy_gap == pytest.approx(mf.difference(method="between_groups"), abs=1e-12)
    assert report.accuracy == pytest.approx(mf.overall, abs=1e-12)
    eod = fairlearn_metrics.equalized_odds_difference(y, pred, sensitive_features=attr)
    dpd = fairlearn_metrics.demographic_parity_difference(y, pred, sensitive_features=attr)
    assert report.equalized_odds_difference == pytest.approx(eod, abs=1e-12)
    assert report.demographic_parity_difference == pytest.approx(dpd, abs=1e-12)
    tpr = fairlearn_metrics.MetricFrame(
        metrics=fairlearn_metrics.true_positive_rate, y_true=y, y_pred=pred, sensitive_features=attr
    ).by_group
    for a in report.attribute_groups:
        assert a.tpr == pytest.approx(tpr[a.value], abs=1e-12)


def test_planted_audit_groups_agree_with_fairlearn():
    """The audit JSON's group numbers equal fairlearn's on the audit's own predictions."""
    fairlearn_metrics = pytest.importorskip("fairlearn.metrics")
    from audit.fairness import AuditSettings, run_audit
    from audit.store import EmbeddingStore
    from tests.fairness.planted import planted_bias_world

    w = planted_bias_world(n_samples=2000, seed=3)
    store = EmbeddingStore(
        path=__import__("pathlib").Path("mem.npy"), manifest={"dim": 48}, shards=[w.embeddings]
    )
    result, _ = run_audit(
        store, w.labels, w.sae, w.bank, w.head, AuditSettings("Male", "Blond_Hair")
    )
    pred = (w.head.margin(__import__("torch").from_numpy(w.embeddings)) > 0).numpy().astype(int)
    y, attr = w.labels["Male"].to_numpy(), w.labels["Blond_Hair"].to_numpy()
    eod = fairlearn_metrics.equalized_odds_difference(y, pred, sensitive_features=attr)
    assert result.equalized_odds_difference == pytest.approx(eod, abs=1e-6)
    mf = fairlearn_metrics.MetricFrame(
        metrics=lambda a, b: float(np.mean(a == b)), y_true=y, y_pred=pred,
        sensitive_features=w.labels[["Male", "Blond_Hair"]],
    )  # fmt: skip
    assert result.worst_group_accuracy == pytest.approx(mf.group_min(), abs=1e-6)


def test_an_undefined_rate_is_left_out_of_the_equalized_odds_difference():
    """A value of the attribute with rows of one class only has no FPR (or no TPR): it is left
    out of that gap, where fairlearn counts the missing rate as 0 (documented difference)."""
    # a: 4 positives (3 predicted 1), 4 negatives (3 predicted 1): TPR .75, FPR .75
    # b: 4 positives (2), 4 negatives (2): TPR .5, FPR .5
    # c: 2 positives (both 1), no negatives: TPR 1, FPR undefined
    y = [1, 1, 1, 1, 0, 0, 0, 0] * 2 + [1, 1]
    pred = [1, 1, 1, 0, 1, 1, 1, 0, 1, 1, 0, 0, 1, 1, 0, 0, 1, 1]
    labels = pd.DataFrame({"T": y, "A": ["a"] * 8 + ["b"] * 8 + ["c"] * 2})
    report = group_report(build_cells(labels, "T", "A"), np.array(pred))
    rates = {g.value: (g.tpr, g.fpr) for g in report.attribute_groups}
    assert rates == {"a": (0.75, 0.75), "b": (0.5, 0.5), "c": (1.0, None)}
    # TPR gap 1 − .5 = .5, FPR gap over a and b .75 − .5 = .25 (fairlearn: .75 − 0 = .75)
    assert report.equalized_odds_difference == pytest.approx(0.5, abs=1e-12)
    # The cell (T=0, A=c) is empty, so a gate never judges this number (checks are skipped).
    assert report.empty_groups == ("T=0, A=c",)
