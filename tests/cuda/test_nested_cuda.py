"""On CUDA, the nested loss and its gradients equal the float64 CPU reference, and BatchTopK
inference does not depend on the batch.

The reference is the per-level computation of tests/sae/test_nested.py
(:func:`audit.sae.nested.naive_nested_loss`) in float64 on the CPU, from the same float32
inputs. Which entries each level keeps is decided by the device's own float32 pre-activations:
the reference's pre-activations carry their values (straight through: the float64 graph takes
the gradient), so a near-tie that float32 and float64 round differently cannot swap an entry.

Tolerances, as ‖fast − reference‖ / ‖reference‖ (loss, and each parameter's gradient):

* fp32 matrix products (PyTorch's default): ``FP32_TOL`` = 1e-5 for the loss, 1e-4 for the
  gradients (measured error is float32 rounding, ~1e-6);
* TF32 tensor cores, which ``train_sae`` switches on for training: ``TF32_TOL`` = 5e-3 and
  2e-2 (TF32 keeps 10 mantissa bits: ~1e-3 per product).
"""

from __future__ import annotations

import pytest
import torch

from audit.sae import SAEConfig, build_sae, matryoshka_k_list
from audit.sae.nested import naive_nested_loss, nested_topk_loss
from audit.sae.nested_plan import plan_nested_step
from tests.cuda.device import CUDA, DEVICE, ON_CUDA, matmul_precision, relative_error
from tests.sae.test_nested import _problem

pytestmark = CUDA

FP32_TOL = {"loss": 1e-5, "grad": 1e-4}
TF32_TOL = {"loss": 5e-3, "grad": 2e-2}
SEEDS = range(5)  # the first seed whose level boundaries hold no exact float32 tie is used

# (batch, n, d, k_min, shift): every piece dense; the first segments sparse (the GPU plan's
# CSR blocks from the sorted top-k); few latents active (the plan stops at an early level).
PROBLEMS = [
    (64, 1024, 48, 8, 0.0),
    (64, 2048, 32, 2, 0.3),
    (48, 1024, 32, 2, 1.5),
]


def _boundary_tie(pre: torch.Tensor, k_list: tuple[int, ...]) -> bool:
    """Whether some row's k-th and (k+1)-th largest positive values are exactly equal (the fast
    path then keeps both, a plain top-k one of them)."""
    values = pre.sort(dim=1, descending=True).values
    for k in k_list:
        if k < pre.shape[1]:
            a, b = values[:, k - 1], values[:, k]
            if bool(((a == b) & (b > 0)).any()):
                return True
    return False


def _device_case(batch, n, d, k_min, shift, dtype=torch.float32):
    """Inputs on the device, and the device's pre-activations computed as the fast path does."""
    k_list = matryoshka_k_list(n, k_min)
    for seed in SEEDS:
        x, params = _problem(batch, n, d, shift, seed=seed, dtype=dtype)
        x, params = x.to(DEVICE), [p.to(DEVICE) for p in params]
        w_enc, b_enc, _, b_pre = params
        pre = torch.addmm(b_enc, x - b_pre, w_enc)
        if not _boundary_tie(pre, k_list):
            return x, params, pre, k_list
    raise AssertionError(f"every seed of {list(SEEDS)} has an exact tie at a level boundary")


def _reference(x, params, pre_device, k_list, weights, loss_kind):
    """float64 per-level loss and gradients on the CPU; entries chosen by ``pre_device``."""
    x64 = x.double().cpu()
    ref = [p.detach().double().cpu().requires_grad_(True) for p in params]
    w_enc, b_enc, w_dec, b_pre = ref
    pre64 = (x64 - b_pre) @ w_enc + b_enc
    pre = pre64 + (pre_device.double().cpu() - pre64).detach()
    loss, levels = naive_nested_loss(pre, x64, w_dec, b_pre, k_list, weights, loss_kind)
    loss.backward()
    return loss.detach(), levels, [p.grad for p in ref]


