"""Chunked SAE evaluation: every metric of :mod:`audit.metrics` over an embedding store.

One pass over the store in row chunks computes, for the inference code ``z = encode(x)`` (or its
top-``K`` with ``topk``) and for each progressive level ``k = 16, 32, …, n`` (``z`` limited to its
``k`` largest entries), the running sums behind L0, both FVUs and the cosine, plus latent firing
counts and the linear-probe comparison. Memory is bounded by the chunk (``[chunk_rows, n]``), not
by the store: a million rows never become a million-row matrix. CKNNA runs on a seeded
subsample (default 4096 rows, as the paper's batch-wise estimate does on batches), decoder
orthogonality on the ``[d, d]`` Gram matrix of the decoder.

Progressive levels share their top entries, so instead of one full decode per level the chunk is
decoded once (``F = z W_dec``) and each level is written as a sum of rank segments: small levels
as heads ``Σ_{s ≤ i} C_s``, large ones as tails ``F − Σ_{s > i} C_s``; the widest segment is never
decoded and narrow segments are decoded as sparse CSR products (:func:`nested_topk_decodes

Modules: ``config`` (settings), ``run`` (the pass), ``progressive`` (the level decodes),
``probe`` (LP-KL, LP-agreement), ``document`` (the eval JSON).
"""

from audit.evaluate.config import EVAL_SCHEMA, EVAL_VERSION, EvalConfig
from audit.evaluate.document import json_safe
from audit.evaluate.probe import LinearProbe, fit_probe
from audit.evaluate.progressive import nested_topk_decodes
from audit.evaluate.run import evaluate_sae, evaluated_code, inference_description

__all__ = [
    "EVAL_SCHEMA",
    "EVAL_VERSION",
    "EvalConfig",
    "LinearProbe",
    "evaluate_sae",
    "evaluated_code",
    "fit_probe",
    "inference_description",
    "json_safe",
    "nested_topk_decodes",
]
