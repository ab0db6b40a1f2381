"""The SAE training loop: AdamW, clipping, unit-norm decoder, dead latents, checkpoints, resume.

One step: forward (architecture-specific loss) → backward → remove the decoder gradient's
row-parallel part → clip the gradient norm (1.0) → AdamW step → renormalise decoder rows
(``decoder_renorm="before_clip"``: the reference code's order, see :data:`RENORM_ORDERS`).
The learning rate warms up linearly over ``warmup_steps``, stays constant, then decays
linearly to 0 over the last ``decay_fraction`` of the steps. ``b_pre`` starts at the geometric
median of the preprocessed data (:mod:`audit.sae.init`) or 0, ``W_enc`` at
``enc_init_scale · W_decᵀ``. The defaults come from benchmarks/recovery.py (docs/recovery.md).
A checkpoint (model, optimizer, counters) is one safetensors file written atomically;
``resume=True`` continues from it and ends with the same weights as a run that was never
interrupted (same seed, same data).

**Data parallel.** When a ``torch.distributed`` process group is running (``torchrun``, see
:mod:`audit.distributed`), the model is wrapped in ``DistributedDataParallel`` and each rank
trains on its slice of every global batch of ``batch_size`` rows. The Matryoshka, TopK and
ReLU losses are means over the batch, so each rank scales its local mean by
``W · n_rank / n_batch`` before DDP averages the gradients: the result is the single-process
gradient for any split, including a last batch that does not divide evenly (a rank with no
rows runs a placeholder row with weight 0, so the all-reduce still happens). Everything that
follows the gradient (decoder projection, clipping, AdamW, renormalisation) is then the same
on every rank. Fired-latent masks and step metrics are all-reduced, so dead-latent counters
and the history equal the single-process ones. Two things stay per rank: BatchTopK keeps the
top ``k·n_rank`` entries of each rank's slice (a global top-k would gather every rank's
``[n_rank, n]`` pre-activations each step; the inference threshold is the mean of the ranks'
estimates, identical on every rank), and AuxK normalises by the variance of the rank's own
residuals (the normaliser is computed inside the SAE's loss). Rank 0 alone writes
checkpoints and the model; every rank resumes from the same checkpoint.
"""

from __future__ import annotations

import inspect
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from audit import __version__
from audit.device import autocast, enable_tf32, resolve_device, tune_cpu_allocator
from audit.distributed import DistContext, current_context, device_for_rank
from audit.errors import InputError
from audit.fileio import ensure_dir, write_json, write_safetensors
from audit.sae.base import SCALE_RULES, SAEConfig, SparseAutoencoder
from audit.sae.checkpoint import save_sae
from audit.sae.data import (
    DEFAULT_CHUNK_ROWS,
    SHUFFLE_MODES,
    InMemoryBatches,
    Preprocessing,
    StreamingBatches,
    fit_preprocessing,
    memory_budget_bytes,
)
from audit.sae.init import B_PRE_INITS, MEDIAN_ROWS, initial_b_pre
from audit.sae.registry import build_sae
from audit.store import EmbeddingStore

CHECKPOINT_FILE = "checkpoint.safetensors"
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
        if self.stream_chunk_rows < 1 or self.stream_buffer_chunks < 1:
            raise InputError("stream_chunk_rows and stream_buffer_chunks must be positive")
        if self.checkpoint_every < 0:
            raise InputError(f"--checkpoint-every must be 0 or more, got {self.checkpoint_every}")
        if self.warmup_steps < 0:
            raise InputError(f"warmup_steps must be 0 or more, got {self.warmup_steps}")
        if not (self.enc_init_scale > 0 and math.isfinite(self.enc_init_scale)):
            raise InputError(f"enc_init_scale must be positive, got {self.enc_init_scale}")
        for name, value, allowed in (
            ("b_pre_init", self.b_pre_init, B_PRE_INITS),
            ("decoder_renorm", self.decoder_renorm, RENORM_ORDERS),
            ("scale_rule", self.scale_rule, SCALE_RULES),
            ("nmse_center", self.nmse_center, ("data_mean", "origin")),
        ):
            if value not in allowed:
                raise InputError(f"{name} must be one of {', '.join(allowed)}, got {value!r}")

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


