"""The steps of a training run: the learning-rate schedule applied, forward and backward,
decoder-gradient projection, clipping, AdamW, renormalisation, dead-latent counters, logged
metrics and periodic checkpoints. :func:`audit.sae.train.train_sae` sets a run up and finishes it.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from audit.device import autocast
from audit.distributed import DistContext
from audit.errors import InputError
from audit.sae.base import SAEConfig, SparseAutoencoder
from audit.sae.data import InMemoryBatches, Preprocessing, StreamingBatches
from audit.sae.train_checkpoint import save_checkpoint
from audit.sae.train_config import StepCallback, TrainConfig, TrainState, lr_factor
from audit.sae.train_ddp import all_reduce_step
from audit.store import EmbeddingStore


@dataclass
class TrainingRun:
    """Everything the steps of one training run share."""

    store: EmbeddingStore
    sae_cfg: SAEConfig
    cfg: TrainConfig
    device: torch.device
    dist_ctx: DistContext
    model: SparseAutoencoder
    ddp: torch.nn.parallel.DistributedDataParallel | None
    optimizer: torch.optim.Optimizer
    source: InMemoryBatches | StreamingBatches
    state: TrainState
    prep: Preprocessing
    dead_counter: torch.Tensor
    checkpoint_path: Path
    fingerprint: dict[str, Any]
    total_steps: int
    started: float
    steps_this_run: int = 0

    @property
    def window(self) -> int:
        return min(self.cfg.dead_window, self.store.count)

    def require_finite(self, loss: float | None = None) -> None:
        """Stop a diverged run with one line, before it checkpoints or publishes NaN weights:
        on logged steps the ``loss`` (already on the host) is checked; before a checkpoint or
        the final save (``loss`` None) the weights, with one device sync."""
        if loss is not None:
            bad = not math.isfinite(loss)
        else:
            with torch.no_grad():
                finite = torch.stack([torch.isfinite(p).all() for p in self.model.parameters()])
                bad = not bool(finite.all())
        if bad:
            lr = self.cfg.learning_rate(self.sae_cfg.arch)
            raise InputError(
                f"training diverged at step {self.state.step}: the loss or the weights became "
                f"NaN or inf (learning rate {lr:g}; try a smaller --lr)"
            )

    def checkpoint(self) -> None:
        self.require_finite()
        self.state.elapsed = time.perf_counter() - self.started
        if self.dist_ctx.is_main:  # every rank holds the same state; one writer
            save_checkpoint(
                self.checkpoint_path,
                self.model,
                self.optimizer,
                self.state,
                self.prep,
                self.dead_counter,
                self.sae_cfg,
                self.cfg,
                self.fingerprint,
            )


def run_steps(run: TrainingRun, on_step: StepCallback | None, stop_after: int | None) -> bool:
    """Steps until the end of the run; True when ``stop_after`` interrupted it."""
    state, cfg = run.state, run.cfg
    metrics: dict[str, float] = {}
    while state.step < run.total_steps:
        for x in run.source.batches(state.epoch, state.step_in_epoch):
            if state.step >= run.total_steps:
                break
            metrics = _train_step(run, x, metrics)
            if on_step is not None:
                on_step(state, metrics)
            if stop_after is not None and run.steps_this_run >= stop_after:
                run.checkpoint()
                run.dist_ctx.barrier()  # the checkpoint is on disk before any rank returns
                return True
            if (
                cfg.checkpoint_every
                and state.step % cfg.checkpoint_every == 0
                and state.step < run.total_steps
            ):
                run.checkpoint()
        else:
            state.epoch += 1
            state.step_in_epoch = 0
            if state.step < run.total_steps:
                run.checkpoint()
            continue
        break
    return False


def _train_step(run: TrainingRun, x: torch.Tensor, metrics: dict[str, float]) -> dict[str, float]:
    """One optimizer step on the batch ``x``; returns the metrics to report (the previous ones
    on steps that are not logged)."""
    cfg, state = run.cfg, run.state
    base_lr = cfg.learning_rate(run.sae_cfg.arch)
    for group in run.optimizer.param_groups:
        group["lr"] = base_lr * lr_factor(
            state.step, run.total_steps, cfg.decay_fraction, cfg.warmup_steps
        )
    batch_rows = min(cfg.batch_size, run.store.count - state.step_in_epoch * cfg.batch_size)
    local_rows = x.shape[0]
    if run.ddp is not None and local_rows == 0:
        x = torch.ones((1, run.store.dim), device=run.device)  # placeholder, weight 0 below
    out_step = _gradient_step(run, x, local_rows, batch_rows)
    if run.ddp is None:
        fired = out_step.fired
    else:
        fired, reduced = all_reduce_step(
            run.dist_ctx, run.model, x, out_step, local_rows, run.prep.variance
        )
    run.model.after_step(out_step)
    with torch.no_grad():
        run.dead_counter += batch_rows
        run.dead_counter.masked_fill_(fired, 0)  # indexing by a mask would read its size
    state.step += 1
    state.step_in_epoch += 1
    state.samples += batch_rows
    run.steps_this_run += 1
    log_now = state.step % max(1, cfg.log_every) == 0 or state.step == run.total_steps
    if run.ddp is not None:
        metrics = {**reduced, "dead": int((run.dead_counter >= run.window).sum())}
    elif log_now or run.steps_this_run == 1:
        # Reading metrics waits for the device: only on logged steps (and the first).
        metrics = _step_metrics(x, out_step, run.dead_counter, run.window, run.prep.variance)
    if log_now or run.steps_this_run == 1:
        run.require_finite(metrics["loss"])
    if log_now:
        state.history.append({"step": state.step, "epoch": state.epoch, **metrics})
    return metrics


def _gradient_step(run: TrainingRun, x: torch.Tensor, local_rows: int, batch_rows: int) -> Any:
    """Forward, backward, decoder-gradient projection, clipping, AdamW, renormalisation."""
    model, cfg = run.model, run.cfg
    dead = run.dead_counter >= run.window if run.sae_cfg.aux_k else None
    # Last step's gradients go before the forward pass, not after: less peak memory.
    run.optimizer.zero_grad(set_to_none=True)
    with autocast(run.device):
        out_step = model.training_loss(x, dead) if run.ddp is None else run.ddp(x, dead)
    loss = out_step.loss
    if run.ddp is not None:
        # DDP averages gradients over ranks: weigh each local mean by its share of rows.
        loss = loss * (run.dist_ctx.world_size * local_rows / batch_rows)
    loss.backward()
    if cfg.decoder_renorm == "before_clip":
        model.rescale_decoder_rows()
    model.project_decoder_grad()
    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
    run.optimizer.step()
    if cfg.decoder_renorm == "after_step":
        model.normalize_decoder()
    return out_step


@torch.no_grad()
def _step_metrics(
    x: torch.Tensor, out: Any, dead_counter: torch.Tensor, window: int, variance: float | None
) -> dict[str, float]:
    """The step's metrics; ``fvu`` is the batch's squared error over ``rows × variance`` (the
    data's variance per row, see :class:`Preprocessing`): the dataset FVU estimated on it."""
    err = (out.x_hat.float() - x).pow(2).sum()
    if variance is not None:
        var = x.new_tensor(x.shape[0] * variance).clamp_min(1e-12)
    else:
        var = (x - x.mean(0)).pow(2).sum().clamp_min(1e-12)
    return {
        "loss": float(out.loss),
        "recon": float(out.recon_loss),
        "aux": float(out.aux_loss),
        "fvu": float(err / var),
        "l0": float(out.active.float().mean()),
        "dead": int((dead_counter >= window).sum()),
    }
