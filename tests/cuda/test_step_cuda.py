"""A training step on CUDA: what it copies between host and device, and its peak memory.

* Transfers: between two steps of ``train_sae`` (data held on the GPU), the host reads the
  device once per step, for the decode plan's statistics (``plan_nested_step``: the largest
  active count and each level's number of entries, one small tensor), and copies nothing to it.
  Checked twice: by ``torch.cuda.set_sync_debug_mode`` (which names the Python line of every
  synchronising call) and by the profiler's record of device memcpy activity.
* Memory: the allocator's peak during one step, above what was allocated when it began, is
  within 10 % of :func:`audit.sae.memory.step_peak_bytes` at the paper's size (d = 768,
  expansion 32, k levels 64 … 24 576, batch 4096), at initialisation and at trained-like
  sparsity. (tests/sae/test_memory.py checks the estimate against every tensor on a CPU.)
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from audit.sae import SAEConfig, matryoshka_k_list
from audit.sae.memory import step_peak_bytes
from audit.sae.train import TrainConfig, train_sae
from audit.store import write_store
from tests.cuda.device import CUDA, CUDA_RUNTIME
from tests.sae.test_memory import gpu_step_setup, plan_of, training_step

pytestmark = [*CUDA, CUDA_RUNTIME]

SYNC_WARNING = "called a synchronizing CUDA operation"
WATCHED_STEPS = (3, 6)  # from the end of step 3 to the end of step 6: three whole steps


def _store(tmp_path, rows: int = 8192, d: int = 128):
    rng = np.random.default_rng(0)
    return write_store(tmp_path / "store", rng.normal(size=(rows, d)).astype(np.float32))


def _watch_steps(watch):  # type: ignore[no-untyped-def]
    """An ``on_step`` callback that runs ``watch("start")`` after step WATCHED_STEPS[0] and
    ``watch("stop")`` after step WATCHED_STEPS[1]."""

    def on_step(state, metrics):  # type: ignore[no-untyped-def]
        if state.step == WATCHED_STEPS[0]:
            torch.cuda.synchronize()
            watch("start")
        elif state.step == WATCHED_STEPS[1]:
            watch("stop")

    return on_step


def _config(store, n: int = 8192) -> tuple[SAEConfig, TrainConfig]:
    # k_min 8 of n = 8192: the GPU plan decodes the first segments sparsely (CSR), so the
    # sparse path is watched too.
    sae = SAEConfig(
        arch="matryoshka",
        d_in=store.dim,
        n_latents=n,
        k_list=matryoshka_k_list(n, 8),
        weighting="rw",
    )
    train = TrainConfig(
        epochs=1, batch_size=1024, device="cuda", log_every=1000, checkpoint_every=0, lr=1e-3
    )
    return sae, train


def test_a_training_step_reads_the_device_once_and_never_waits_otherwise(tmp_path):
    store = _store(tmp_path)
    sae_cfg, train_cfg = _config(store)
    steps = WATCHED_STEPS[1] - WATCHED_STEPS[0]

    def watch(event: str) -> None:
        torch.cuda.set_sync_debug_mode("warn" if event == "start" else 0)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = train_sae(store, sae_cfg, train_cfg, tmp_path / "sae", on_step=_watch_steps(watch))
    torch.cuda.set_sync_debug_mode(0)
    syncs = [w for w in caught if SYNC_WARNING in str(w.message)]
    places = [f"{w.filename}:{w.lineno}" for w in syncs]
    assert result.summary["device"].startswith("cuda") and result.summary["data_on_device"]
    assert len(syncs) == steps, places
    assert all(w.filename.endswith("nested_plan.py") for w in syncs), places
    assert len(set(places)) == 1, places  # the one read of the plan's statistics


def test_a_training_step_copies_nothing_to_the_device(tmp_path):
    from torch.profiler import ProfilerActivity, profile

    store = _store(tmp_path)
    sae_cfg, train_cfg = _config(store)
    steps = WATCHED_STEPS[1] - WATCHED_STEPS[0]
    prof = profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA])

    def watch(event: str) -> None:
        if event == "start":
            prof.start()
        else:
            torch.cuda.synchronize()
            prof.stop()

    train_sae(store, sae_cfg, train_cfg, tmp_path / "sae", on_step=_watch_steps(watch))
    names = [e.name for e in prof.events()]
    to_device = [n for n in names if "Memcpy HtoD" in n]
    to_host = [n for n in names if "Memcpy DtoH" in n]
    assert not to_device, to_device
    assert len(to_host) == steps, to_host  # the plan's statistics, once a step


# -- peak memory ----------------------------------------------------------------------------

MEMORY_TOL = 0.10
PAPER = {"n": 768 * 32, "d": 768, "k_min": 64, "batch": 4096}


# Encoder biases that leave about 20 % and 4 % of the latents positive: at initialisation
# pre-activations are about N(0, 0.1²) (W_enc = 0.1·W_decᵀ, unit rows, E‖x̃‖² = d), so −0.1·z.
TRAINED_LIKE = {"init": 0.0, "20%": -0.1 * 0.8416, "4%": -0.1 * 1.7507}


@pytest.mark.parametrize("bias", list(TRAINED_LIKE.values()), ids=list(TRAINED_LIKE))
def test_peak_memory_of_a_training_step_matches_the_estimate(bias):
    torch.manual_seed(0)
    n, d, batch = PAPER["n"], PAPER["d"], PAPER["batch"]
    model = gpu_step_setup(n, d, PAPER["k_min"], bias).cuda()
    x = torch.randn(batch, d, device="cuda")
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-6)  # tiny steps: the plan holds
    training_step(model, optimizer, x)  # AdamW's moments, cuBLAS/cuSPARSE handles, workspaces
    optimizer.zero_grad(set_to_none=True)
    step = plan_of(model, x)
    estimate = step_peak_bytes(step, batch, n, d)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    training_step(model, optimizer, x)
    torch.cuda.synchronize()
    measured = torch.cuda.max_memory_allocated() - before
    detail = {
        "measured_MiB": measured / 2**20,
        "estimate_MiB": estimate / 2**20,
        "active_mean": float(step.active.float().mean()),
        "dense_pieces": sum(p.dense for p in step.plan.pieces),
        "sparse_pieces": len(step.sparse_pieces),
    }
    assert abs(measured - estimate) <= MEMORY_TOL * estimate, detail