def train_sae(
    store: EmbeddingStore,
    sae_cfg: SAEConfig,
    cfg: TrainConfig,
    out_dir: str | os.PathLike[str],
    *,
    resume: bool = False,
    on_step: StepCallback | None = None,
    stop_after: int | None = None,
) -> TrainResult:
    """Train an SAE on ``store`` and write it to ``out_dir`` (sae.safetensors + config.json + training.json).

    ``on_step`` receives the state and the metrics of the latest logged step (for progress
    bars; they are computed every ``log_every`` steps and on the first, so that a GPU never
    waits for the host in between). ``stop_after``
    ends the run after that many steps *without* finishing it (used to simulate interruption).
    Inside a ``torch.distributed`` process group every rank calls this with the same arguments
    (see the module docstring); ``cuda`` then means ``cuda:LOCAL_RANK``.
    """
    out = ensure_dir(Path(out_dir))
    device = device_for_rank(resolve_device(cfg.device))
    dist_ctx = current_context(device)
    if device.type == "cpu":
        tune_cpu_allocator()
    else:
        enable_tf32()
    if store.dim != sae_cfg.d_in:
        raise InputError(
            f"embeddings have dimension {store.dim} but the SAE expects {sae_cfg.d_in}"
        )
    if store.count < 1:
        raise InputError(f"{store.path}: no embeddings to train on")
    checkpoint_path = out / CHECKPOINT_FILE
    fingerprint = _data_fingerprint(store)
    torch.manual_seed(cfg.seed)
    from_checkpoint = resume and checkpoint_path.exists()
    finished = (out / "sae.safetensors").exists() and (out / "training.json").exists()
    dist_ctx.agree(
        [from_checkpoint, resume and finished],
        f"the contents of {out} (with several nodes, --out must be on a file system all of them see)",
    )

    model: SparseAutoencoder
    if from_checkpoint:
        model, optimizer_state, state, prep, dead_counter = _load_checkpoint(
            checkpoint_path, sae_cfg, cfg, fingerprint
        )
    else:
        if resume and finished:
            raise InputError(
                f"{out} already holds a finished model; nothing to resume (use another --out)"
            )
        prep = fit_preprocessing(
            store,
            mean_center=sae_cfg.mean_center,
            chunk_rows=cfg.stream_chunk_rows,
            rank=dist_ctx.rank,
            world_size=dist_ctx.world_size,
            all_reduce=dist_ctx.all_reduce_numpy,
            scale_rule=cfg.scale_rule,
        )
        model = build_sae(sae_cfg)
        model.reset_parameters(
            generator=torch.Generator().manual_seed(cfg.seed), enc_scale=cfg.enc_init_scale
        )
        model.set_preprocessing(torch.from_numpy(prep.mean).float(), prep.scale)
        # Every rank reads the same seeded rows (the same b_pre); at most half a shuffle buffer
        # of them, so streaming stays within its memory bound.
        rows = min(MEDIAN_ROWS, cfg.stream_chunk_rows * cfg.stream_buffer_chunks // 2)
        with torch.no_grad():
            model.b_pre.copy_(initial_b_pre(cfg.b_pre_init, store, prep, cfg.seed, rows))
        optimizer_state = None
        state = TrainState()
        dead_counter = torch.zeros(sae_cfg.n_latents, dtype=torch.int64)
    if sae_cfg.loss == "nmse" and not sae_cfg.mean_center and cfg.nmse_center == "data_mean":
        model.nmse_center.copy_(_nmse_center(store, prep, cfg, dist_ctx))
    model.to(device).train()
    dead_counter = dead_counter.to(device)
    # DDP's hooks sit on the parameters' gradient accumulators, so they fire for the custom
    # autograd Function of the nested loss too; every parameter gets a gradient every step,
    # so find_unused_parameters stays off.
    ddp = _wrap_ddp(model, device) if dist_ctx.enabled else None

    optimizer = torch.optim.AdamW(
        model.parameters(),
        lr=cfg.learning_rate(sae_cfg.arch),
        betas=(cfg.beta1, cfg.beta2),
        eps=cfg.eps,
        weight_decay=cfg.weight_decay,
    )
    if optimizer_state is not None:
        restored = optimizer.state_dict()
        restored["state"] = {
            i: {k: v.to(device) if k != "step" else v for k, v in slots.items()}
            for i, slots in optimizer_state.items()
        }
        optimizer.load_state_dict(restored)
    source = _batch_source(store, prep, cfg, device, dist_ctx)
    steps_per_epoch = source.steps_per_epoch
    total_steps = cfg.epochs * steps_per_epoch
    if cfg.max_steps is not None:
        total_steps = min(total_steps, cfg.max_steps)
    base_lr = cfg.learning_rate(sae_cfg.arch)
    started = time.perf_counter() - state.elapsed
    steps_this_run = 0
    window = min(cfg.dead_window, store.count)

    def checkpoint() -> None:
        state.elapsed = time.perf_counter() - started
        if dist_ctx.is_main:  # every rank holds the same state; one writer
            _save_checkpoint(
                checkpoint_path,
                model,
                optimizer,
                state,
                prep,
                dead_counter,
                sae_cfg,
                cfg,
                fingerprint,
            )

    metrics: dict[str, float] = {}
    while state.step < total_steps:
        for x in source.batches(state.epoch, state.step_in_epoch):
            if state.step >= total_steps:
                break
            for group in optimizer.param_groups:
                group["lr"] = base_lr * lr_factor(
                    state.step, total_steps, cfg.decay_fraction, cfg.warmup_steps
                )
            dead = dead_counter >= window if sae_cfg.aux_k else None
            batch_rows = min(cfg.batch_size, store.count - state.step_in_epoch * cfg.batch_size)
            local_rows = x.shape[0]
            if ddp is not None and local_rows == 0:
                x = torch.ones((1, store.dim), device=device)  # placeholder, weight 0 below
            # Last step's gradients go before the forward pass, not after: less peak memory.
            optimizer.zero_grad(set_to_none=True)
            with autocast(device):
                out_step = model.training_loss(x, dead) if ddp is None else ddp(x, dead)
            loss = out_step.loss
            if ddp is not None:
                # DDP averages gradients over ranks: weigh each local mean by its share of rows.
                loss = loss * (dist_ctx.world_size * local_rows / batch_rows)
            loss.backward()
            if cfg.decoder_renorm == "before_clip":
                model.rescale_decoder_rows()
            model.project_decoder_grad()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            optimizer.step()
            if cfg.decoder_renorm == "after_step":
                model.normalize_decoder()
            if ddp is None:
                fired = out_step.fired
            else:
                fired, reduced = _all_reduce_step(dist_ctx, model, x, out_step, local_rows)
            model.after_step(out_step)
            with torch.no_grad():
                dead_counter += batch_rows
                dead_counter.masked_fill_(fired, 0)  # indexing by a mask would read its size
            state.step += 1
            state.step_in_epoch += 1
            state.samples += batch_rows
            steps_this_run += 1
            log_now = state.step % max(1, cfg.log_every) == 0 or state.step == total_steps
            if ddp is not None:
                metrics = {**reduced, "dead": int((dead_counter >= window).sum())}
            elif log_now or steps_this_run == 1:
                # Reading metrics waits for the device: only on logged steps (and the first).
                metrics = _step_metrics(x, out_step, dead_counter, window)
            if log_now:
                state.history.append({"step": state.step, "epoch": state.epoch, **metrics})
            if on_step is not None:
                on_step(state, metrics)
            if stop_after is not None and steps_this_run >= stop_after:
                checkpoint()
                dist_ctx.barrier()  # the checkpoint is on disk before any rank returns
                return TrainResult(model, state, {"interrupted": True}, out)
            if (
                cfg.checkpoint_every
                and state.step % cfg.checkpoint_every == 0
                and state.step < total_steps
            ):
                checkpoint()
        else:
            state.epoch += 1
            state.step_in_epoch = 0
            if state.step < total_steps:
                checkpoint()
            continue
        break

    state.elapsed = time.perf_counter() - started
    if cfg.decoder_renorm == "before_clip":
        model.rescale_decoder_rows()  # saved rows are unit-norm whatever the order
    model.eval()
    summary = {
        "msae_audit_version": __version__,
        "steps": state.step,
        "epochs": state.epoch + (1 if state.step_in_epoch else 0),
        "samples": state.samples,
        "seconds": round(state.elapsed, 3),
        "samples_per_second": round(state.samples / state.elapsed, 1)
        if state.elapsed > 0
        else None,
        "device": str(device),
        "world_size": dist_ctx.world_size,
        "data_on_device": isinstance(source, InMemoryBatches),
        "data_source": _describe_source(source),
        "train_config": asdict(cfg),
        "final": state.history[-1] if state.history else {},
        "dead_latents": int((dead_counter >= window).sum()),
        "data": fingerprint,
    }
    if dist_ctx.is_main:
        save_sae(model, out)
        write_json(out / "training.json", {**summary, "history": state.history})
        checkpoint_path.unlink(missing_ok=True)
    dist_ctx.barrier()  # the model is on disk before any rank returns
    return TrainResult(model, state, summary, out)


def _nmse_center(
    store: EmbeddingStore, prep: Preprocessing, cfg: TrainConfig, dist_ctx: DistContext
) -> torch.Tensor:
    """The data mean in preprocessed space, nmse's reference point when inputs are not
    mean-centred (a pass over the data, only in that configuration)."""
    raw_mean = fit_preprocessing(
        store,
        mean_center=True,
        chunk_rows=cfg.stream_chunk_rows,
        check_finite=False,
        rank=dist_ctx.rank,
        world_size=dist_ctx.world_size,
        all_reduce=dist_ctx.all_reduce_numpy,
    ).mean
    return torch.from_numpy((raw_mean - prep.mean) * prep.scale).float()


class _TrainingLoss(torch.nn.Module):
    """``training_loss`` as a module's forward, the call DDP intercepts to prepare its reducer."""

    def __init__(self, model: SparseAutoencoder) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor, dead: torch.Tensor | None) -> Any:
        return self.model.training_loss(x, dead)


