"""Training checkpoints: one safetensors file (model + optimizer tensors) with the JSON state in
its header, written atomically; resuming refuses a checkpoint made with other settings or data.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from audit.errors import InputError
from audit.fileio import write_safetensors
from audit.sae.base import SAEConfig, SparseAutoencoder
from audit.sae.data import (
    Preprocessing,
)
from audit.sae.registry import build_sae
from audit.sae.train_config import TrainConfig, TrainState

CHECKPOINT_FILE = "checkpoint.safetensors"


def save_checkpoint(
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
        "train_config": json.dumps(resume_relevant(cfg)),
        "prep_scale": repr(prep.scale),
        "prep_variance": repr(prep.variance),
        "data": json.dumps(fingerprint),
        "param_names": json.dumps(names),
    }
    write_safetensors(path, tensors, metadata=meta)


def resume_relevant(cfg: TrainConfig) -> dict[str, Any]:
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


def load_checkpoint(path: Path, sae_cfg: SAEConfig, cfg: TrainConfig, fingerprint: dict[str, Any]):
    """Model, optimizer state, training state, preprocessing and dead-latent counters of the
    checkpoint at ``path``; refused when it was made with other settings or data."""
    tensors, meta = _read_checkpoint(path)
    try:
        saved_sae = SAEConfig.from_json(json.loads(meta["sae_config"]), str(path))
        saved_train = json.loads(meta["train_config"])
        saved_data = json.loads(meta["data"])
        state = TrainState(**json.loads(meta["state"]))
        names = json.loads(meta["param_names"])
        scale = float(meta["prep_scale"])
        variance = (
            float(meta["prep_variance"]) if meta.get("prep_variance", "None") != "None" else None
        )
    except (KeyError, ValueError, TypeError) as exc:
        raise InputError(
            f"{path}: checkpoint metadata is unreadable; delete it to start over"
        ) from exc
    if not _plausible(saved_data, state, names, scale) or not (
        variance is None or (math.isfinite(variance) and variance >= 0)
    ):
        raise InputError(f"{path}: checkpoint metadata is unreadable; delete it to start over")
    _check_same_run(path, (saved_sae, saved_train, saved_data), sae_cfg, cfg, fingerprint)
    bad = [k for k, v in tensors.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise InputError(f"{path}: checkpoint holds NaN or inf ({bad[0]}); delete it to start over")
    model = build_sae(sae_cfg)
    model_state = {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}
    if "threshold" in model_state and hasattr(model, "threshold"):
        model.threshold = model_state["threshold"].clone()
    try:
        model.load_state_dict(model_state)
    except RuntimeError as exc:  # missing tensors or wrong shapes
        first = str(exc).strip().splitlines()[0]
        raise InputError(f"{path}: checkpoint does not fit the model ({first})") from exc
    optim_state: dict[int, dict[str, torch.Tensor]] = {}
    for index, name in enumerate(names):
        slots = {
            key[len(f"optim.{name}.") :]: value
            for key, value in tensors.items()
            if key.startswith(f"optim.{name}.")
        }
        if slots:
            optim_state[index] = slots
    prep = Preprocessing(tensors["train.prep_mean"].double().numpy(), scale, variance)
    return model, optim_state, state, prep, tensors["train.dead_counter"]


def _plausible(data: Any, state: TrainState, names: Any, scale: float) -> bool:
    """The metadata's types, before anything trusts them."""
    counters = (state.step, state.epoch, state.step_in_epoch, state.samples)
    return (
        isinstance(data, dict)
        and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in counters)
        and isinstance(state.elapsed, int | float)
        and isinstance(state.history, list)
        and (state.data_order is None or isinstance(state.data_order, str))
        and isinstance(names, list)
        and all(isinstance(n, str) for n in names)
        and math.isfinite(scale)
        and scale > 0
    )


def _read_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    from safetensors import safe_open

    try:
        tensors = load_file(str(path))
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise InputError(f"{path}: corrupt checkpoint; delete it to start over ({exc})") from exc
    return tensors, meta


def _check_same_run(
    path: Path,
    saved: tuple[SAEConfig, dict[str, Any], dict[str, Any]],
    sae_cfg: SAEConfig,
    cfg: TrainConfig,
    fingerprint: dict[str, Any],
) -> None:
    saved_sae, saved_train, saved_data = saved
    # The data first: other data also changes the SAE settings that record where the
    # embeddings came from (model, modality), and "different SAE settings" would mislead.
    _check_same_data(path, saved_data, fingerprint)
    if saved_sae != sae_cfg:
        raise InputError(
            f"{path}: checkpoint was made with different SAE settings; use the same flags or delete it"
        )
    if saved_train != resume_relevant(cfg):
        raise InputError(
            f"{path}: checkpoint was made with different training settings; use the same flags or delete it"
        )


def _check_same_data(path: Path, saved_data: dict[str, Any], fingerprint: dict[str, Any]) -> None:
    # Older checkpoints name their data by path only (as given: resolved here, from the same
    # working directory, to compare with today's absolute path).
    if "content" in saved_data:
        differs = saved_data["content"] != fingerprint.get("content")
    else:
        saved = {**saved_data, "path": os.path.abspath(str(saved_data.get("path")))}
        differs = any(saved.get(k) != fingerprint.get(k) for k in ("path", "count", "dim"))
    if differs:
        raise InputError(
            f"{path}: checkpoint was made on different embeddings (then at "
            f"{saved_data.get('path')}, {saved_data.get('count')} rows)"
        )
