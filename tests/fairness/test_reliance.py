"""Concept reliance maths: closed forms against literal decode-and-rerun, and the all-latent pass
against brute force."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from audit.fairness import reliance as rl
from audit.fairness.attributes import build_cells
from audit.fairness.classifiers import LinearHead, ScriptedClassifier, linear
from audit.fairness.edits import AuditedRows, Baseline, Workspace
from audit.fairness.stats import pair_counts
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


def rerun_margins(x, classifier, sae, latents, values) -> torch.Tensor:
    """Decode-and-rerun, literally: ``x' = x + post(dec(z')) − post(dec(z))``, then the classifier."""
    with torch.no_grad():
        z = sae.encode(x)
        edited = z.clone()
        edited[:, list(latents)] = 0.0 if values is None else values[list(latents)]
        return classifier.margin(x + sae.decode(edited) - sae.decode(z))


def _setup(sae, classifier, x: np.ndarray, dtype=torch.float64, values=None):
    """Workspace, cells, edit effect and (after the scan) the edit setting of random groups."""
    rng = np.random.default_rng(0)
    n = len(x)
    labels = pd.DataFrame({"t": rng.integers(0, 2, n), "a": rng.integers(0, 2, n)})
    cells = build_cells(labels, "t", "a")
    rows = AuditedRows(lambda lo, hi: x[lo:hi], lambda pos: x[np.asarray(pos)], n)
    space = Workspace(rows, torch.device("cpu"), chunk=64, dtype=dtype)
    effect = classifier.edit_effect(sae.decoder_directions().detach().to(dtype))
    return space, cells, effect


def _scan(sae, classifier, x, groups=(), values=None):
    space, cells, effect = _setup(sae, classifier, x.numpy())
    scan = rl.scan_latents(space, classifier, sae, cells, effect, values, list(groups))
    return scan, rl.EditSetting(space, cells, effect, scan.base, values)


@pytest.mark.parametrize("l2", [False, True])
@pytest.mark.parametrize("mean_values", [False, True])
def test_closed_form_equals_decode_and_rerun(l2, mean_values):
    sae = random_sae()
    head = random_head(sae.d_in, l2)
    x = torch.randn(64, sae.d_in, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    x = x + 0.5
    with torch.no_grad():
        z = sae.encode(x)
    assert (z > 0).float().mean() > 0.2  # the edit is non-trivial for many (sample, latent) pairs
    values = z.mean(0) if mean_values else None
    _, setting = _scan(sae, head, x, values=values)
    positions = np.arange(len(x))
    if not l2:  # every latent at once
        g = setting.effect.g
        closed_all = linear.ablation_margins_raw(head.margin(x), z, g, values)
    for j in range(sae.n_latents):
        coeff = (-z if values is None else values[None, :] - z)[:, [j]]
        with torch.no_grad():
            closed = setting.effect.margins(setting.space, setting.base, positions, (j,), coeff)
        rerun = rerun_margins(x, head, sae, (j,), values)
        assert torch.allclose(closed, rerun, atol=1e-5, rtol=0), j
        if not l2:
            assert torch.allclose(closed_all[:, j], rerun, atol=1e-5, rtol=0), j


@pytest.mark.parametrize("arch", ["relu", "matryoshka"])
@pytest.mark.parametrize("keep", [((3,), (5, 9, 20), (0, 39)), ((0,), (3,), (39,))])
def test_the_scan_keeps_each_concept_s_summed_activation_in_row_order(arch, keep):
    """The pass sorts each chunk's rows by |margin|; the sums it keeps for the concept activity
    are nonetheless each row's own, equal to encoding the rows again (several chunks)."""
    from audit.concepts.activity import summed_activations

    sae = random_sae(arch)
    head = random_head(sae.d_in, l2=False)
    x = torch.randn(150, sae.d_in, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    space, cells, effect = _setup(sae, head, x.numpy())
    scan = rl.scan_latents(space, head, sae, cells, effect, None, [], keep=keep)
    chunks = [x[lo : lo + 64] for lo in range(0, len(x), 64)]
    again = summed_activations(sae, chunks, list(keep))
    assert scan.kept == keep and scan.kept_sums.shape == (150, 3)
    assert np.abs(again).max() > 0.1
    np.testing.assert_allclose(scan.kept_sums, again, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("arch", ["relu", "topk", "matryoshka"])
def test_the_scan_on_the_mean_pass_s_kept_codes_equals_encoding_again(arch):
    """Under mean ablation the first pass keeps its codes and the scan reuses them: flips,
    activation statistics, margins and kept sums equal a scan that encodes every row again
    (several chunks, rows sorted by |margin| inside each); past the memory budget nothing is
    kept and the scan encodes."""
    sae = random_sae(arch)
    head = random_head(sae.d_in, l2=False)
    x = torch.randn(150, sae.d_in, dtype=torch.float64, generator=torch.Generator().manual_seed(6))
    space, cells, effect = _setup(sae, head, x.numpy())
    values, codes = rl.ablation_values(space, sae, "mean")
    assert codes is not None and codes.chunks == 3
    with torch.no_grad():
        z = sae.encode(x)
    assert torch.allclose(values, z.mean(0), atol=1e-12)
    assert torch.equal(torch.cat([codes.chunk(i) for i in range(3)]), z)
    groups, keep = [(3, 7, 11)], ((3,), (5, 9))
    reused = rl.scan_latents(
        space, head, sae, cells, effect, values, groups, keep=keep, codes=codes
    )
    again = rl.scan_latents(space, head, sae, cells, effect, values, groups, keep=keep)
    assert reused.flips.sum() > 0
    np.testing.assert_array_equal(reused.flips, again.flips)
    np.testing.assert_array_equal(reused.act_count, again.act_count)
    np.testing.assert_allclose(reused.act_sum, again.act_sum, rtol=1e-12)
    np.testing.assert_array_equal(reused.base.margin, again.base.margin)
    np.testing.assert_allclose(reused.kept_sums, again.kept_sums, rtol=1e-6)
    other_chunks = Workspace(space.rows, space.device, chunk=50, dtype=space.dtype)  # 3 chunks too
    elsewhere = rl.scan_latents(other_chunks, head, sae, cells, effect, values, groups, codes=codes)
    np.testing.assert_array_equal(elsewhere.flips, again.flips)  # not misread: encoded again
    too_small = rl.ablation_values(space, sae, "mean", keep_bytes=codes.bytes // 2)
    assert too_small[1] is None and torch.equal(too_small[0], values)
    assert rl.ablation_values(space, sae, "zero") == (None, None)


def test_kept_codes_round_trip_any_sparsity():
    from audit.fairness.reliance.codes import KeptCodes

    g = torch.Generator().manual_seed(0)
    kept = KeptCodes(n_latents=30, budget_bytes=1 << 20)
    chunks = []
    for density in (0.0, 0.05, 0.5, 1.0):
        z = torch.rand(17, 30, generator=g)
        z = torch.where(torch.rand(17, 30, generator=g) < density, z, 0.0)
        z[3] = 0.0  # a row with no active latent
        chunks.append(z)
        assert kept.add(z)
    assert kept.chunks == 4
    for i, z in enumerate(chunks):
        assert torch.equal(kept.chunk(i), z)
    full = KeptCodes(n_latents=30, budget_bytes=kept.bytes - 1)
    assert [full.add(z) for z in chunks] == [True, True, True, False]
    assert full.dropped and full.chunks == 0 and not full.add(chunks[0])


@pytest.mark.parametrize("l2", [False, True])
def test_joint_edit_of_a_name_group_equals_rerun(l2):
    sae = random_sae()
    head = random_head(sae.d_in, l2)
    x = torch.randn(50, sae.d_in, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    latents = (3, 7, 11)
    _, s = _scan(sae, head, x, groups=[latents])
    with torch.no_grad():
        coeff = -sae.encode(x)[:, list(latents)]
        closed = s.effect.margins(s.space, s.base, np.arange(len(x)), latents, coeff)
    assert torch.allclose(closed, rerun_margins(x, head, sae, latents, None), atol=1e-5, rtol=0)


def _brute_force_pairs(s: rl.EditSetting, clf, sae, x: torch.Tensor, latents) -> np.ndarray:
    after = rerun_margins(x, clf, sae, latents, s.values).numpy()
    with torch.no_grad():
        before = clf.margin(x).numpy()
    y = s.cells.y
    return pair_counts(
        (before > 0) == (y == 1), (after > 0) == (y == 1), s.cells.cell, s.cells.n_cells
    )


@pytest.mark.parametrize("mean_values", [False, True])
@pytest.mark.parametrize("kind", ["raw", "l2", "rerun"])
def test_scan_counts_match_brute_force(kind, mean_values, monkeypatch):
    """The all-latent pass (chunked, rows sorted by |margin|, pruned block by block) gives the
    rerun's exact counts."""
    monkeypatch.setattr(linear, "PRUNE_BLOCK", 3)  # many small blocks: the pruning really prunes
    sae = random_sae(n=24)
    head = random_head(sae.d_in, kind == "l2", seed=4)
    x = torch.randn(200, sae.d_in, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    clf = head
    if kind == "rerun":
        clf = ScriptedClassifier(torch.jit.script(_Linear(head)), "raw", "mem", "sha256:0")
    with torch.no_grad():
        values = sae.encode(x).mean(0) if mean_values else None
    groups = [(1, 2), (4, 9, 20)]
    scan, s = _scan(sae, clf, x, groups=groups, values=values)
    changed = 0
    for j in range(sae.n_latents):
        expected = _brute_force_pairs(s, clf, sae, x, (j,))
        changed += int(expected[:, 1:3].sum())
        if kind != "rerun":
            np.testing.assert_array_equal(scan.pairs(j), expected)
        else:  # the screen is first-order; the exact path is exact_pairs
            row = rl.ConceptRow((j,), None, f"latent {j}", False, "", 0.0)
            zcol, _ = rl.extract_columns(s.space, sae, [j], s.effect.projections)
            pairs, _ = rl.exact_pairs(s, row, rl.RowData(zcol, None))
            np.testing.assert_array_equal(pairs, expected)
    assert changed > 50  # the test exercises real flips
    if kind == "raw":
        assert scan.checked_fraction < 0.7  # ... and the pruning skips pairs
    if kind != "rerun":
        for r, latents in enumerate(groups):
            np.testing.assert_array_equal(
                scan.pairs(sae.n_latents + r), _brute_force_pairs(s, clf, sae, x, latents)
            )


class _Linear(torch.nn.Module):
    def __init__(self, head: LinearHead) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(head.weight.float()[:, None].clone())
        self.b = float(head.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.w + self.b


def _brute_force_relocation(head, x, u, z, y, given_shift):
    """Per sample i: how many members k of its class leave it correct when ``x_i`` (plus the
    given edits) takes k's activation, ``x_i + (z_k − z_i) u`` — every (i, k) pair evaluated."""
    out = np.zeros(len(y), dtype=np.int64)
    for i in range(len(y)):
        same = np.nonzero(y == y[i])[0]
        moved = x[i] + given_shift[i] + (z[same] - z[i]) @ u
        m = head.margin(torch.from_numpy(moved)).numpy()
        out[i] = int(((m > 0) == (y[i] == 1)).sum())
    return out


@pytest.mark.parametrize("mean_values", [False, True])
@pytest.mark.parametrize("with_given", [False, True])
def test_relocation_counts_linear_exact_vs_atoms_vs_brute_force(mean_values, with_given):
    """The relocation null's success counts: the exact count (linear raw), the atom computation
    with an atom per distinct value, and every (sample, member) pair evaluated — alone or on top
    of another concept's edit (zero or mean ablation)."""
    sae = random_sae(n=16)
    head = random_head(sae.d_in, False, seed=6)
    x = torch.randn(120, sae.d_in, dtype=torch.float64, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        codes = sae.encode(x)
    values = codes.mean(0) if mean_values else None
    _, s = _scan(sae, head, x, values=values)
    by_rate = np.argsort(-(codes > 0).double().mean(0).numpy(), kind="stable")
    j, other = int(by_rate[0]), int(by_rate[1])
    z, _ = rl.extract_columns(s.space, sae, [j, other], False)
    row = rl.ConceptRow((j,), "c", "c", True, "c", 1.0)
    data = rl.RowData(z[:, :1], None)
    given = None
    given_shift = np.zeros(x.shape)
    u = sae.decoder_directions().detach().double().numpy()
    if with_given:
        given_row = rl.ConceptRow((other,), "g", "g", True, "g", 1.0)
        given = rl.given_edits(s, [given_row], [rl.RowData(z[:, 1:], None)])
        v_other = 0.0 if values is None else float(values[other])
        given_shift = (v_other - z[:, 1:].astype(np.float64)) @ u[[other]]
    exact, n_t = rl.relocation_success_counts(s, row, data, given=given)
    # Force the atom path with an atom per distinct active value: same counts.
    scripted = ScriptedClassifier(torch.jit.script(_Linear(head)), "raw", "m", "s")
    _, s_atoms = _scan(sae, scripted, x, values=values)
    if with_given:
        given = rl.given_edits(s_atoms, [given_row], [rl.RowData(z[:, 1:], None)])
    approx, n_t2 = rl.relocation_success_counts(s_atoms, row, data, n_atoms=10_000, given=given)
    np.testing.assert_array_equal(n_t, n_t2)
    np.testing.assert_array_equal(exact, approx)
    brute = _brute_force_relocation(
        head, x.numpy(), u[[j]], z[:, :1].astype(np.float64), s.cells.y, given_shift
    )
    np.testing.assert_array_equal(exact, brute)


def test_baseline_margins_are_the_classifiers():
    sae = random_sae(n=16)
    head = random_head(sae.d_in, True, seed=8)
    x = torch.randn(90, sae.d_in, dtype=torch.float64, generator=torch.Generator().manual_seed(9))
    scan, s = _scan(sae, head, x)
    assert isinstance(s.base, Baseline) and set(s.base.state) == {"dot_w", "sq_norm"}
    np.testing.assert_allclose(scan.base.margin, head.margin(x).numpy(), atol=1e-12)
    np.testing.assert_allclose(s.base.state["sq_norm"], (x * x).sum(1).numpy(), rtol=1e-12)


def test_kept_codes_doctest():
    import doctest

    from audit.fairness.reliance import codes

    assert doctest.testmod(codes).attempted > 0 and doctest.testmod(codes).failed == 0