def _wrap_ddp(
    model: SparseAutoencoder, device: torch.device
) -> torch.nn.parallel.DistributedDataParallel:
    ddp_class = torch.nn.parallel.DistributedDataParallel
    # The buffers (mean, scale, BatchTopK's threshold) are kept equal by construction (they
    # are synced once at construction); broadcasting them before every forward only costs
    # time. Recent PyTorch renamed the switch; older releases know only the old name.
    no_forward_sync = (
        {"forward_sync_buffers": False}
        if "forward_sync_buffers" in inspect.signature(ddp_class.__init__).parameters
        else {"broadcast_buffers": False}
    )
    return ddp_class(
        _TrainingLoss(model),
        device_ids=[device.index] if device.type == "cuda" else None,
        find_unused_parameters=False,
        **no_forward_sync,
    )


@torch.no_grad()
def _all_reduce_step(
    dist_ctx: DistContext,
    model: SparseAutoencoder,
    x: torch.Tensor,
    out: Any,
    local_rows: int,
) -> tuple[torch.Tensor, dict[str, float]]:
    """One all-reduce of the step's fired latents, metric sums and BatchTopK threshold estimate.

    Returns the global fired mask and the global batch's metrics (as a single process on the
    whole batch would report them). Sets the threshold estimate BatchTopK's ``after_step``
    folds in to the mean over the ranks that had rows.
    """
    n, d = out.fired.numel(), x.shape[1]
    stats = torch.zeros(n + d + 9, dtype=torch.float64, device=x.device)
    kept = getattr(model, "_last_min_kept", None)  # BatchTopK's smallest kept activation
    if local_rows:
        xd = x.double()
        stats[:n] = out.fired.double()
        stats[n : n + d] = xd.sum(0)
        has_kept = kept is not None
        stats[n + d :] = torch.stack(
            [
                out.loss.detach().double() * local_rows,
                out.recon_loss.double() * local_rows,
                out.aux_loss.double() * local_rows,
                (out.x_hat.double() - xd).pow(2).sum(),
                xd.pow(2).sum(),
                xd.new_tensor(float(local_rows)),
                out.active.double().sum(),
                kept.double() if has_kept else xd.new_zeros(()),
                xd.new_tensor(1.0 if has_kept else 0.0),
            ]
        )
    dist_ctx.all_reduce_tensor(stats, "sum")
    loss, recon, aux, err, sq, rows, active, kept_sum, kept_count = stats[n + d :].tolist()
    if hasattr(model, "_last_min_kept"):
        model._last_min_kept = (
            model.threshold.new_tensor(kept_sum / kept_count) if kept_count > 0 else None
        )
    x_sum = stats[n : n + d]
    variance = max(sq - float(x_sum.pow(2).sum()) / rows, 1e-12)
    metrics = {
        "loss": loss / rows,
        "recon": recon / rows,
        "aux": aux / rows,
        "fvu": err / variance,
        "l0": active / rows,
    }
    return stats[:n] > 0, metrics


