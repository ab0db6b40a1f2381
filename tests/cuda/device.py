"""Which device the CUDA tests run on, and the marks that skip them where there is none.

``pytest -m cuda`` selects them; without a CUDA device they are skipped, never failed. Setting
``MSAE_CUDA_TESTS_DEVICE=cpu`` runs the ones that need no CUDA runtime API on the CPU instead
(both sides of each comparison then run there): a check of the tests themselves on a machine
without a GPU.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import pytest
import torch

DEVICE = torch.device(os.environ.get("MSAE_CUDA_TESTS_DEVICE", "cuda"))
ON_CUDA = DEVICE.type == "cuda"
AVAILABLE = torch.cuda.is_available() if ON_CUDA else True

#: Every module of tests/cuda/ starts with ``pytestmark = CUDA``.
CUDA = [pytest.mark.cuda, pytest.mark.skipif(not AVAILABLE, reason="needs a CUDA device")]
#: For tests that use CUDA runtime APIs (sync debugging, the allocator's statistics).
CUDA_RUNTIME = pytest.mark.skipif(
    not (ON_CUDA and torch.cuda.is_available()), reason="uses CUDA runtime APIs"
)


@contextlib.contextmanager
def matmul_precision(tf32: bool) -> Iterator[None]:
    """fp32 matrix products exact (``tf32=False``, PyTorch's default) or on TF32 tensor cores
    (what ``train_sae`` switches on for training); restored afterwards."""
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = tf32
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


def relative_error(got: torch.Tensor, want: torch.Tensor) -> float:
    """‖got − want‖ / ‖want‖ in float64 on the CPU (NaN never passes)."""
    got, want = got.detach().double().cpu(), want.detach().double().cpu()
    err = float((got - want).norm() / want.norm().clamp_min(1e-300))
    return err if err == err else float("inf")
