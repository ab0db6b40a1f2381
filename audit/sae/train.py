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

import os
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from audit import __version__
from audit.device import enable_tf32, resolve_device, tune_cpu_allocator
from audit.distributed import DistContext, current_context, device_for_rank
from audit.errors import InputError
from audit.fileio import ensure_dir, write_json
from audit.sae.base import SAEConfig, SparseAutoencoder
from audit.sae.checkpoint import save_sae
from audit.sae.data import InMemoryBatches, Preprocessing, fit_preprocessing
from audit.sae.init import MEDIAN_ROWS, initial_b_pre
from audit.sae.provenance import TRAINING_RECORD, data_fingerprint
from audit.sae.registry import build_sae
from audit.sae.train_checkpoint import CHECKPOINT_FILE, load_checkpoint
from audit.sae.train_config import (
    DEFAULT_LR,
    REFERENCE_LR,
    RENORM_ORDERS,
    StepCallback,
    TrainConfig,
    TrainResult,
    TrainState,
    lr_factor,
)
from audit.sae.train_ddp import wrap_ddp
from audit.sae.train_loop import TrainingRun, run_steps
from audit.sae.train_source import batch_source, data_order, describe_source
from audit.store import EmbeddingStore

__all__ = [
    "CHECKPOINT_FILE",
    "DEFAULT_LR",
    "REFERENCE_LR",
    "RENORM_ORDERS",
    "StepCallback",
    "TrainConfig",
    "TrainResult",
    "TrainState",
    "lr_factor",
    "train_sae",
]


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
    """Train an SAE on ``store``; writes sae.safetensors, config.json and training.json.

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
    run = _start_run(store, sae_cfg, cfg, out, resume, device, dist_ctx)
    if run_steps(run, on_step, stop_after):
        return TrainResult(run.model, run.state, {"interrupted": True}, out)
    return _finish(run, out)


def _start_run(
    store: EmbeddingStore,
    sae_cfg: SAEConfig,
    cfg: TrainConfig,
    out: Path,
    resume: bool,
    device: torch.device,
    dist_ctx: DistContext,
) -> TrainingRun:
    """A new model, or the checkpoint's when resuming, on the device with its optimizer."""
    checkpoint_path = out / CHECKPOINT_FILE
    fingerprint = data_fingerprint(store)
    torch.manual_seed(cfg.seed)
    model, optimizer_state, state, prep, dead_counter = _model_and_state(
        store, sae_cfg, cfg, out, resume, dist_ctx, fingerprint
    )
    if sae_cfg.loss == "nmse" and not sae_cfg.mean_center and cfg.nmse_center == "data_mean":
        model.nmse_center.copy_(_nmse_center(store, prep, cfg, dist_ctx))
    model.to(device).train()
    # DDP's hooks sit on the parameters' gradient accumulators, so they fire for the custom
    # autograd Function of the nested loss too; every parameter gets a gradient every step,
    # so find_unused_parameters stays off.
    ddp = wrap_ddp(model, device) if dist_ctx.enabled else None
    optimizer = _optimizer(model, cfg, sae_cfg.arch, optimizer_state, device)
    source = batch_source(store, prep, cfg, device, dist_ctx, state.data_order)
    state.data_order = data_order(source)
    total_steps = cfg.epochs * source.steps_per_epoch
    if cfg.max_steps is not None:
        total_steps = min(total_steps, cfg.max_steps)
    return TrainingRun(
        store=store,
        sae_cfg=sae_cfg,
        cfg=cfg,
        device=device,
        dist_ctx=dist_ctx,
        model=model,
        ddp=ddp,
        optimizer=optimizer,
        source=source,
        state=state,
        prep=prep,
        dead_counter=dead_counter.to(device),
        checkpoint_path=checkpoint_path,
        fingerprint=fingerprint,
        total_steps=total_steps,
        started=time.perf_counter() - state.elapsed,
    )


