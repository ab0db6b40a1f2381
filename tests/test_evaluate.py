"""The chunked evaluation driver: exactness against whole-array metrics, edge models, the probe."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
import torch

from audit.errors import InputError
from audit.evaluate import EvalConfig, evaluate_sae, fit_probe, json_safe, nested_topk_decodes
from audit.metrics import cknna, fvu, fvu_per_sample, l0, mean_cosine, progressive_ks
from audit.sae import keep_topk, load_sae
from tests.eval_fixtures import mean_sae, perfect_sae, planted_store, trained_matryoshka

SCALARS = ("l0", "frac_zeros", "fvu", "fvu_per_sample", "cosine", "cknna", "dead_latents")


@pytest.fixture(autouse=True)
def one_thread():
    # Small matrices on a shared 2-core machine run many times faster on one thread
    # (two threads spin-wait on each other whenever another process takes a core).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("eval")
    store = planted_store(root / "store")
    sae_dir = trained_matryoshka(store, root / "sae")
    return store, load_sae(sae_dir)


@pytest.mark.parametrize(
    ("n", "max_active", "ks"),
    [
        (300, 300, None),
        (1000, 530, None),
        (1000, 40, None),
        (48, 48, None),
        (400, 260, [4, 150, 170, 190, 210, 400]),  # widest segment first: several tails
    ],
)
def test_nested_decodes_equal_one_topk_decode_per_level(n, max_active, ks):
    # Rows with 0 … max_active active latents: the widest rank segment (never decoded) lands at
    # the end, in the middle or at the start, so heads, tails and the remainder are all used;
    # narrow segments go through CSR products, wide ones through dense ones.
    gen = torch.Generator().manual_seed(n + max_active)
    rows = 64
    counts = torch.randint(0, max_active + 1, (rows,), generator=gen)
    counts[0], counts[1] = 0, max_active
    rank = torch.rand(rows, n, generator=gen).argsort(1).argsort(1)
    z = torch.rand(rows, n, generator=gen) * (rank < counts[:, None])
    w = torch.randn(n, 20, generator=gen)
    ks = ks or progressive_ks(n)
    decodes = nested_topk_decodes(z, w, ks)
    assert len(decodes) == len(ks)
    for k, got in zip(ks, decodes, strict=True):
        torch.testing.assert_close(got, keep_topk(z, k) @ w, rtol=1e-4, atol=1e-4)
    if max_active > 16:  # truncation really happens (the test would not notice otherwise)
        assert not torch.allclose(decodes[0], decodes[-1], atol=1e-2)


def test_perfect_reconstruction_gives_fvu_zero_cosine_one_and_probe_agreement(tmp_path):
    store = planted_store(tmp_path / "s", rows=600)
    x = store.read()
    labels = pd.Series(np.where(x[:, 0] > np.median(x[:, 0]), "hi", "lo"))
    result = evaluate_sae(perfect_sae(x), store, EvalConfig(device="cpu"), labels=labels)
    assert result["fvu"] < 1e-10 and result["fvu_per_sample"] < 1e-10
    assert result["cosine"] == pytest.approx(1.0, abs=1e-7)
    assert result["lp_agreement"] == 1.0
    assert result["lp_kl"] == pytest.approx(0.0, abs=1e-9)
    assert result["linear_probe"]["accuracy_x"] > 0.8  # the probe learned something
    assert result["l0"] <= store.dim  # one of each ± pair at most


def test_predicting_the_mean_gives_fvu_one(tmp_path):
    store = planted_store(tmp_path / "s", rows=500)
    result = evaluate_sae(mean_sae(store.read()), store, EvalConfig(device="cpu"))
    assert result["fvu"] == pytest.approx(1.0, abs=1e-6)
    assert result["l0"] == 0.0 and result["frac_zeros"] == 1.0
    assert result["dead_latents"] == 16 and result["dead_fraction"] == 1.0
    assert result["cknna"] is None  # an all-zero code has no neighbourhoods: undefined, not 0


def test_chunked_equals_unchunked_equals_whole_array_metrics(world):
    store, model = world
    whole = evaluate_sae(model, store, EvalConfig(device="cpu", chunk_rows=store.count))
    chunked = evaluate_sae(model, store, EvalConfig(device="cpu", chunk_rows=97))
    for key in SCALARS:
        assert chunked[key] == pytest.approx(whole[key], rel=1e-9), key
    for a, b in zip(chunked["progressive"], whole["progressive"], strict=True):
        assert a == pytest.approx(b, rel=1e-9)

    x = torch.tensor(store.read())
    with torch.no_grad():
        z = model.encode(x)
        x_hat = model.decode(z)
        assert whole["fvu"] == pytest.approx(fvu(x, x_hat), rel=1e-5)
        assert whole["fvu_per_sample"] == pytest.approx(fvu_per_sample(x, x_hat), rel=1e-5)
        assert whole["cosine"] == pytest.approx(mean_cosine(x, x_hat), rel=1e-6)
        assert whole["l0"] == pytest.approx(l0(z), rel=1e-12)
        assert whole["dead_latents"] == int(((z != 0).sum(0) == 0).sum())
        assert whole["cknna"] == pytest.approx(cknna(x, z), rel=1e-6)  # 3000 rows < 4096: all
        for level in whole["progressive"]:
            x_hat_k = model.decode(keep_topk(z, level["k"]))
            assert level["fvu"] == pytest.approx(fvu(x, x_hat_k), rel=1e-4)
            assert level["cosine"] == pytest.approx(mean_cosine(x, x_hat_k), rel=1e-6)


def test_progressive_recovery_is_monotone_for_a_trained_matryoshka(world):
    store, model = world
    result = evaluate_sae(model, store, EvalConfig(device="cpu", cknna_samples=0))
    levels = result["progressive"]
    assert [level["k"] for level in levels] == [16, 32, 64, 128, 256]
    fvus = [level["fvu"] for level in levels]
    cosines = [level["cosine"] for level in levels]
    l0s = [level["l0"] for level in levels]
    assert all(a >= b for a, b in itertools.pairwise(fvus)), fvus
    assert all(a <= b for a, b in itertools.pairwise(cosines)), cosines
    assert all(a <= b for a, b in itertools.pairwise(l0s)), l0s
    assert fvus[0] > 1.5 * fvus[-1]  # the curve is not flat: truncation costs fidelity
    assert fvus[-1] < 0.2 and cosines[-1] > 0.95  # and the model is actually trained
    assert levels[-1]["fvu"] == result["fvu"] and levels[-1]["l0"] == result["l0"]
    assert result["cknna"] is None and result["cknna_detail"]["samples"] == 0


def test_topk_inference_code_equals_that_progressive_level(world):
    store, model = world
    plain = evaluate_sae(model, store, EvalConfig(device="cpu", cknna_samples=0))
    top32 = evaluate_sae(model, store, EvalConfig(device="cpu", cknna_samples=0, topk=32))
    level = next(p for p in plain["progressive"] if p["k"] == 32)
    assert top32["l0"] <= 32 and top32["l0"] == pytest.approx(level["l0"])
    assert top32["fvu"] == pytest.approx(level["fvu"], rel=1e-6)
    assert top32["inference"] == {
        "code": "topk(relu(pre), 32)",
        "topk": 32,
        "space": plain["inference"]["space"],
    }


def test_dead_latents_are_counted(world):
    store, model = world
    with torch.no_grad():
        fires = (model.encode(torch.tensor(store.read())) != 0).sum(0)
    silenced = torch.nonzero(fires > 0)[:3, 0]  # three latents that do fire
    before = evaluate_sae(model, store, EvalConfig(device="cpu", cknna_samples=0))
    assert before["dead_latents"] == int((fires == 0).sum())
    original = model.b_enc.detach().clone()
    with torch.no_grad():
        model.b_enc[silenced] = -1e4
    try:
        after = evaluate_sae(model, store, EvalConfig(device="cpu", cknna_samples=0))
    finally:
        with torch.no_grad():
            model.b_enc.copy_(original)
    assert after["dead_latents"] == before["dead_latents"] + 3


def test_probe_skips_unlabelled_rows_and_needs_two_classes(world):
    store, model = world
    x = store.read()
    labels = pd.Series(np.where(x[:, 1] > 0, "pos", "neg"), dtype=object)
    labels[::3] = None  # a third of the rows has no label
    result = evaluate_sae(model, store, EvalConfig(device="cpu", cknna_samples=0), labels=labels)
    probe = result["linear_probe"]
    assert probe["fit_rows"] + probe["scored_rows"] == int(labels.notna().sum())
    assert probe["classes"] == ["neg", "pos"]
    assert 0.5 < probe["agreement"] <= 1.0 and probe["kl"] >= 0.0
    # A probe fit once (as `compare` does) gives the same numbers.
    shared = fit_probe(store, labels, EvalConfig())
    again = evaluate_sae(model, store, EvalConfig(device="cpu", cknna_samples=0), probe=shared)
    numbers = {k for k, v in probe.items() if isinstance(v, float)}
    assert {k: again["linear_probe"][k] for k in numbers} == pytest.approx(
        {k: probe[k] for k in numbers}
    )
    assert {k: v for k, v in again["linear_probe"].items() if k not in numbers} == {
        k: v for k, v in probe.items() if k not in numbers
    }
    with pytest.raises(InputError, match="two classes"):
        evaluate_sae(model, store, EvalConfig(device="cpu"), labels=pd.Series(["a"] * store.count))


def test_dimension_mismatch_and_bad_settings_are_input_errors(world, tmp_path):
    _, model = world
    other = planted_store(tmp_path / "s16", rows=50, dim=16)
    with pytest.raises(InputError, match="dimension 16"):
        evaluate_sae(model, other, EvalConfig(device="cpu"))
    with pytest.raises(InputError, match="--topk"):
        EvalConfig(topk=0)
    with pytest.raises(InputError, match="--seed"):
        EvalConfig(seed=-1)  # numpy's generator would refuse it with a ValueError mid-run


def test_json_safe_replaces_non_finite_numbers():
    assert json_safe({"a": [1.0, float("nan")], "b": float("inf"), "c": "x"}) == {
        "a": [1.0, None],
        "b": None,
        "c": "x",
    }


def test_relu_code_scores_relu_pre_as_the_reference_evaluation_does(world):
    """A TopK SAE's progressive levels beyond k: its own code stops at k latents; the reference
    evaluation's ReLU(pre) keeps adding latents (equal up to k, different beyond)."""
    from audit.sae import SAEConfig, build_sae

    store, matryoshka = world
    topk = build_sae(SAEConfig(arch="topk", d_in=store.dim, n_latents=256, k=16))
    topk.load_state_dict(matryoshka.state_dict())
    topk.eval()
    cfg = {"device": "cpu", "cknna_samples": 0}
    own = evaluate_sae(topk, store, EvalConfig(**cfg))
    relu = evaluate_sae(topk, store, EvalConfig(**cfg, code="relu"))
    assert relu["inference"]["code"] == "relu(pre)" and own["l0"] == pytest.approx(16)
    by_k = {p["k"]: (p, q) for p, q in zip(own["progressive"], relu["progressive"], strict=True)}
    assert by_k[16][0]["fvu"] == pytest.approx(by_k[16][1]["fvu"], rel=1e-6)
    assert by_k[256][0]["fvu"] == pytest.approx(by_k[16][0]["fvu"], rel=1e-6)
    assert by_k[256][1]["l0"] > 16 and by_k[256][1]["fvu"] < by_k[16][1]["fvu"]
    # For a Matryoshka SAE the inference code is ReLU(pre): both evaluations agree.
    a = evaluate_sae(matryoshka, store, EvalConfig(**cfg))
    b = evaluate_sae(matryoshka, store, EvalConfig(**cfg, code="relu"))
    assert a["fvu"] == b["fvu"] and a["progressive"] == b["progressive"]
    with pytest.raises(InputError):
        EvalConfig(code="dense")
