"""Training settings (:class:`TrainConfig`), the run's state and result, the LR schedule."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from audit.errors import InputError, check_seed
from audit.sae.base import SCALE_RULES, SparseAutoencoder
from audit.sae.data import (
    DEFAULT_CHUNK_ROWS,
    SHUFFLE_MODES,
)
from audit.sae.init import B_PRE_INITS

#: One learning rate for every architecture, chosen on benchmarks/recovery.py (docs/recovery.md).
#: The reference code's values (Matryoshka 1e-4, TopK/BatchTopK 5e-4, ReLU 5e-5) go with its
#: input scale; under ours (E‖x̃‖² = d) they leave b_pre and b_enc far from their targets after
#: thousands of steps (docs/reference-differences.md). ``REFERENCE_LR`` keeps them.
DEFAULT_LR = {"matryoshka": 3e-3, "topk": 3e-3, "batchtopk": 3e-3, "relu": 3e-3}
REFERENCE_LR = {"matryoshka": 1e-4, "topk": 5e-4, "batchtopk": 5e-4, "relu": 5e-5}
#: ``after_step``: renormalise decoder rows after the optimizer step (they are exactly unit-norm
#: at every forward pass); ``before_clip``: the reference code's order — right after backward,
#: rescale rows to unit norm and the encoder columns and ``b_enc`` inversely (the function is
#: unchanged), then project, clip and step (rows drift slightly off the sphere between steps).
RENORM_ORDERS = ("after_step", "before_clip")


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 10
    batch_size: int = 4096
    lr: float | None = None  # None: DEFAULT_LR of the architecture
    max_steps: int | None = None
    seed: int = 0
    decay_fraction: float = 0.2
    grad_clip: float = 1.0
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 6.25e-10
    weight_decay: float = 0.0
    dead_window: int = 1_000_000  # a latent is dead after this many samples without firing
    checkpoint_every: int = 500  # steps; 0 = only at the end of each epoch
    device: str = "auto"
    data_on_device: str = "auto"  # "auto" | "yes" | "no" (stream from the memory map)
    stream_chunk_rows: int = DEFAULT_CHUNK_ROWS
    stream_buffer_chunks: int = 4
    stream_shuffle: str = "buffer"  # "buffer" (bounded window) | "global" (= in-memory order)
    log_every: int = 10
    warmup_steps: int = 0  # linear learning-rate warm-up from 0
    enc_init_scale: float = 0.01  # W_enc = enc_init_scale · W_decᵀ at initialisation
    b_pre_init: str = "geometric_median"  # or "zero" (the data mean when mean-centring)
    decoder_renorm: str = "after_step"  # see RENORM_ORDERS
    scale_rule: str = "unit"  # input scale: "unit" (E‖x̃‖² = d) | "reference" (√d / E‖x − μ‖²)
    nmse_center: str = "data_mean"  # nmse without mean-centring divides by ‖x̃ − c‖²: c = the
    # data mean (the reference code) or "origin" (‖x̃‖²)

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise InputError(f"--epochs must be at least 1, got {self.epochs}")
        if self.batch_size < 1:
            raise InputError(f"--batch-size must be positive, got {self.batch_size}")
        if self.lr is not None and not (self.lr > 0 and math.isfinite(self.lr)):
            raise InputError(f"--lr must be a positive number, got {self.lr}")
        if self.max_steps is not None and self.max_steps < 1:
            raise InputError(f"--max-steps must be positive, got {self.max_steps}")
        if not 0 <= self.decay_fraction <= 1:
            raise InputError(f"decay_fraction must lie in [0, 1], got {self.decay_fraction}")
        if self.data_on_device not in ("auto", "yes", "no"):
            raise InputError(f"data_on_device must be auto, yes or no, got {self.data_on_device!r}")
        if self.stream_shuffle not in SHUFFLE_MODES:
            raise InputError(
                f"stream_shuffle must be one of {', '.join(SHUFFLE_MODES)}, got {self.stream_shuffle!r}"
            )
        if not (self.enc_init_scale > 0 and math.isfinite(self.enc_init_scale)):
            raise InputError(f"enc_init_scale must be positive, got {self.enc_init_scale}")
        self._check_counts()
        self._check_choices()

    def _check_counts(self) -> None:
        if self.stream_chunk_rows < 1 or self.stream_buffer_chunks < 1:
            raise InputError("stream_chunk_rows and stream_buffer_chunks must be positive")
        if self.checkpoint_every < 0:
            raise InputError(f"--checkpoint-every must be 0 or more, got {self.checkpoint_every}")
        if self.dead_window < 1:  # 0 would count every latent as dead from the first step
            raise InputError(f"--dead-window must be at least 1, got {self.dead_window}")
        if self.warmup_steps < 0:
            raise InputError(f"warmup_steps must be 0 or more, got {self.warmup_steps}")

    def _check_choices(self) -> None:
        for name, value, allowed in (
            ("b_pre_init", self.b_pre_init, B_PRE_INITS),
            ("decoder_renorm", self.decoder_renorm, RENORM_ORDERS),
            ("scale_rule", self.scale_rule, SCALE_RULES),
            ("nmse_center", self.nmse_center, ("data_mean", "origin")),
        ):
            if value not in allowed:
                raise InputError(f"{name} must be one of {', '.join(allowed)}, got {value!r}")
        check_seed(self.seed)

    def learning_rate(self, arch: str) -> float:
        return self.lr if self.lr is not None else DEFAULT_LR[arch]

    def total_steps(self, rows: int) -> int:
        """Steps of a whole run on ``rows`` samples (for progress bars)."""
        steps = self.epochs * math.ceil(rows / self.batch_size)
        return min(steps, self.max_steps) if self.max_steps is not None else steps


@dataclass
class TrainState:
    step: int = 0
    epoch: int = 0
    step_in_epoch: int = 0
    samples: int = 0
    elapsed: float = 0.0
    history: list[dict[str, float]] = field(default_factory=list)
    # The order the data are read in (see train.data_order); a resumed run keeps it.
    data_order: str | None = None


@dataclass
class TrainResult:
    model: SparseAutoencoder
    state: TrainState
    summary: dict[str, Any]
    out_dir: Path


StepCallback = Callable[[TrainState, dict[str, float]], None]


def lr_factor(step: int, total_steps: int, decay_fraction: float, warmup_steps: int = 0) -> float:
    """Linear warm-up over ``warmup_steps`` (from ``1/warmup_steps``), 1 until the last
    ``decay_fraction`` of the steps, then linearly down to 0."""
    warmup = min(1.0, (step + 1) / warmup_steps) if warmup_steps > 0 else 1.0
    decay_steps = round(total_steps * decay_fraction)
    if decay_steps <= 0 or step < total_steps - decay_steps:
        return warmup
    return warmup * max(0.0, (total_steps - step) / decay_steps)
