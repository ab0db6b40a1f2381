"""Encoding a subset of latents (the audit's column encoder) equals the full encode."""

from __future__ import annotations

import pytest
import torch

from tests.fairness.test_reliance import random_sae


@pytest.mark.parametrize("arch", ["relu", "matryoshka", "topk", "batchtopk"])
def test_column_encoder_matches_full_encode(arch):
    sae = random_sae(arch, dtype=torch.float32)
    x = torch.randn(30, sae.d_in)
    cols = torch.tensor([0, 5, 17, 39])
    with torch.no_grad():
        full = sae.encode(x)
        assert torch.allclose(sae.column_encoder(cols)(x), full[:, cols], atol=1e-6)
        assert torch.allclose(sae.column_encoder()(x), full, atol=1e-6)
        assert sae.column_encoder(torch.tensor([], dtype=torch.long))(x).shape == (30, 0)