def _batch_source(
    store: EmbeddingStore,
    prep: Preprocessing,
    cfg: TrainConfig,
    device: torch.device,
    dist_ctx: DistContext | None = None,
) -> InMemoryBatches | StreamingBatches:
    dist_ctx = dist_ctx or DistContext(device=device)
    rank, world_size = dist_ctx.rank, dist_ctx.world_size
    budget = memory_budget_bytes(device)
    if device.type == "cpu":
        budget //= max(1, dist_ctx.local_world_size)  # each local process holds its own copy
    fits = store.count * store.dim * 4 <= budget
    # Every rank must pick the same source (their orders differ): stream if any rank must.
    fits = bool(dist_ctx.all_reduce_numpy(np.array([float(fits)]), "min")[0])
    if cfg.data_on_device == "yes" or (cfg.data_on_device == "auto" and fits):
        return InMemoryBatches(
            store, prep, cfg.batch_size, cfg.seed, device, rank, world_size, cfg.stream_chunk_rows
        )
    return StreamingBatches(
        store,
        prep,
        cfg.batch_size,
        cfg.seed,
        device,
        rank,
        world_size,
        cfg.stream_chunk_rows,
        cfg.stream_buffer_chunks,
        cfg.stream_shuffle,
    )


def _describe_source(source: InMemoryBatches | StreamingBatches) -> str:
    if isinstance(source, InMemoryBatches):
        return "in-memory"
    if source.shuffle == "global":
        return "streamed (global shuffle)"
    return f"streamed (shuffle buffer of {source.buffer_rows} rows)"


