"""The surrogate: a logistic regression on embeddings fit to the model's decisions.

Planted worlds: the "model" decides by a known linear rule of the embeddings (a surrogate can
copy it), by a rule the embeddings do not carry (it cannot), or by the linear rule except in
one group (it fails there only).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from audit.errors import InputError
from audit.fairness.classifiers import fit_probe
from audit.fairness.groups import Cells
from audit.fairness.surrogate import agreement_problem, fit_surrogate


def _world(n: int = 1200, d: int = 16, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)).astype(np.float32)
    w = rng.normal(size=d)
    decisions = (x @ w + 0.3 > 0).astype(np.int8)
    y = rng.integers(0, 2, n).astype(np.int8)
    attribute = rng.integers(0, 2, n).astype(np.int16)
    cells = Cells(y, attribute, "target", "attr", ("no", "yes"), ("0", "1"), 1)
    return x, decisions, cells, rng


def test_copies_a_linear_model_by_cross_fitting():
    x, decisions, cells, _ = _world()
    s = fit_surrogate(x, decisions, cells, folds=5)
    assert s.method == "cross-fit" and len(s.heads) == 5 and s.fit_rows == len(x)
    assert s.agreement >= 0.95
    assert min(s.agreement_per_group.values()) >= 0.9
    assert set(s.group_sizes) == {cells.cell_name(c) for c in range(4)}
    assert sum(s.group_sizes.values()) == len(x)
    assert agreement_problem(s) is None
    # The agreement is what it says: the surrogate's decisions against the model's.
    np.testing.assert_allclose(s.agreement, (s.decisions == decisions).mean())
    # Attribution runs on one head fit on every audited row; its agreement is in-sample.
    full = fit_probe(x, decisions, "raw", 0, 1.0)
    torch.testing.assert_close(s.head.weight, full.weight)
    in_sample = ((s.head.margin(torch.from_numpy(x)) > 0).numpy() == decisions).mean()
    assert s.attributed_agreement == pytest.approx(in_sample)
    record = s.record()
    assert record.folds == 5 and record.passed and record.agreement == s.agreement
    assert record.worst_group_agreement == min(s.agreement_per_group.values())
    assert record.agreement_per_group[record.worst_group] == record.worst_group_agreement


def test_no_row_is_predicted_by_a_head_that_saw_it():
    """Refitting head k on every row *outside* fold k gives head k back exactly, and the folds
    are stratified by the model's decision."""
    x, decisions, cells, _ = _world(n=600)
    s = fit_surrogate(x, decisions, cells, folds=4, seed=3)
    sizes = np.bincount(s.fold, minlength=4)
    assert sizes.max() - sizes.min() <= 1
    for k, head in enumerate(s.heads):
        outside = s.fold != k
        refit = fit_probe(x[outside], decisions[outside], "raw", 3, 1.0)
        torch.testing.assert_close(refit.weight, head.weight)
        assert refit.bias == pytest.approx(head.bias)
        share = decisions[s.fold == k].mean()
        assert abs(share - decisions.mean()) < 0.02


def test_margin_uses_each_rows_own_head():
    x, decisions, cells, _ = _world(n=400)
    s = fit_surrogate(x, decisions, cells, folds=3)
    positions = np.array([5, 0, 399, 17, 200])
    got = s.margin(torch.from_numpy(x[positions]), positions)
    want = [s.heads[s.fold[p]].margin(torch.from_numpy(x[p : p + 1]))[0] for p in positions]
    torch.testing.assert_close(got, torch.stack(want))
    np.testing.assert_array_equal((got > 0).numpy(), s.decisions[positions].astype(bool))
    w, b = s.weights()
    assert w.shape == (3, x.shape[1]) and b.shape == (3,)


def test_train_split_fit_is_judged_on_unseen_rows():
    x, decisions, cells, _ = _world(n=1500)
    train, audit = np.arange(1000), np.arange(1000, 1500)
    audit_cells = Cells(
        cells.y[audit], cells.attribute[audit], "target", "attr", ("no", "yes"), ("0", "1"), 1
    )
    s = fit_surrogate(x[audit], decisions[audit], audit_cells, x[train], decisions[train])
    assert s.method == "train split" and len(s.heads) == 1 and s.fit_rows == 1000
    assert (s.fold == 0).all()
    assert s.agreement >= 0.95 and s.fit_agreement >= 0.95
    record = s.record()
    assert record.folds is None and record.method == "train split" and record.passed
    assert s.head is s.heads[0] and s.attributed_agreement == s.agreement


def test_a_model_the_embeddings_cannot_explain():
    x, _, cells, rng = _world()
    decisions = rng.integers(0, 2, len(x)).astype(np.int8)  # nothing in x predicts these
    s = fit_surrogate(x, decisions, cells)
    assert 0.35 < s.agreement < 0.65
    assert s.fit_agreement > s.agreement  # in-sample fit is optimistic; out-of-fold is not
    problem = agreement_problem(s)
    assert problem is not None and "< 90%" in problem
    assert not s.record().passed


def test_a_group_where_the_surrogate_fails_is_named():
    x, decisions, cells, rng = _world(n=3000)
    bad_cell = 2  # target=yes, attr=0
    in_bad = cells.cell == bad_cell
    decisions = decisions.copy()
    decisions[in_bad] = rng.integers(0, 2, int(in_bad.sum()))
    s = fit_surrogate(x, decisions, cells)
    name = cells.cell_name(bad_cell)
    assert s.agreement_per_group[name] < 0.7
    others = [a for g, a in s.agreement_per_group.items() if g != name]
    assert min(others) > 0.9
    problem = agreement_problem(s, min_overall=0.5)
    assert problem is not None and name in problem and "1 group(s) below" in problem


def test_too_few_of_one_decision_and_mismatched_lengths():
    x, _, cells, _ = _world(n=100)
    decisions = np.zeros(100, dtype=np.int8)
    decisions[:3] = 1
    with pytest.raises(InputError, match="predicts class 1 for only 3 of the audited rows"):
        fit_surrogate(x, decisions, cells, folds=5)
    with pytest.raises(InputError, match="differ in length"):
        fit_surrogate(x[:50], decisions, cells)
    with pytest.raises(InputError, match="of the train-split rows"):
        fit_surrogate(x, (x[:, 0] > 0).astype(np.int8), cells, x, np.zeros(100, np.int8))
