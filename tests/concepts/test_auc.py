"""AUC from ranks against scikit-learn, ties included."""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import roc_auc_score

from audit.concepts.auc import auc, auc_from_ranks, auc_table, average_ranks


@settings(max_examples=60, deadline=None)
@given(
    st.integers(5, 60).flatmap(
        lambda n: st.tuples(
            st.lists(st.integers(0, 4), min_size=n, max_size=n),  # few values: many ties
            st.lists(st.booleans(), min_size=n, max_size=n),
        )
    )
)
def test_auc_equals_scikit_learn_with_ties(data):
    values, labels = data
    scores = torch.tensor(values, dtype=torch.float32)
    y = torch.tensor(labels)
    if y.all() or not y.any():
        assert np.isnan(auc(scores, y))  # undefined without both classes
        return
    assert auc(scores, y) == pytest_approx(roc_auc_score(labels, values))


def pytest_approx(value: float):  # type: ignore[no-untyped-def]
    import pytest

    return pytest.approx(value, abs=1e-6)


def test_table_and_columns_agree_with_one_at_a_time():
    rng = np.random.default_rng(0)
    z = torch.tensor(np.maximum(rng.standard_normal((300, 5)), 0), dtype=torch.float32)
    y = torch.tensor(rng.random((300, 4)) < 0.3)
    ranks = average_ranks(z)
    table = auc_table(ranks, y)
    for i in range(5):
        for w in range(4):
            assert float(table[i, w]) == pytest_approx(roc_auc_score(y[:, w], z[:, i]))
    paired = auc_from_ranks(ranks[:, :4], y)
    assert torch.allclose(paired, torch.diagonal(table[:4]), atol=1e-6)


def test_column_aucs_equal_ranking_whole_columns_exactly():
    """Ranking only the positive values of non-negative columns equals ranking every value,
    bit for bit (sparse, dense, rounded ties, negative, constant and all-zero columns, blocks of
    any size), and scikit-learn's AUC."""
    from scipy.stats import rankdata

    from audit.concepts.auc import column_aucs

    rng = np.random.default_rng(7)
    n = 400
    columns = np.maximum(rng.standard_normal((n, 8)).astype(np.float32) - 1.0, 0)
    columns[:, 1] = np.round(np.abs(rng.standard_normal(n)), 1)  # ties above zero
    columns[:, 2] = rng.standard_normal(n)  # negative values
    columns[:, 3] = 0.0
    columns[:, 4] = 2.5
    positive = rng.random(n) < 0.4
    n_pos = positive.sum()
    whole = (rankdata(columns, axis=0)[positive].sum(0) - n_pos * (n_pos + 1) / 2) / (
        n_pos * (n - n_pos)
    )
    for block_values in (n, 3 * n, 1 << 22):
        found = column_aucs(columns, positive, block_values=block_values)
        assert found.tolist() == whole.tolist()
    for c in range(8):
        assert whole[c] == pytest_approx(roc_auc_score(positive, columns[:, c]))
    assert np.isnan(column_aucs(columns, np.zeros(n, dtype=bool))).all()


def test_the_torch_path_equals_the_exact_numpy_path_bit_for_bit_on_many_rows():
    """300 000 rows: rank sums near 2·10¹⁰, where float32 sums would be off by thousands; the
    naming's torch AUCs (one label column per score column, and the table) equal
    ``column_aucs``'s exact ones bit for bit."""
    from audit.concepts.auc import column_aucs

    rng = np.random.default_rng(3)
    n = 300_000
    z = np.maximum(rng.standard_normal((n, 3)) - 0.5, 0).astype(np.float32)
    z[:, 2] = np.round(z[:, 2], 1)  # ties above zero too
    positive = rng.random(n) < 0.45
    exact = column_aucs(z, positive)
    ranks = average_ranks(torch.from_numpy(z))
    labels = torch.from_numpy(positive)
    paired = auc_from_ranks(ranks, labels[:, None].expand(n, 3))
    table = auc_table(ranks, labels[:, None])[:, 0]
    assert paired.numpy().tolist() == exact.tolist()
    assert table.numpy().tolist() == exact.tolist()


@settings(max_examples=80, deadline=None)
@given(
    st.integers(1, 80).flatmap(
        lambda n: st.lists(
            st.lists(
                st.one_of(st.just(0.0), st.sampled_from([0.5, 1.0, 2.0]), st.floats(0.01, 5.0)),
                min_size=n,
                max_size=n,
            ),
            min_size=1,
            max_size=6,
        )
    )
)
def test_average_ranks_equal_scipy_on_sparse_and_dense_columns(columns):
    """Codes are mostly zeros: columns with few values above zero take the top-k path, the
    others a full sort; both give scipy's average ranks exactly (ties above zero, all-zero
    columns, columns with fewer positives than the widest one)."""
    from scipy.stats import rankdata

    x = np.array(columns, dtype=np.float32).T  # [N, k]
    sparse = x * (np.arange(x.shape[0])[:, None] % 5 == 0)  # at most a fifth above zero
    for values in (x, sparse):
        found = average_ranks(torch.as_tensor(values)).numpy()
        assert (found == rankdata(values, axis=0)).all()
