"""Data-parallel training (DDP over gloo, 2 CPU processes) equals single-process training.

The worker processes are started once (``torch.multiprocessing.spawn``) and run every
distributed case; the parent trains the single-process references and compares. The data are
chosen so every split is awkward: 991 rows in batches of 99 gives 50/49-row halves and a last
batch of one row, which leaves rank 1 with nothing (it runs a weight-0 placeholder).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from safetensors.torch import load_file, save_file

from audit.data.planted import planted_embeddings
from audit.sae import SAEConfig, load_sae, matryoshka_k_list
from audit.sae.train import TrainConfig, train_sae
from audit.store import open_store, write_store

WORLD = 2
ROWS, DIM, BATCH = 991, 16, 99  # 10 full batches (split 50/49) and a last batch of 1 row
TOLERANCE = 1e-5
STREAM = {"data_on_device": "no", "stream_chunk_rows": 128, "stream_buffer_chunks": 2}


def _sae_cfg(arch: str = "matryoshka") -> SAEConfig:
    if arch in ("topk", "batchtopk"):
        # k=2 of 48: many latents miss a whole batch, so dead-latent counters move.
        return SAEConfig(arch=arch, d_in=DIM, n_latents=48, k=2)
    return SAEConfig(arch="matryoshka", d_in=DIM, n_latents=48, k_list=matryoshka_k_list(48, 4))


def _train_cfg(**overrides) -> TrainConfig:
    return TrainConfig(
        epochs=2,
        batch_size=BATCH,
        lr=2e-3,
        seed=5,
        checkpoint_every=4,
        log_every=1,
        device="cpu",
        **{"dead_window": 300, **overrides},
    )


def _model_tensors(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}


def _worker(rank: int, world_size: int, root: str, store_path: str) -> None:
    torch.set_num_threads(1)  # two processes share the CI machine's cores
    dist.init_process_group(
        "gloo", init_method=f"file://{root}/rendezvous", rank=rank, world_size=world_size
    )
    try:
        store = open_store(store_path)
        out = Path(root)
        # In memory, uninterrupted.
        result = train_sae(store, _sae_cfg(), _train_cfg(data_on_device="yes"), out / "memory")
        save_file(_model_tensors(result.model), str(out / f"memory-rank{rank}.safetensors"))
        # Streamed through a small shuffle buffer, interrupted mid-epoch, then resumed.
        train_sae(store, _sae_cfg(), _train_cfg(**STREAM), out / "stream", stop_after=7)
        result = train_sae(store, _sae_cfg(), _train_cfg(**STREAM), out / "stream", resume=True)
        save_file(_model_tensors(result.model), str(out / f"stream-rank{rank}.safetensors"))
        # Interrupted with two processes; the parent resumes it with one (see below).
        train_sae(store, _sae_cfg(), _train_cfg(**STREAM), out / "cross", stop_after=9)
        # TopK, with latents that go dead: the fired masks must be combined across ranks.
        result = train_sae(
            store, _sae_cfg("topk"), _train_cfg(data_on_device="yes", dead_window=150), out / "topk"
        )
        save_file(_model_tensors(result.model), str(out / f"topk-rank{rank}.safetensors"))
        # BatchTopK: per-rank batch top-k, but weights and threshold must agree across ranks.
        result = train_sae(
            store, _sae_cfg("batchtopk"), _train_cfg(data_on_device="yes"), out / "btk"
        )
        save_file(_model_tensors(result.model), str(out / f"btk-rank{rank}.safetensors"))
        per_latent = replace(_sae_cfg("batchtopk"), threshold_kind="per_latent")
        result = train_sae(store, per_latent, _train_cfg(data_on_device="yes"), out / "btk-pl")
        save_file(_model_tensors(result.model), str(out / f"btk-pl-rank{rank}.safetensors"))
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def ddp_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp")
    data = planted_embeddings(n_samples=ROWS, dim=DIM, n_atoms=24, active=3, seed=1)
    store = write_store(root / "store", data.embeddings, shard_rows=300)
    mp.spawn(_worker, args=(WORLD, str(root), str(store.path)), nprocs=WORLD, join=True)
    return root, store


def _assert_models_close(actual: dict, expected: dict, atol: float = TOLERANCE) -> None:
    assert actual.keys() == expected.keys()
    for key in expected:
        torch.testing.assert_close(actual[key], expected[key], rtol=atol, atol=atol, msg=key)


@pytest.mark.parametrize(
    "name,arch,overrides",
    [
        ("memory", "matryoshka", {"data_on_device": "yes"}),
        ("stream", "matryoshka", STREAM),
        ("topk", "topk", {"data_on_device": "yes", "dead_window": 150}),
    ],
)
def test_ddp_equals_single_process(ddp_runs, tmp_path, name, arch, overrides):
    root, store = ddp_runs
    single = train_sae(store, _sae_cfg(arch), _train_cfg(**overrides), tmp_path / "single")
    expected = _model_tensors(single.model)
    ranks = [load_file(str(root / f"{name}-rank{r}.safetensors")) for r in range(WORLD)]
    # Every rank holds bit-identical weights (same averaged gradients, same optimizer steps).
    for other in ranks[1:]:
        _assert_models_close(other, ranks[0], atol=0.0)
    # The model written once (by rank 0) equals the single-process one to float tolerance.
    _assert_models_close(ranks[0], expected)
    written = load_sae(root / name)
    _assert_models_close(_model_tensors(written), expected)
    # History: same steps and sample counts, the same dead-latent counts (fired masks are
    # all-reduced) and the same global-batch losses.
    ddp_log = json.loads((root / name / "training.json").read_text())
    single_log = json.loads((tmp_path / "single" / "training.json").read_text())
    assert ddp_log["world_size"] == WORLD and ddp_log["steps"] == single_log["steps"] == 22
    assert len(ddp_log["history"]) == 22
    assert ddp_log["samples"] == single_log["samples"] == 2 * ROWS
    assert ddp_log["dead_latents"] == single_log["dead_latents"]
    assert [h["dead"] for h in ddp_log["history"]] == [h["dead"] for h in single_log["history"]]
    if arch == "topk":
        assert any(h["dead"] > 0 for h in single_log["history"])  # the comparison has teeth
    np.testing.assert_allclose(
        [h["loss"] for h in ddp_log["history"]],
        [h["loss"] for h in single_log["history"]],
        rtol=1e-5,
    )
    # No checkpoint or temporary file is left behind by either writer.
    assert sorted(p.name for p in (root / name).iterdir()) == [
        "config.json",
        "sae.safetensors",
        "training.json",
    ]


def test_a_distributed_checkpoint_resumes_in_a_single_process(ddp_runs, tmp_path):
    root, store = ddp_runs
    assert (root / "cross" / "checkpoint.safetensors").exists()
    assert not (root / "cross" / "sae.safetensors").exists()
    resumed = train_sae(store, _sae_cfg(), _train_cfg(**STREAM), root / "cross", resume=True)
    single = train_sae(store, _sae_cfg(), _train_cfg(**STREAM), tmp_path / "single")
    assert resumed.state.step == single.state.step == 22
    _assert_models_close(_model_tensors(resumed.model), _model_tensors(single.model))


def test_ddp_batchtopk_keeps_ranks_identical(ddp_runs):
    root, _ = ddp_runs
    ranks = [load_file(str(root / f"btk-rank{r}.safetensors")) for r in range(WORLD)]
    _assert_models_close(ranks[1], ranks[0], atol=0.0)
    assert float(ranks[0]["threshold"]) > 0  # estimated from both ranks' kept activations
    per_latent = [load_file(str(root / f"btk-pl-rank{r}.safetensors")) for r in range(WORLD)]
    _assert_models_close(per_latent[1], per_latent[0], atol=0.0)
    assert per_latent[0]["threshold"].shape == (48,)
    assert (per_latent[0]["threshold"] > 0).sum() > 24  # most latents were kept at some step


def test_torchrun_cli_trains_once_and_matches_single_process(cli, tmp_path):
    """``torchrun --nproc-per-node 2 -m audit train`` (launched as ``python -m torch.distributed.run``)."""
    data = planted_embeddings(n_samples=500, dim=DIM, n_atoms=24, active=3, seed=2)
    store = write_store(tmp_path / "store", data.embeddings)
    args = [
        "train",
        "--embeddings",
        str(store.path),
        "--n-latents",
        "32",
        "--k-min",
        "4",
        "--epochs",
        "1",
        "--batch-size",
        "125",
        "--lr",
        "1e-3",
        "--device",
        "cpu",
        "--quiet",
    ]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    env.pop("MSAE_AUDIT_DEBUG", None)
    launched = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc-per-node",
            "2",
            "-m",
            "audit",
            *args,
            "--out",
            str(tmp_path / "ddp"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert launched.returncode == 0, launched.stderr[-3000:]
    assert launched.stdout.count("Training summary") == 1  # rank 0 alone reports
    assert "processes" in launched.stdout and " 2 " in launched.stdout
    single = cli(*args, "--out", tmp_path / "single")
    assert single.exit_code == 0, single.stderr
    _assert_models_close(
        _model_tensors(load_sae(tmp_path / "ddp")), _model_tensors(load_sae(tmp_path / "single"))
    )
