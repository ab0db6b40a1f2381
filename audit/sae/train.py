"""The SAE training loop: AdamW, clipping, unit-norm decoder, dead latents, checkpoints, resume.

One step: forward (architecture-specific loss) → backward → remove the decoder gradient's
row-parallel part → clip the gradient norm (1.0) → AdamW step → renormalise decoder rows.
The learning rate is constant, then decays linearly to 0 over the last ``decay_fraction`` of
the steps. A checkpoint (model, optimizer, counters) is one safetensors file written
atomically; ``resume=True`` continues from it and ends with the same weights as a run that
was never interrupted (same seed, same data).
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from audit import __version__
from audit.device import autocast, enable_tf32, resolve_device, tune_cpu_allocator
from audit.errors import InputError
from audit.fileio import atomic_path, ensure_dir, write_json
from audit.sae.base import SAEConfig, SparseAutoencoder
from audit.sae.checkpoint import save_sae
from audit.sae.data import (
    DEFAULT_CHUNK_ROWS,
    InMemoryBatches,
    Preprocessing,
    StreamingBatches,
    fit_preprocessing,
    memory_budget_bytes,
)
from audit.sae.registry import build_sae
from audit.store import EmbeddingStore

CHECKPOINT_FILE = "checkpoint.safetensors"
DEFAULT_LR = {"matryoshka": 1e-4, "topk": 5e-4, "batchtopk": 5e-4, "relu": 5e-5}


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 10
    batch_size: int = 4096
    lr: float | None = None  # None: the reference code's default for the architecture
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
    log_every: int = 10

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

    def learning_rate(self, arch: str) -> float:
        return self.lr if self.lr is not None else DEFAULT_LR[arch]


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


def lr_factor(step: int, total_steps: int, decay_fraction: float) -> float:
    """1 until the last ``decay_fraction`` of the steps, then linearly down to 0."""
    decay_steps = round(total_steps * decay_fraction)
    if decay_steps <= 0 or step < total_steps - decay_steps:
        return 1.0
    return max(0.0, (total_steps - step) / decay_steps)


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
    """Train an SAE on ``store`` and write it to ``out_dir`` (SPEC checkpoint format).

    ``on_step`` receives the state and the step's metrics (for progress bars). ``stop_after``
    ends the run after that many steps *without* finishing it (used to simulate interruption).
    """
    out = ensure_dir(Path(out_dir))
    device = resolve_device(cfg.device)
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

    model: SparseAutoencoder
    if resume and checkpoint_path.exists():
        model, optimizer_state, state, prep, dead_counter = _load_checkpoint(
            checkpoint_path, sae_cfg, cfg, fingerprint
        )
    else:
        if resume and (out / "sae.safetensors").exists() and (out / "training.json").exists():
            raise InputError(
                f"{out} already holds a finished model; nothing to resume (use another --out)"
            )
        prep = fit_preprocessing(store, mean_center=sae_cfg.mean_center)
        model = build_sae(sae_cfg)
        model.reset_parameters(generator=torch.Generator().manual_seed(cfg.seed))
        model.set_preprocessing(torch.from_numpy(prep.mean).float(), prep.scale)
        optimizer_state = None
        state = TrainState()
        dead_counter = torch.zeros(sae_cfg.n_latents, dtype=torch.int64)
    model.to(device).train()
    dead_counter = dead_counter.to(device)

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
    source = _batch_source(store, prep, cfg, device)
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
        _save_checkpoint(
            checkpoint_path, model, optimizer, state, prep, dead_counter, sae_cfg, cfg, fingerprint
        )

    while state.step < total_steps:
        for x in source.batches(state.epoch, state.step_in_epoch):
            if state.step >= total_steps:
                break
            for group in optimizer.param_groups:
                group["lr"] = base_lr * lr_factor(state.step, total_steps, cfg.decay_fraction)
            dead = dead_counter >= window if sae_cfg.aux_k else None
            with autocast(device):
                out_step = model.training_loss(x, dead)
            optimizer.zero_grad(set_to_none=True)
            out_step.loss.backward()
            model.project_decoder_grad()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            optimizer.step()
            model.normalize_decoder()
            model.after_step(out_step)
            with torch.no_grad():
                dead_counter += x.shape[0]
                dead_counter[out_step.fired] = 0
            state.step += 1
            state.step_in_epoch += 1
            state.samples += x.shape[0]
            steps_this_run += 1
            metrics = _step_metrics(x, out_step, dead_counter, window)
            if state.step % max(1, cfg.log_every) == 0 or state.step == total_steps:
                state.history.append({"step": state.step, "epoch": state.epoch, **metrics})
            if on_step is not None:
                on_step(state, metrics)
            if stop_after is not None and steps_this_run >= stop_after:
                checkpoint()
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
    model.eval()
    save_sae(model, out)
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
        "data_on_device": isinstance(source, InMemoryBatches),
        "train_config": asdict(cfg),
        "final": state.history[-1] if state.history else {},
        "dead_latents": int((dead_counter >= window).sum()),
        "data": fingerprint,
    }
    write_json(out / "training.json", {**summary, "history": state.history})
    checkpoint_path.unlink(missing_ok=True)
    return TrainResult(model, state, summary, out)


def _batch_source(
    store: EmbeddingStore,
    prep: Preprocessing,
    cfg: TrainConfig,
    device: torch.device,
    rank: int = 0,
    world_size: int = 1,
) -> InMemoryBatches | StreamingBatches:
    fits = store.count * store.dim * 4 <= memory_budget_bytes(device)
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
    )


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
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)


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
