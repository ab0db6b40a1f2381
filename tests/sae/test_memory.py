"""The analytic peak memory of a training step equals what the step's tensors take.

On a CPU, the step is made to run the GPU's code path (one chunk, the GPU's decode plan) and
every tensor it allocates is counted (tests/memory_tracking.py). The estimate replays the same
allocations from shapes and the plan, so the two agree to within the vectors it leaves out;
tests/cuda/ compares it with the GPU allocator's peak.
"""

from __future__ import annotations

import pytest
import torch

import audit.sae.nested as nested
import audit.sae.nested_plan as nested_plan
from audit.sae import SAEConfig, build_sae, matryoshka_k_list
from audit.sae.memory import Ledger, step_peak_bytes
from tests.memory_tracking import LiveTensorBytes


def gpu_step_setup(n: int, d: int, k_min: int, bias: float, seed: int = 0):
    """A Matryoshka SAE (RW) whose encoder bias sets how many latents fire, and AdamW after one
    step (its moments exist, as in any step but the first)."""
    cfg = SAEConfig(
        arch="matryoshka", d_in=d, n_latents=n, k_list=matryoshka_k_list(n, k_min), weighting="rw"
    )
    model = build_sae(cfg)
    model.reset_parameters(torch.Generator().manual_seed(seed))
    with torch.no_grad():
        model.b_enc.fill_(bias)
    return model


def training_step(model, optimizer, x: torch.Tensor) -> None:
    """The step of ``train_sae``: gradients released first, then forward, backward, decoder
    projection, clipping, AdamW, renormalisation."""
    optimizer.zero_grad(set_to_none=True)
    out = model.training_loss(x)
    out.loss.backward()
    model.project_decoder_grad()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    model.normalize_decoder()


def plan_of(model, x: torch.Tensor):
    with torch.no_grad():
        pre = model.pre_activations(x)
        return nested_plan.plan_nested_step(pre, (pre > 0).to(pre.dtype), model.k_list)


@pytest.mark.parametrize(
    ("n", "d", "k_min", "bias"),
    [
        (2048, 64, 16, 0.0),  # about half the latents on: every piece dense
        (2048, 64, 16, -0.1),
        (4096, 64, 8, 0.0),  # the first segments sparse, from the sorted top-k
        (4096, 64, 8, -0.15),
        (8192, 48, 4, -0.05),
        (4096, 64, 4, -0.3),  # few active: the plan stops early
    ],
)
def test_estimate_equals_the_tensors_a_gpu_step_allocates(n, d, k_min, bias, monkeypatch):
    monkeypatch.setattr(
        nested_plan, "plan_costs", lambda device: (nested_plan.CUDA_SPARSE_COST_FACTOR, False)
    )
    monkeypatch.setattr(nested, "CHUNK_ELEMENTS", 1 << 40)  # one chunk, as on a GPU
    torch.manual_seed(0)
    batch = 256
    model = gpu_step_setup(n, d, k_min, bias)
    # foreach=True: the multi-tensor AdamW a GPU uses by default (one temporary for all).
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, foreach=True)
    x = torch.randn(batch, d)
    training_step(model, optimizer, x)
    optimizer.zero_grad(set_to_none=True)
    step = plan_of(model, x)
    estimate = step_peak_bytes(step, batch, n, d)
    with LiveTensorBytes() as tracked:
        training_step(model, optimizer, x)
    # Only vectors of length B, n or d are left out of the estimate.
    assert tracked.peak == pytest.approx(estimate, rel=0.01), (tracked.peak, estimate, step)
    assert tracked.peak > 3 * batch * n * 4  # the [B, n] matrices dominate: the test has teeth


def test_estimate_refuses_plans_with_listed_entries():
    x = torch.randn(64, 16)
    step = plan_of(gpu_step_setup(256, 16, 4, 0.0), x)
    listed = nested_plan.Piece("prefix", step.last, step.last, step.last + 1, 1, 100, False)
    with pytest.raises(ValueError, match="GPU plan"):
        step_peak_bytes(step._replace(sparse_pieces=[listed], top=-1), 64, 256, 16)


def test_ledger_tracks_the_peak():
    ledger = Ledger()
    ledger.alloc("a", 10)
    ledger.alloc("b", 5)
    ledger.free("a")
    ledger.alloc("c", 7)
    assert (ledger.live, ledger.peak) == (12, 15)
    with pytest.raises(ValueError):
        ledger.alloc("b", 1)
