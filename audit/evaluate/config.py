"""Settings of an SAE evaluation (one frozen dataclass) and the eval JSON's schema name."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass

from audit.errors import InputError, check_seed
from audit.metrics import (
    CKNNA_K,
)

EVAL_SCHEMA = "msae-audit/eval"
EVAL_VERSION = 1
#: A CSR decode costs about this many dense multiply-adds per stored entry on a CPU; segments
#: denser than 1/SPARSE_COST_FACTOR are decoded densely (see audit/sae/nested.py).
SPARSE_COST_FACTOR = 10.0
#: Automatic chunking aims at [rows, n] code matrices of about this many entries (64 MiB fp32).
CHUNK_ELEMENTS = 1 << 24

warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta state")

ProgressCallback = Callable[[int, int], None]
EVAL_CODES = ("inference", "relu")


@dataclass(frozen=True)
class EvalConfig:
    """Settings of one evaluation (all recorded in the JSON)."""

    topk: int | None = None  # evaluate the code limited to its top-k (None: the plain code)
    # "inference": each architecture's inference code (TopK: its top-k code, so progressive
    # levels beyond k repeat k); "relu": ReLU(pre) for every architecture, what the reference
    # evaluation scores (for TopK beyond k it adds latents the model never used together).
    code: str = "inference"
    chunk_rows: int | None = None  # rows per chunk; None: about CHUNK_ELEMENTS / n
    device: str = "auto"
    progressive: bool = True
    cknna_samples: int = 4096  # rows in the seeded CKNNA subsample
    cknna_k: int = CKNNA_K
    seed: int = 0  # for the CKNNA subsample and the probe's fit/score split
    probe_fit_rows: int = 20_000  # at most this many labelled rows (and at most half) fit the probe
    probe_c: float = 1.0  # inverse L2 strength of the logistic probe (scikit-learn's C)

    def __post_init__(self) -> None:
        if self.topk is not None and self.topk < 1:
            raise InputError(f"--topk must be a positive integer, got {self.topk}")
        if self.chunk_rows is not None and self.chunk_rows < 1:
            raise InputError(f"--chunk-rows must be a positive integer, got {self.chunk_rows}")
        if self.cknna_samples < 0:
            raise InputError(f"--cknna-samples must be non-negative, got {self.cknna_samples}")
        if self.cknna_k < 2:
            raise InputError(f"CKNNA needs k >= 2, got {self.cknna_k}")
        if self.probe_fit_rows < 2:
            raise InputError(f"probe_fit_rows must be at least 2, got {self.probe_fit_rows}")
        if not (self.probe_c > 0 and math.isfinite(self.probe_c)):
            raise InputError(f"--probe-c must be a positive number, got {self.probe_c}")
        if self.code not in EVAL_CODES:
            raise InputError(f"code must be one of {', '.join(EVAL_CODES)}, got {self.code!r}")
        check_seed(self.seed)  # the library's callers too, not only --seed

    def rows_per_chunk(self, n_latents: int) -> int:
        if self.chunk_rows is not None:
            return self.chunk_rows
        return int(min(1 << 16, max(256, CHUNK_ELEMENTS // max(1, n_latents))))