@pytest.mark.parametrize("tf32", [False, True], ids=["fp32", "tf32"])
@pytest.mark.parametrize("loss_kind", ["mse", "nmse"])
@pytest.mark.parametrize("weighting", ["rw", "uw"])
@pytest.mark.parametrize("problem", PROBLEMS, ids=["dense", "sparse-top", "few-active"])
def test_nested_loss_and_gradients_equal_the_fp64_reference(problem, weighting, loss_kind, tf32):
    tol = TF32_TOL if tf32 else FP32_TOL
    with matmul_precision(tf32):
        x, params, pre, k_list = _device_case(*problem)
        h = len(k_list)
        weights = [float(h - i) for i in range(h)] if weighting == "rw" else [1.0] * h
        fast = [p.clone().requires_grad_(True) for p in params]
        out = nested_topk_loss(x, *fast, k_list, weights, loss_kind, return_pre=False)
        out.loss.backward()
        step = plan_nested_step(pre, (pre > 0).to(pre.dtype), k_list)
    loss, levels, grads = _reference(x, params, pre, k_list, weights, loss_kind)
    if ON_CUDA and problem is PROBLEMS[1]:
        assert step.sparse_pieces, "this case should exercise the sparse (CSR) decode"
    assert out.loss.device.type == DEVICE.type
    assert relative_error(out.loss, loss) <= tol["loss"]
    assert relative_error(out.level_losses, levels) <= tol["loss"]
    names = ["W_enc", "b_enc", "W_dec", "b_pre"]
    errors = {
        name: relative_error(p.grad, g) for name, p, g in zip(names, fast, grads, strict=True)
    }
    assert max(errors.values()) <= tol["grad"], errors


@pytest.mark.skipif(not ON_CUDA, reason="CUDA autocast")
def test_bf16_autocast_runs_the_loss_in_fp32():
    """Under bf16 autocast (``train_sae`` on a GPU) the loss casts its inputs to float32 and runs
    without autocast: the same numbers bit for bit."""
    x, params, _, k_list = _device_case(*PROBLEMS[1])
    weights = [1.0] * len(k_list)
    plain = nested_topk_loss(x, *params, k_list, weights, return_pre=False)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        mixed = nested_topk_loss(x, *params, k_list, weights, return_pre=False)
    assert mixed.loss.dtype == torch.float32
    assert torch.equal(plain.loss, mixed.loss) and torch.equal(plain.x_hat, mixed.x_hat)


# -- BatchTopK ------------------------------------------------------------------------------

BATCHTOPK_TOL = 1e-5  # relative, fp32: the same row through differently shaped products


def _batchtopk(d: int = 64, n: int = 1024, threshold: float = 0.05):
    cfg = SAEConfig(arch="batchtopk", d_in=d, n_latents=n, k=16)
    model = build_sae(cfg)
    model.reset_parameters(torch.Generator().manual_seed(0))
    with torch.no_grad():
        model.threshold.fill_(threshold)  # as estimated during training
    return model.eval()


@torch.no_grad()
def test_batchtopk_inference_does_not_depend_on_the_batch():
    model = _batchtopk()
    x = torch.randn(300, model.d_in, generator=torch.Generator().manual_seed(1))
    with matmul_precision(False):
        on_device = model.to(DEVICE)
        xd = x.to(DEVICE)
        whole = on_device.encode(xd).cpu()
        # Alone, in odd-sized batches, and shuffled among other rows.
        alone = torch.cat([on_device.encode(xd[i : i + 1]) for i in range(len(x))]).cpu()
        odd = torch.cat([on_device.encode(part) for part in xd.split(7)]).cpu()
        order = torch.randperm(len(x), generator=torch.Generator().manual_seed(2))
        shuffled = torch.empty_like(whole)
        shuffled[order] = on_device.encode(xd[order]).cpu()
        pre = on_device.pre_activations(on_device.preprocess(xd)).cpu()
    reference = model.cpu().double().encode(x.double())  # float64 on the CPU
    theta = float(model.threshold)
    # An entry within float32 rounding of θ may fall on either side; none other may differ.
    settled = (pre - theta).abs() > BATCHTOPK_TOL * pre.abs().max()
    for code in (alone, odd, shuffled, reference.float()):
        assert torch.equal(code[settled] != 0, whole[settled] != 0)
        scale = whole.abs().max()
        assert float((code - whole)[settled].abs().max()) <= BATCHTOPK_TOL * float(scale)
    assert 0.01 < float((whole != 0).float().mean()) < 0.9  # the threshold does cut codes
