"""Concept reliance maths: closed forms against literal decode-and-rerun, and the all-latent pass
against brute force."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from audit.fairness import reliance as rl
from audit.fairness.classifiers import LinearHead, ScriptedClassifier
from audit.fairness.inputs import build_cells
from audit.sae import SAEConfig, build_sae


def random_sae(arch: str = "relu", d: int = 12, n: int = 40, seed: int = 0, dtype=torch.float64):
    """An SAE with every parameter non-trivial: biases, mean μ and scale s ≠ 1."""
    g = torch.Generator().manual_seed(seed)
    kwargs = {
        "relu": {"l1": 0.0},
        "topk": {"k": 5},
        "batchtopk": {"k": 5},
        "matryoshka": {"k_list": (10, n)},
    }
    model = build_sae(SAEConfig(arch=arch, d_in=d, n_latents=n, **kwargs[arch]))
    with torch.no_grad():
        model.W_enc.copy_(torch.randn(d, n, generator=g) * 0.5)
        model.b_enc.copy_(torch.randn(n, generator=g) * 0.1)
        model.b_pre.copy_(torch.randn(d, generator=g) * 0.2)
        model.set_preprocessing(torch.randn(d, generator=g), 1.7)
        if arch == "batchtopk":
            model.threshold = torch.rand(n, generator=g) * 0.2
    return model.to(dtype).eval()


def random_head(d: int, l2: bool, seed: int = 1, dtype=torch.float64) -> LinearHead:
    g = torch.Generator().manual_seed(seed)
    return LinearHead(torch.randn(d, generator=g, dtype=dtype), 0.3, "l2" if l2 else "raw")


@pytest.mark.parametrize("l2", [False, True])
@pytest.mark.parametrize("mean_values", [False, True])
def test_closed_form_equals_decode_and_rerun(l2, mean_values):
    sae = random_sae()
    head = random_head(sae.d_in, l2)
    x = (
        torch.randn(64, sae.d_in, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
        + 0.5
    )
    with torch.no_grad():
        z = sae.encode(x)
        assert (
            z > 0
        ).float().mean() > 0.2  # the edit is non-trivial for many (sample, latent) pairs
        m = head.margin(x)
        g = rl.decoder_effects(sae, head)
        values = z.mean(0) if mean_values else None
        if l2:
            u = sae.decoder_directions()
            closed = rl.ablation_margins_l2(
                x @ head.weight, (x * x).sum(1), x @ u.T, z, g, (u * u).sum(1), head.bias, values
            )
        else:
            closed = rl.ablation_margins_raw(m, z, g, values)
        for j in range(sae.n_latents):
            v = 0.0 if values is None else values[j]
            rerun = rl.rerun_ablation_margins(x, head, sae, j, v)
            assert torch.allclose(closed[:, j], rerun, atol=1e-5, rtol=0), j


@pytest.mark.parametrize("l2", [False, True])
def test_joint_edit_of_a_name_group_equals_rerun(l2):
    sae = random_sae()
    head = random_head(sae.d_in, l2)
    x = torch.randn(50, sae.d_in, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    latents = (3, 7, 11)
    eng = _engine(sae, head, x.numpy())
    rl.scan_latents(eng, [latents])
    with torch.no_grad():
        z = sae.encode(x)
        edited = z.clone()
        edited[:, list(latents)] = 0
        rerun = head.margin(x + sae.decode(edited) - sae.decode(z))
        coeff = -z[:, list(latents)]
        closed = rl.edited_margins(eng, np.arange(len(x)), latents, coeff)
    assert torch.allclose(closed, rerun, atol=1e-5, rtol=0)


def _engine(sae, classifier, x: np.ndarray, y=None, a=None, dtype=torch.float64) -> rl.Engine:
    rng = np.random.default_rng(0)
    n = len(x)
    labels = pd.DataFrame(
        {
            "t": rng.integers(0, 2, n) if y is None else y,
            "a": rng.integers(0, 2, n) if a is None else a,
        }
    )
    cells = build_cells(labels, "t", "a")
    rows = rl.Rows(lambda lo, hi: x[lo:hi], lambda pos: x[np.asarray(pos)], n)
    return rl.Engine(sae, classifier, rows, cells, torch.device("cpu"), chunk=64, dtype=dtype)


def _brute_force_pairs(eng: rl.Engine, x: torch.Tensor, latents: tuple[int, ...]) -> np.ndarray:
    from audit.fairness.stats import pair_counts

    with torch.no_grad():
        z = eng.sae.encode(x)
        edited = z.clone()
        edited[:, list(latents)] = 0 if eng.values is None else eng.values[list(latents)]
        after = eng.classifier.margin(x + eng.sae.decode(edited) - eng.sae.decode(z)).numpy()
        before = eng.classifier.margin(x).numpy()
    y = eng.cells.y
    return pair_counts(
        (before > 0) == (y == 1), (after > 0) == (y == 1), eng.cells.cell, eng.cells.n_cells
    )


@pytest.mark.parametrize("mean_values", [False, True])
@pytest.mark.parametrize("kind", ["raw", "l2", "rerun"])
def test_scan_counts_match_brute_force(kind, mean_values, monkeypatch):
    """The all-latent pass (chunked, rows sorted by |margin|, pruned block by block) gives the
    rerun's exact counts."""
    monkeypatch.setattr(rl, "PRUNE_BLOCK", 3)  # many small blocks: the pruning really prunes
    sae = random_sae(n=24)
    head = random_head(sae.d_in, kind == "l2", seed=4)
    x = torch.randn(200, sae.d_in, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    clf = head
    if kind == "rerun":
        clf = ScriptedClassifier(torch.jit.script(_Linear(head)), "raw", "mem", "sha256:0")
    eng = _engine(sae, clf, x.numpy())
    if mean_values:
        with torch.no_grad():
            eng.values = sae.encode(x).mean(0)
    groups = [(1, 2), (4, 9, 20)]
    scan = rl.scan_latents(eng, groups)
    labels = eng.cells.cell_labels()
    changed = 0
    for j in range(sae.n_latents):
        expected = _brute_force_pairs(eng, x, (j,))
        changed += int(expected[:, 1:3].sum())
        if kind != "rerun":
            np.testing.assert_array_equal(scan.pairs(j, labels), expected)
        else:  # the screen is first-order; the exact path is exact_pairs
            row = rl.ConceptRow((j,), None, f"latent {j}", False, "", 0.0)
            zcol, _ = rl.extract_columns(eng, [j])
            pairs, _ = rl.exact_pairs(eng, row, rl.RowData(zcol, None))
            np.testing.assert_array_equal(pairs, expected)
    assert changed > 50  # the test exercises real flips
    if kind == "raw":
        assert scan.checked_fraction < 0.7  # ... and the pruning skips pairs
    if kind != "rerun":
        for r, latents in enumerate(groups):
            np.testing.assert_array_equal(
                scan.pairs(sae.n_latents + r, labels), _brute_force_pairs(eng, x, latents)
            )


class _Linear(torch.nn.Module):
    def __init__(self, head: LinearHead) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(head.weight.float()[:, None].clone())
        self.b = float(head.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.w + self.b


@pytest.mark.parametrize("arch", ["relu", "matryoshka", "topk", "batchtopk"])
def test_encode_columns_matches_full_encode(arch):
    sae = random_sae(arch, dtype=torch.float32)
    x = torch.randn(30, sae.d_in)
    cols = torch.tensor([0, 5, 17, 39])
    with torch.no_grad():
        assert torch.allclose(rl.encode_columns(sae, x, cols), sae.encode(x)[:, cols], atol=1e-6)


def test_relocation_counts_linear_exact_vs_atoms():
    """The exact count (linear raw) and the atom approximation agree when every activation
    value is its own atom."""
    sae = random_sae(n=16)
    head = random_head(sae.d_in, False, seed=6)
    x = torch.randn(120, sae.d_in, dtype=torch.float64, generator=torch.Generator().manual_seed(7))
    eng = _engine(sae, head, x.numpy())
    rl.scan_latents(eng, [])
    j = int(np.argmax((sae.encode(x) > 0).double().mean(0).detach().numpy()))
    z, _ = rl.extract_columns(eng, [j])
    row = rl.ConceptRow((j,), "c", "c", True, "c", 1.0)
    exact, n_t = rl.relocation_success_counts(eng, row, rl.RowData(z, None))
    # Force the atom path with an atom per distinct active value: same counts.
    eng_atoms = _engine(
        sae, ScriptedClassifier(torch.jit.script(_Linear(head)), "raw", "m", "s"), x.numpy()
    )
    rl.scan_latents(eng_atoms, [])
    approx, n_t2 = rl.relocation_success_counts(eng_atoms, row, rl.RowData(z, None), n_atoms=10_000)
    np.testing.assert_array_equal(n_t, n_t2)
    np.testing.assert_array_equal(exact, approx)
