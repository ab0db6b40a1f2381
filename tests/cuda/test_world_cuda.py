"""train, eval, audit and search on CUDA give the CPU's results, in the offline world.

The world is the demo's (:func:`audit.demo.run_demo`, smaller), built once on the CPU: a corpus
of rendered scenes embedded by the tiny CLIP, a Matryoshka SAE trained on it, a concept bank,
a linear probe with a planted shortcut ("red") and its audit. Each test then runs one command's
library call on CUDA and compares with the CPU run.

Tolerances:

* eval, audit and search run with fp32 matrix products (as the CLI does: only training
  switches TF32 on). Continuous metrics agree to ``FP32_REL`` = 1e-4 relative (float32
  rounding in a different order); counts of active latents to ``L0_ABS`` = 0.01 per row
  (an entry within rounding of 0 may flip); an audit's accuracies to two predictions of the
  test split (a margin within rounding of 0 may flip); neighbour similarities to 1e-5.
* training runs the same seed, initial weights and batches, on TF32 tensor cores: the first
  logged loss (step 10) agrees to ``TRAIN_FIRST_REL`` = 2 %, the final FVU to
  ``TRAIN_FVU_REL`` = 20 % (top-k choices near a threshold differ as the runs drift apart, so
  the end is compared as a quality figure, not value by value; on the CPU, seeds 0–2 give
  final FVUs within ±5 % of each other, 0.0071–0.0077, and first losses within ±6 %).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from audit.demo import PLANTED_CONCEPT, DemoSettings, _audit_step, run_demo, train_demo_sae
from tests.cuda.device import CUDA, DEVICE, matmul_precision

pytestmark = [*CUDA, pytest.mark.slow]

FP32_REL = 1e-4
L0_ABS = 0.01
SIMILARITY_ABS = 1e-5
TRAIN_FIRST_REL = 0.02
TRAIN_FVU_REL = 0.2
SETTINGS = DemoSettings(n_corpus=4000, n_train=1500, n_test=1000, sae_epochs=10)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """The demo on the CPU: its context holds every path, the SAE summary and the audit."""
    return run_demo(tmp_path_factory.mktemp("world") / "cpu", SETTINGS, device="cpu")


def _history(sae_dir: Path) -> list[dict]:
    return json.loads((sae_dir / "training.json").read_text())["history"]


def test_training_on_cuda_matches_the_cpu(world, tmp_path):
    cuda = train_demo_sae(world.corpus_store, tmp_path / "sae", SETTINGS, device=str(DEVICE))
    cpu = world.summary["sae"]
    assert cuda["steps"] == cpu["steps"]
    first_cpu, first_cuda = _history(world.sae)[0], _history(tmp_path / "sae")[0]
    assert first_cuda["step"] == first_cpu["step"]
    assert first_cuda["loss"] == pytest.approx(first_cpu["loss"], rel=TRAIN_FIRST_REL)
    assert cuda["fvu"] == pytest.approx(cpu["fvu"], rel=TRAIN_FVU_REL), (cuda, cpu)


def test_eval_on_cuda_matches_the_cpu(world):
    from audit.evaluate import EvalConfig, evaluate_sae
    from audit.sae import load_sae
    from audit.store import open_store

    store = open_store(world.corpus_store)
    with matmul_precision(False):
        cpu = evaluate_sae(load_sae(world.sae), store, EvalConfig(device="cpu"))
        cuda = evaluate_sae(load_sae(world.sae), store, EvalConfig(device=str(DEVICE)))
    assert cuda["timing"]["device"].startswith(DEVICE.type)
    for key in ("fvu", "fvu_per_sample", "cosine", "cknna", "decoder_orthogonality"):
        assert cuda[key] == pytest.approx(cpu[key], rel=FP32_REL, abs=1e-9), key
    assert abs(cuda["l0"] - cpu["l0"]) <= L0_ABS
    assert abs(cuda["dead_latents"] - cpu["dead_latents"]) <= 1
    assert [p["k"] for p in cuda["progressive"]] == [p["k"] for p in cpu["progressive"]]
    for a, b in zip(cuda["progressive"], cpu["progressive"], strict=True):
        assert a["fvu"] == pytest.approx(b["fvu"], rel=FP32_REL, abs=1e-9), a["k"]


def test_audit_on_cuda_matches_the_cpu(world, tmp_path):
    from audit.typedjson import to_plain

    cpu = to_plain(world.audit_result)
    ctx = dataclasses.replace(world, device=str(DEVICE), out=tmp_path)
    with matmul_precision(False):
        summary = _audit_step(ctx)
    cuda = to_plain(ctx.audit_result)
    # Two test-split predictions either way.
    slack = 2.0 / SETTINGS.n_test * 4  # accuracies are per cell; the smallest holds ~n/4
    assert cuda["verdict"] == cpu["verdict"]
    assert abs(cuda["worst_group_accuracy"] - cpu["worst_group_accuracy"]) <= slack
    assert summary["top_concept"] == cpu["concepts"][0]["name"]
    planted_cpu = [c for c in cpu["concepts"] if c["name"] == PLANTED_CONCEPT]
    assert summary["planted_concept_flagged"] == bool(planted_cpu and planted_cpu[0]["flagged"])
    by_latent = {c["latent"]: c for c in cpu["concepts"]}
    assert {c["latent"] for c in cuda["concepts"]} == set(by_latent)
    for c in cuda["concepts"]:
        assert abs(c["delta_wga"] - by_latent[c["latent"]]["delta_wga"]) <= slack, c["name"]


def test_search_on_cuda_matches_the_cpu(world):
    import torch

    from audit.concepts import load_bank
    from audit.sae import load_sae
    from audit.search import run_search
    from audit.store import open_store

    store = open_store(world.store)
    bank = load_bank(world.bank)
    query = torch.from_numpy(store.take([0]))
    edits = [f"{PLANTED_CONCEPT}=4"]
    with matmul_precision(False):
        results = {
            device: run_search(
                load_sae(world.sae, device=device), store, bank, query, edits, [], exclude_row=0
            )
            for device in ("cpu", str(DEVICE))
        }
    cpu, cuda = results["cpu"], results[str(DEVICE)]
    assert cuda["edits"][0]["latents"] == cpu["edits"][0]["latents"]
    assert cuda["cosine_query_to_edited"] == pytest.approx(cpu["cosine_query_to_edited"], abs=1e-5)
    for when in ("before", "after"):
        sims_cpu = [item["similarity"] for item in cpu[when]]
        sims_cuda = [item["similarity"] for item in cuda[when]]
        assert sims_cuda == pytest.approx(sims_cpu, abs=SIMILARITY_ABS), when
        # The same neighbours, except where two similarities are within rounding of each other.
        rows_cpu = {item["row"]: item["similarity"] for item in cpu[when]}
        for item in cuda[when]:
            if item["row"] not in rows_cpu:
                assert item["similarity"] <= min(sims_cpu) + SIMILARITY_ABS, when