@torch.no_grad()
def _step_metrics(
    x: torch.Tensor, out: Any, dead_counter: torch.Tensor, window: int
) -> dict[str, float]:
    err = (out.x_hat.float() - x).pow(2).sum()
    var = (x - x.mean(0)).pow(2).sum().clamp_min(1e-12)
    return {
        "loss": float(out.loss),
        "recon": float(out.recon_loss),
        "aux": float(out.aux_loss),
        "fvu": float(err / var),
        "l0": float(out.active.float().mean()),
        "dead": int((dead_counter >= window).sum()),
    }


def _data_fingerprint(store: EmbeddingStore) -> dict[str, Any]:
    return {"path": str(store.path), "count": store.count, "dim": store.dim}


# ------------------------------------------------------------------------------------------
# Checkpoints: one safetensors file (model + optimizer tensors) with the JSON state in its header
# ------------------------------------------------------------------------------------------


def _save_checkpoint(
    path: Path,
    model: SparseAutoencoder,
    optimizer: torch.optim.Optimizer,
    state: TrainState,
    prep: Preprocessing,
    dead_counter: torch.Tensor,
    sae_cfg: SAEConfig,
    cfg: TrainConfig,
    fingerprint: dict[str, Any],
) -> None:
    tensors: dict[str, torch.Tensor] = {}
    names = [name for name, _ in model.named_parameters()]
    for name, value in model.state_dict().items():
        tensors[f"model.{name}"] = value.detach().to("cpu").contiguous().clone()
    opt = optimizer.state_dict()
    for index, slots in opt["state"].items():
        for slot, value in slots.items():
            tensors[f"optim.{names[index]}.{slot}"] = (
                torch.as_tensor(value).detach().to("cpu").contiguous().clone()
            )
    tensors["train.dead_counter"] = dead_counter.detach().to("cpu").contiguous().clone()
    tensors["train.prep_mean"] = torch.from_numpy(prep.mean.copy())
    meta = {
        "state": json.dumps(asdict(state)),
        "sae_config": json.dumps(sae_cfg.to_json()),
        "train_config": json.dumps(_resume_relevant(cfg)),
        "prep_scale": repr(prep.scale),
        "data": json.dumps(fingerprint),
        "param_names": json.dumps(names),
    }
    write_safetensors(path, tensors, metadata=meta)