def _model_and_state(
    store: EmbeddingStore,
    sae_cfg: SAEConfig,
    cfg: TrainConfig,
    out: Path,
    resume: bool,
    dist_ctx: DistContext,
    fingerprint: dict[str, Any],
) -> tuple[SparseAutoencoder, dict[str, Any] | None, TrainState, Preprocessing, torch.Tensor]:
    """The model, optimizer state, training state, data preprocessing and dead-latent counter:
    the checkpoint's when resuming one, else fresh (every rank must agree on which)."""
    checkpoint_path = out / CHECKPOINT_FILE
    from_checkpoint = resume and checkpoint_path.exists()
    finished = (out / "sae.safetensors").exists() and (out / TRAINING_RECORD).exists()
    dist_ctx.agree(
        [from_checkpoint, resume and finished],
        f"the contents of {out} (with several nodes, --out must be on a file system all of them see)",
    )
    if from_checkpoint:
        return load_checkpoint(checkpoint_path, sae_cfg, cfg, fingerprint)
    if resume and finished:
        raise InputError(
            f"{out} already holds a finished model; nothing to resume (use another --out)"
        )
    model, prep = _new_model(store, sae_cfg, cfg, dist_ctx)
    return model, None, TrainState(), prep, torch.zeros(sae_cfg.n_latents, dtype=torch.int64)


def _new_model(
    store: EmbeddingStore, sae_cfg: SAEConfig, cfg: TrainConfig, dist_ctx: DistContext
) -> tuple[SparseAutoencoder, Preprocessing]:
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
    return model, prep


def _optimizer(
    model: SparseAutoencoder,
    cfg: TrainConfig,
    arch: str,
    saved_state: dict[int, dict[str, torch.Tensor]] | None,
    device: torch.device,
) -> torch.optim.Optimizer:
    optimizer = torch.optim.AdamW(
        model.parameters(),
        lr=cfg.learning_rate(arch),
        betas=(cfg.beta1, cfg.beta2),
        eps=cfg.eps,
        weight_decay=cfg.weight_decay,
    )
    if saved_state is not None:
        restored = optimizer.state_dict()
        restored["state"] = {
            i: {k: v.to(device) if k != "step" else v for k, v in slots.items()}
            for i, slots in saved_state.items()
        }
        optimizer.load_state_dict(restored)
    return optimizer


def _finish(run: TrainingRun, out: Path) -> TrainResult:
    """Write the model and training.json (rank 0), drop the checkpoint."""
    state, model = run.state, run.model
    run.require_finite()
    state.elapsed = time.perf_counter() - run.started
    if run.cfg.decoder_renorm == "before_clip":
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
        "device": str(run.device),
        "world_size": run.dist_ctx.world_size,
        "data_on_device": isinstance(run.source, InMemoryBatches),
        "data_source": describe_source(run.source),
        "train_config": asdict(run.cfg),
        "final": state.history[-1] if state.history else {},
        "dead_latents": int((run.dead_counter >= run.window).sum()),
        "data": run.fingerprint,
    }
    summary["warnings"] = _training_warnings(
        summary["final"], run.cfg.learning_rate(run.sae_cfg.arch)
    )
    if run.dist_ctx.is_main:
        save_sae(model, out)
        write_json(out / TRAINING_RECORD, {**summary, "history": state.history})
        run.checkpoint_path.unlink(missing_ok=True)
    run.dist_ctx.barrier()  # the model is on disk before any rank returns
    return TrainResult(model, state, summary, out)


def _training_warnings(final: dict[str, Any], lr: float) -> list[str]:
    """What the user must hear about a run that finished: a final FVU of 1 or more means the
    SAE reconstructs the data no better than their mean does (finite, so not a divergence,
    but the model is useless: a learning rate far too large, or far too few steps)."""
    fvu = final.get("fvu")
    if fvu is None or fvu < 1:
        return []
    return [
        f"the final training FVU is {fvu:.3g} (1 or more: the SAE reconstructs the data no "
        f"better than their mean); the model is not usable — try a smaller --lr than {lr:g} "
        "or more steps"
    ]


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
