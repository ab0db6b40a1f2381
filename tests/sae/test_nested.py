"""The fast nested decode equals the naive per-level computation (loss and gradients)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import audit.sae.nested_plan as nested_plan
import audit.sae.nested_sparse as nested_sparse
from audit.sae.matryoshka import matryoshka_k_list
from audit.sae.nested import naive_nested_loss, nested_topk_loss


def _problem(batch: int, n: int, d: int, shift: float, seed: int = 0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, d, generator=g, dtype=dtype)
    w_dec = torch.nn.functional.normalize(torch.randn(n, d, generator=g, dtype=dtype), dim=1)
    w_enc = w_dec.T * 0.3 + 0.05 * torch.randn(d, n, generator=g, dtype=dtype)
    b_enc = torch.randn(n, generator=g, dtype=dtype) * 0.1 - shift
    b_pre = torch.randn(d, generator=g, dtype=dtype) * 0.1
    return x, [w_enc, b_enc, w_dec, b_pre]


def _by_hand(x, params, k_list, weights, loss_kind):
    """The nested loss from its definition, sharing no code with ``audit.sae.nested``: level
    ``i`` keeps each row's ``k_i`` largest pre-activations (ReLU'd); mse averages the squared
    error over rows and dimensions, nmse averages ``‖x − x̂‖² / ‖x‖²`` over rows."""
    w_enc, b_enc, w_dec, b_pre = (p.detach() for p in params)
    pre = (x - b_pre) @ w_enc + b_enc
    order = pre.argsort(dim=1, descending=True)
    levels = []
    for k in k_list:
        keep = torch.zeros_like(pre).scatter(1, order[:, :k], 1.0)
        x_hat = (pre.clamp_min(0) * keep) @ w_dec + b_pre
        error = (x - x_hat).pow(2).sum(1)
        per_row = error / x.shape[1] if loss_kind == "mse" else error / x.pow(2).sum(1)
        levels.append(per_row.mean())
    levels = torch.stack(levels)
    w = torch.tensor(weights, dtype=levels.dtype)
    return (levels * w).sum() / w.sum(), levels


def _compare(x, params, k_list, weights, loss_kind="mse", chunk_elements=None):
    fast_params = [p.clone().requires_grad_(True) for p in params]
    naive_params = [p.clone().requires_grad_(True) for p in params]
    out = nested_topk_loss(
        x, *fast_params, k_list, weights, loss_kind, chunk_elements=chunk_elements
    )
    out.loss.backward()
    w_enc, b_enc, w_dec, b_pre = naive_params
    pre = (x - b_pre) @ w_enc + b_enc
    loss, levels = naive_nested_loss(pre, x, w_dec, b_pre, k_list, weights, loss_kind)
    loss.backward()
    torch.testing.assert_close(out.loss, loss, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(out.level_losses, levels, rtol=1e-10, atol=1e-12)
    # The naive path shares the per-sample loss weights with the fast one: check both against
    # the definition too.
    by_hand, by_hand_levels = _by_hand(x, params, k_list, weights, loss_kind)
    torch.testing.assert_close(loss.detach(), by_hand, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(levels, by_hand_levels, rtol=1e-10, atol=1e-12)
    for fast, slow in zip(fast_params, naive_params, strict=True):
        torch.testing.assert_close(fast.grad, slow.grad, rtol=1e-9, atol=1e-12)
    return out


@pytest.mark.parametrize("weighting", ["uw", "rw"])
@pytest.mark.parametrize("loss_kind", ["mse", "nmse"])
@pytest.mark.parametrize("shift", [0.0, 0.4, 1.5])
@pytest.mark.parametrize("cost_factor", [0.0, 3.0, 1e9])  # all sparse, mixed, all dense
def test_fast_equals_naive(weighting, loss_kind, shift, cost_factor, monkeypatch):
    monkeypatch.setattr(nested_plan, "SPARSE_COST_FACTOR", cost_factor)
    ks = matryoshka_k_list(256, 8)
    weights = [float(len(ks) - i) for i in range(len(ks))] if weighting == "rw" else [1.0] * len(ks)
    x, params = _problem(48, 256, 24, shift)
    _compare(x, params, ks, weights, loss_kind)


def test_chunked_rows_equal_unchunked():
    ks = matryoshka_k_list(128, 4)
    x, params = _problem(50, 128, 16, 0.2)
    out = _compare(x, params, ks, [1.0] * len(ks), chunk_elements=128 * 7)  # 7 rows per chunk
    assert out.x_hat.shape == (50, 16) and out.active.shape == (50,) and out.fired.shape == (128,)


def test_single_level_and_edge_cases():
    x, params = _problem(20, 64, 8, 0.0)
    _compare(x, params, (5,), (1.0,))  # TopK
    _compare(x, params, (64,), (1.0,))  # full ReLU code
    _compare(x, params, (3, 64), (2.0, 1.0))
    x, params = _problem(20, 64, 8, 50.0)  # nothing fires
    out = _compare(x, params, (4, 16, 64), (1.0, 1.0, 1.0))
    assert int(out.active.sum()) == 0 and not bool(out.fired.any())
    x, params = _problem(1, 64, 8, 0.3)  # a single row
    _compare(x, params, (4, 16, 64), (1.0, 1.0, 1.0))


def test_outputs_describe_the_last_level():
    ks = (4, 16, 64)
    x, params = _problem(30, 64, 8, 0.2)
    out = nested_topk_loss(x, *params, ks, (1.0, 1.0, 1.0))
    w_enc, b_enc, w_dec, b_pre = params
    pre = (x - b_pre) @ w_enc + b_enc
    code = pre.clamp_min(0)
    torch.testing.assert_close(out.x_hat, code @ w_dec + b_pre)
    assert torch.equal(out.active, (code > 0).sum(1))
    assert torch.equal(out.fired, (code > 0).any(0))
    torch.testing.assert_close(out.pre, pre)


def test_extra_gradient_through_pre_is_added():
    ks = (4, 16, 64)
    x, params = _problem(30, 64, 8, 0.2)
    fast = [p.clone().requires_grad_(True) for p in params]
    out = nested_topk_loss(x, *fast, ks, (1.0, 1.0, 1.0))
    (out.loss + 0.01 * out.pre.clamp_min(0).sum()).backward()
    slow = [p.clone().requires_grad_(True) for p in params]
    pre = (x - slow[3]) @ slow[0] + slow[1]
    loss, _ = naive_nested_loss(pre, x, slow[2], slow[3], ks, (1.0, 1.0, 1.0))
    (loss + 0.01 * pre.clamp_min(0).sum()).backward()
    for a, b in zip(fast, slow, strict=True):
        torch.testing.assert_close(a.grad, b.grad)


@settings(max_examples=25, deadline=None)
@given(
    batch=st.integers(1, 24),
    n=st.sampled_from([16, 40, 96]),
    d=st.integers(2, 12),
    k_min=st.sampled_from([1, 2, 3, 8]),
    shift=st.floats(-0.5, 2.0),
    seed=st.integers(0, 10_000),
    cost=st.sampled_from([0.0, 3.0, 10.0, 1e9]),
)
def test_property_fast_equals_naive(batch, n, d, k_min, shift, seed, cost):
    old = nested_plan.SPARSE_COST_FACTOR
    nested_plan.SPARSE_COST_FACTOR = cost
    try:
        ks = matryoshka_k_list(n, min(k_min, n))
        x, params = _problem(batch, n, d, shift, seed)
        _compare(x, params, ks, [float(i + 1) for i in range(len(ks))])
    finally:
        nested_plan.SPARSE_COST_FACTOR = old


def test_rejects_bad_k_lists():
    x, params = _problem(4, 16, 4, 0.0)
    with pytest.raises(ValueError):
        nested_topk_loss(x, *params, (8, 4), (1.0, 1.0))
    with pytest.raises(ValueError):
        nested_topk_loss(x, *params, (4, 8), (1.0,))


def _piece_cost(piece, last, numel, strict):
    if piece.kind == "prefix":
        return nested_plan._prefix_cost(piece.level, last, piece.nnz, numel, strict)[0]
    return nested_plan._piece_cost(piece.nnz, numel, nested_plan.DENSE_SEGMENT_EXTRA)[0]


def _brute_force_cost(last, seg_nnz, level_nnz, numel, strict):
    """Every anchor set, each gap skipping its costliest segment."""
    import itertools

    seg = [nested_plan._piece_cost(c, numel, nested_plan.DENSE_SEGMENT_EXTRA)[0] for c in seg_nnz]
    best = float("inf")
    for r in range(last + 2):
        for anchors in itertools.combinations(range(last + 1), r):
            total, prev = 0.0, -1
            for a in anchors:
                gap = seg[prev + 1 : a + 1]
                total += sum(gap) - max(gap)
                total += nested_plan._prefix_cost(a, last, level_nnz[a], numel, strict)[0]
                prev = a
            best = min(best, total + sum(seg[prev + 1 :]))
    return best


@settings(max_examples=200, deadline=None)
@given(
    data=st.data(),
    last=st.integers(0, 6),
    cost=st.sampled_from([0.0, 3.0, 10.0, 1e9]),
)
def test_plan_writes_every_level_and_is_the_cheapest(data, last, cost):
    old = nested_plan.SPARSE_COST_FACTOR
    nested_plan.SPARSE_COST_FACTOR = cost
    try:
        numel = 1000
        seg_nnz = data.draw(st.lists(st.integers(0, 300), min_size=last + 1, max_size=last + 1))
        level_nnz = [sum(seg_nnz[: i + 1]) for i in range(last + 1)]
        strict = set(range(last)) | ({last} if data.draw(st.booleans()) else set())
        plan = nested_plan._plan_pieces(last, seg_nnz, level_nnz, numel, strict)
        # Each level's code is the signed sum of its pieces, segment by segment.
        for level in range(last + 1):
            total = [0] * (last + 1)
            for piece in plan.pieces:
                if piece.first <= level < piece.stop:
                    covered = range(piece.level + 1) if piece.kind == "prefix" else [piece.level]
                    for s in covered:
                        total[s] += piece.sign
            want = [1 if s <= level else 0 for s in range(last + 1)]
            assert [t for t, c in zip(total, seg_nnz, strict=True) if c] == [
                w for w, c in zip(want, seg_nnz, strict=True) if c
            ]
        plan_cost = sum(_piece_cost(p, last, numel, strict) for p in plan.pieces)
        assert plan_cost == pytest.approx(
            _brute_force_cost(last, seg_nnz, level_nnz, numel, strict), abs=1e-9
        )
    finally:
        nested_plan.SPARSE_COST_FACTOR = old


def test_plan_at_initialisation_decodes_whole_codes_densely():
    # About half the latents on (n = 4096, k = 64 … 4096): the two widest levels are decoded
    # as whole codes (one comparison each), the first segments sparsely from the sorted top-k.
    n, batch = 4096, 2048
    counts = [k * batch for k in (64, 128, 256, 512, 1024)] + [2040 * batch, 2050 * batch]
    seg_nnz = [counts[0]] + [counts[i] - counts[i - 1] for i in range(1, 7)]
    plan = nested_plan._plan_pieces(6, seg_nnz, counts, batch * n, set(range(6)))
    dense = {(p.kind, p.level) for p in plan.pieces if p.dense}
    sparse = {(p.kind, p.level) for p in plan.pieces if not p.dense}
    assert dense == {("prefix", 4), ("prefix", 6)}
    assert sparse == {("segment", s) for s in (0, 1, 2, 3, 6)}


@pytest.mark.parametrize("factor", [300.0, 3.0, 0.0, 1e9])
@pytest.mark.parametrize("shift", [0.0, 0.4, 1.5])
def test_gpu_plan_equals_naive_on_cpu(factor, shift, monkeypatch):
    """The plan a GPU gets (sparse pieces only from the sorted top-k, never listed with
    ``nonzero``), run on the CPU: loss and gradients still equal the naive computation."""
    monkeypatch.setattr(nested_plan, "plan_costs", lambda device: (factor, False))
    ks = matryoshka_k_list(256, 8)
    x, params = _problem(48, 256, 24, shift)
    _compare(x, params, ks, [float(len(ks) - i) for i in range(len(ks))])
    pre = (x - params[3]) @ params[0] + params[1]
    step = nested_plan.plan_nested_step(pre, (pre > 0).to(pre.dtype), ks)
    assert all(p.kind == "segment" and p.level in step.strict for p in step.sparse_pieces)
    assert all(p.level <= step.top for p in step.sparse_pieces)


@settings(max_examples=25, deadline=None)
@given(
    batch=st.integers(1, 24),
    n=st.sampled_from([16, 40, 96]),
    k_min=st.sampled_from([1, 2, 3, 8]),
    shift=st.floats(-0.5, 2.0),
    seed=st.integers(0, 10_000),
    factor=st.sampled_from([0.0, 3.0, 10.0, 300.0]),
)
def test_property_gpu_plan_equals_naive(batch, n, k_min, shift, seed, factor):
    old = nested_plan.plan_costs
    nested_plan.plan_costs = lambda device: (factor, False)
    try:
        ks = matryoshka_k_list(n, min(k_min, n))
        x, params = _problem(batch, n, 6, shift, seed)
        _compare(x, params, ks, [float(i + 1) for i in range(len(ks))])
    finally:
        nested_plan.plan_costs = old


def test_count_values_matches_bincount():
    values = torch.tensor([3, 0, 3, 5, 5, 5], dtype=torch.int16)
    expected = torch.tensor([1, 0, 0, 2, 0, 3, 0])
    assert torch.equal(nested_sparse._count_values(values, 7), expected)
    assert torch.equal(nested_sparse._scatter_count(values, 7), expected)  # the GPU's way