def _resume_relevant(cfg: TrainConfig) -> dict[str, Any]:
    """Settings that must not change between an interrupted run and its resumption."""
    data = asdict(cfg)
    for key in (
        "checkpoint_every",
        "log_every",
        "device",
        "data_on_device",
        "stream_chunk_rows",
        "stream_buffer_chunks",
        "stream_shuffle",
    ):
        data.pop(key)
    return data


def _load_checkpoint(path: Path, sae_cfg: SAEConfig, cfg: TrainConfig, fingerprint: dict[str, Any]):
    from safetensors import safe_open

    try:
        tensors = load_file(str(path))
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise InputError(f"{path}: corrupt checkpoint; delete it to start over ({exc})") from exc
    try:
        saved_sae = SAEConfig.from_json(json.loads(meta["sae_config"]), str(path))
        saved_train = json.loads(meta["train_config"])
        saved_data = json.loads(meta["data"])
        state = TrainState(**json.loads(meta["state"]))
        names = json.loads(meta["param_names"])
        scale = float(meta["prep_scale"])
    except (KeyError, ValueError, TypeError) as exc:
        raise InputError(
            f"{path}: checkpoint metadata is unreadable; delete it to start over"
        ) from exc
    if saved_sae != sae_cfg:
        raise InputError(
            f"{path}: checkpoint was made with different SAE settings; use the same flags or delete it"
        )
    if saved_train != _resume_relevant(cfg):
        raise InputError(
            f"{path}: checkpoint was made with different training settings; use the same flags or delete it"
        )
    if saved_data != fingerprint:
        raise InputError(
            f"{path}: checkpoint was made on different embeddings ({saved_data['path']})"
        )
    model = build_sae(sae_cfg)
    model_state = {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}
    if "threshold" in model_state and hasattr(model, "threshold"):
        model.threshold = model_state["threshold"].clone()
    model.load_state_dict(model_state)
    optim_state: dict[int, dict[str, torch.Tensor]] = {}
    for index, name in enumerate(names):
        slots = {
            key[len(f"optim.{name}.") :]: value
            for key, value in tensors.items()
            if key.startswith(f"optim.{name}.")
        }
        if slots:
            optim_state[index] = slots
    prep = Preprocessing(tensors["train.prep_mean"].double().numpy(), scale)
    return model, optim_state, state, prep, tensors["train.dead_counter"]
