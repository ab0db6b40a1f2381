"""SAE evaluation metrics, as defined in Zaigrajew, Baniecki, Biecek, *Interpreting CLIP
with Hierarchical Sparse Autoencoders* (ICML 2025, arXiv 2502.20578, §5 and App. C).

Notation: ``x_i ∈ R^d`` an embedding (raw space, as the user stored it), ``x̂_i`` its SAE
reconstruction in raw space, ``z_i ∈ R^n`` the SAE code, ``N`` rows, ``x̄ = (1/N) Σ_i x_i``.

==========================  ===================================================================
metric                      formula
==========================  ===================================================================
L0                          ``(1/N) Σ_i #{j : z_ij ≠ 0}``
fraction of zeros           ``1 − L0 / n`` (the paper's "L0" column; higher = sparser)
FVU (dataset-level)         ``Σ_i ‖x_i − x̂_i‖² / Σ_i ‖x_i − x̄‖²``
FVU (per-sample, paper)     ``(1/N) Σ_i Var_j(x_ij − x̂_ij) / Var_j(x_ij)``, variances over the
                            ``d`` coordinates of one vector
cosine (CS)                 ``(1/N) Σ_i ⟨x_i, x̂_i⟩ / (‖x_i‖ ‖x̂_i‖)``
CKNNA                       mutual-k-NN centred kernel alignment of ``x`` and ``z`` (see
                            :func:`cknna`)
decoder orthogonality (DO)  ``(1/(n(n−1))) Σ_{i≠j} cos²(W_dec[i], W_dec[j])``
dead latents (NDN)          ``#{j : z_ij = 0 for every evaluated row i}``
LP-KL                       ``(1/N) Σ_i KL(p(x_i) ‖ p(x̂_i))`` for a linear probe's softmax ``p``
LP-agreement                ``(1/N) Σ_i 1[argmax p(x_i) = argmax p(x̂_i)]``
==========================  ===================================================================

**Why two FVUs.** The dataset-level FVU is the textbook one (``1 − R²``): the error energy over
the spread of the data *around the data mean*. The paper's per-sample variant divides each
vector's error variance by the variance of *that vector's own coordinates*, then averages. For
large ``d`` a vector's coordinate mean is near 0, so ``Var_j(x_ij) ≈ ‖x_i‖²/d`` and the
per-sample FVU measures the error relative to ``‖x‖²`` instead of ``‖x − x̄‖²``: it is smaller by
about the factor ``1 − ‖x̄‖² / mean_i ‖x_i‖²``. CLIP embeddings share a large common component
(their mean is far from 0), so the two differ substantially on them. Neither is wrong; they answer
different questions. The paper's numbers (e.g. FVU .002 for MSAE-UW) use the per-sample variant,
so compare like with like.

Every function accepts NumPy arrays, nested lists or torch tensors and computes in float64 unless
said otherwise. Arrays are row-major: one sample per row. One module per kind of metric:
``sparsity``, ``reconstruction``, ``geometry`` (DO, CKNNA), ``probe`` (LP-KL, LP-agreement), and
``accumulators`` for the chunked evaluation.
"""

from audit.metrics.accumulators import ReconstructionAccumulator, SpreadAccumulator
from audit.metrics.geometry import CKNNA_K, cknna, decoder_orthogonality, knn_graph
from audit.metrics.probe import lp_agreement, lp_kl, probe_agreement, probe_kl
from audit.metrics.reconstruction import (
    fvu,
    fvu_per_sample,
    mean_cosine,
    per_sample_fvu,
    row_cosine,
)
from audit.metrics.sparsity import PROGRESSIVE_START, dead_latents, frac_zeros, l0, progressive_ks

__all__ = [
    "CKNNA_K",
    "PROGRESSIVE_START",
    "ReconstructionAccumulator",
    "SpreadAccumulator",
    "cknna",
    "dead_latents",
    "decoder_orthogonality",
    "frac_zeros",
    "fvu",
    "fvu_per_sample",
    "knn_graph",
    "l0",
    "lp_agreement",
    "lp_kl",
    "mean_cosine",
    "per_sample_fvu",
    "probe_agreement",
    "probe_kl",
    "progressive_ks",
    "row_cosine",
]
