"""The paper's reference code (github.com/WolodjaZ/MSAE): its ``.pt`` checkpoints read safely.

A reference file is read with ``torch.load(weights_only=True)``, which refuses anything but
tensors and plain data; its architecture is parsed from the file name the way that code names
its files, and every entry is checked (a tensor, a finite number) before it is used.
"""

from __future__ import annotations

import os
import pickle
import re
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from audit.errors import InputError, first_line
from audit.sae.base import SAEConfig, SparseAutoencoder
from audit.sae.checkpoint import model_from_tensors, save_sae
from audit.sae.matryoshka import matryoshka_k_list

_REF_NAME = re.compile(r"^(?P<n>\d+)_(?P<d>\d+)_(?P<rest>.+)$")


def parse_reference_name(filename: str) -> dict[str, Any]:
    """Architecture settings from a reference checkpoint's file name.

    The reference code saves ``{n}_{d}_{activation}[_{k or l1 digits}][_UW|_RW]_{tied}_{normalize}
    _{soft_cap}_{dataset}.pth``.

    >>> parse_reference_name("6144_768_TopKReLU_64_UW_False_False_0.0_cc3m.pth")["arch"]
    'matryoshka'
    >>> parse_reference_name("6144_768_ReLU_003_False_False_0.0_cc3m.pth")["l1"]
    0.003
    """
    stem = Path(filename).name
    stem = re.sub(r"\.pth?$", "", stem)
    m = _REF_NAME.match(stem)
    if not m:
        raise InputError(
            f"{filename}: not a reference checkpoint name ('<n>_<d>_<activation>_..._<dataset>.pt')"
        )
    n, d = int(m["n"]), int(m["d"])
    parts = m["rest"].split("_")
    activation = parts.pop(0)
    settings: dict[str, Any] = {"n_latents": n, "d_in": d, "activation": activation}
    if "JumpReLU" in activation or "abs" in activation:
        raise InputError(
            f"{filename}: activation {activation} is not supported (use TopKReLU, BatchTopKReLU or ReLU)"
        )
    if "TopK" in activation:
        if not activation.endswith("ReLU"):
            raise InputError(
                f"{filename}: activation {activation} has no ReLU; only *ReLU variants are supported"
            )
        try:
            k = int(parts.pop(0))
        except (IndexError, ValueError) as exc:
            raise InputError(f"{filename}: missing k after {activation}") from exc
        if parts and parts[0] in ("UW", "RW"):
            settings.update(arch="matryoshka", k_min=k, weighting=parts.pop(0).lower())
        elif activation.startswith("BatchTopK"):
            settings.update(arch="batchtopk", k=k)
        else:
            settings.update(arch="topk", k=k)
    elif activation == "ReLU":
        digits = parts.pop(0) if parts and parts[0].isdigit() else "0"
        settings.update(arch="relu", l1=float(f"0.{digits}"))
    else:
        raise InputError(f"{filename}: unknown activation {activation!r}")
    try:
        settings["tied"] = parts.pop(0) == "True"
        settings["normalize"] = parts.pop(0) == "True"
        settings["soft_cap"] = float(parts.pop(0))
    except (IndexError, ValueError) as exc:
        raise InputError(
            f"{filename}: cannot read tied/normalize/soft-cap fields from the name"
        ) from exc
    settings["dataset"] = "_".join(parts) or None
    settings.update(_reference_embedding_model(parts))
    return settings


#: The CLIP models the reference code embeds with (OpenAI's ``clip`` package, ``/`` written as
#: ``~`` in file names) as open_clip names: OpenAI's weights use QuickGELU, which open_clip's
#: plain ``ViT-L-14`` config does not, so the ``-quickgelu`` variants reproduce their embeddings.
REFERENCE_CLIP_MODELS = {
    "RN50": "RN50-quickgelu",
    "ViT-B~32": "ViT-B-32-quickgelu",
    "ViT-B~16": "ViT-B-16-quickgelu",
    "ViT-L~14": "ViT-L-14-quickgelu",
}


def _reference_embedding_model(dataset_parts: list[str]) -> dict[str, Any]:
    """The CLIP model and modality a reference file name records in its data set part
    (``cc3m_ViT-L~14_train_image_2905936_768``); nothing when it names none."""
    models = [REFERENCE_CLIP_MODELS[p] for p in dataset_parts if p in REFERENCE_CLIP_MODELS]
    if not models:
        return {}
    modality = next((p for p in dataset_parts if p in ("image", "text")), None)
    return {"embedding_model": models[0], "pretrained": "openai", "modality": modality}


def _torch_load_weights_only(path: Path) -> Any:
    # numpy scalars/dtypes are plain data (the reference stores its target norm as one); allow
    # exactly those, nothing that can run code.
    import importlib

    safe: list[Any] = [np.dtype]
    for module_name in ("numpy._core.multiarray", "numpy.core.multiarray"):
        try:
            safe.append(importlib.import_module(module_name).scalar)
            break
        except (ImportError, AttributeError):
            continue
    for name in ("Float64DType", "Float32DType"):
        if hasattr(np, "dtypes") and hasattr(np.dtypes, name):
            safe.append(getattr(np.dtypes, name))
    try:
        with torch.serialization.safe_globals(safe), warnings.catch_warnings():
            # torch warns about a legacy file's pickle protocol before refusing or reading it;
            # the outcome (or the one error line) says all the user needs.
            warnings.simplefilter("ignore", UserWarning)
            return torch.load(str(path), map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, AttributeError, TypeError) as exc:
        if _damaged_archive(exc):
            raise _corrupt(path, exc) from exc
        raise InputError(
            f"{path}: refused to load: the file needs code to unpickle (only tensors and plain data "
            f"are read; weights_only=True) or is not a PyTorch checkpoint ({first_line(exc)})"
        ) from exc
    except (EOFError, OSError, ValueError, KeyError, IndexError, MemoryError, OverflowError) as exc:
        # A damaged pickle stream fails inside torch's restricted unpickler with whatever its
        # bookkeeping hits first (a missing memo key, an empty stack): found by fuzzing.
        raise _corrupt(path, exc) from exc


def _damaged_archive(exc: BaseException) -> bool:
    """Whether torch failed reading the zip container itself (truncated, bad CRC, missing
    records): damage, not a pickle its restricted unpickler refused."""
    return isinstance(exc, RuntimeError) and "PytorchStreamReader" in str(exc)


def _corrupt(path: Path, exc: BaseException) -> InputError:
    # torch's reader messages run on for several sentences; the first names the damage.
    reason = first_line(exc).split(". ")[0]
    return InputError(f"{path}: corrupt or truncated checkpoint ({reason})")


def load_reference_checkpoint(path: str | os.PathLike[str]) -> SparseAutoencoder:
    """Build one of our models from a reference ``.pt`` file (never executing pickled code)."""
    p = Path(path)
    settings = parse_reference_name(p.name)
    if settings["normalize"]:
        raise InputError(
            f"{p}: models trained with per-sample input normalisation are not supported"
        )
    blob = _torch_load_weights_only(p)
    if not isinstance(blob, dict) or "model" not in blob or not isinstance(blob["model"], dict):
        raise InputError(
            f"{p}: expected a dict with a 'model' state dict (the reference code's format)"
        )
    state = {key: _state_tensor(p, blob["model"], key) for key in _REF_STATE}
    encoder = state["encoder"]
    decoder = state["decoder"]
    if settings["tied"] or decoder is None:
        decoder = encoder.T
    cfg = _reference_config(p.name, settings)
    tensors = {
        "W_enc": encoder.float(),
        "b_enc": state["latent_bias"].float(),
        "W_dec": decoder.float(),
        "b_pre": state["pre_bias"].float(),
        "mean": _reference_mean(p, blob.get("mean_center", 0.0), cfg.d_in),
        "scale": _reference_scale(p, blob.get("scaling_factor", 1.0)),
    }
    if cfg.arch == "batchtopk":
        # The reference has no inference threshold; its batch-independent code is ReLU(pre).
        tensors["threshold"] = torch.zeros(())
    return model_from_tensors(cfg, tensors, str(p))


def _reference_config(name: str, settings: dict[str, Any]) -> SAEConfig:
    """Our config of a reference checkpoint, from the settings its file ``name`` spells."""
    n, arch = settings["n_latents"], settings["arch"]
    return SAEConfig(
        arch=arch,
        d_in=settings["d_in"],
        n_latents=n,
        k=settings.get("k"),
        k_list=matryoshka_k_list(n, settings["k_min"]) if arch == "matryoshka" else None,
        weighting=settings.get("weighting", "uw"),
        l1=settings.get("l1"),
        soft_cap=settings["soft_cap"],
        embedding_model=settings.get("embedding_model"),
        pretrained=settings.get("pretrained"),
        modality=settings.get("modality"),
        extra={"imported_from": name, "reference_activation": settings["activation"]},
    )


#: The reference state dict's tensors (``decoder`` is optional: tied models have none).
_REF_STATE = ("encoder", "latent_bias", "pre_bias", "decoder")


def _state_tensor(p: Path, state: dict[str, Any], key: str) -> torch.Tensor | None:
    """``state[key]`` when it is a real-valued tensor; anything else (a list, a string, a
    complex tensor, which ``.float()`` would silently make real) is one line."""
    value = state.get(key)
    if value is None and key == "decoder":
        return None
    if value is None:
        raise InputError(f"{p}: reference state dict has no '{key}'")
    if not isinstance(value, torch.Tensor):
        raise InputError(
            f"{p}: reference state dict entry '{key}' must be a tensor, got {type(value).__name__}"
        )
    if value.is_complex():
        raise InputError(f"{p}: reference state dict entry '{key}' is complex ({value.dtype})")
    return value


def _is_number(value: Any) -> bool:
    """A real Python or NumPy number (``bool`` is an ``int`` but no number here)."""
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(
        value, (bool, np.bool_)
    )


def _reference_mean(p: Path, mean: Any, d: int) -> torch.Tensor:
    """The reference's ``mean_center`` (a number or a [d] vector) as a float32 [d] tensor;
    its shape and finiteness are checked with the other tensors."""
    if _is_number(mean):
        return torch.tensor(float(mean)).expand(d)  # a view: d comes from the file name
    if _is_real_tensor(mean):
        mean = mean.float()
        return mean.expand(d) if mean.ndim == 0 else mean
    shown = f"a {mean.dtype} tensor" if _is_tensor(mean) else repr(mean)[:40]
    raise InputError(f"{p}: mean_center must be a number or a tensor, got {shown}")


def _reference_scale(p: Path, scale: Any) -> torch.Tensor:
    """The reference's ``scaling_factor`` (a number or a one-number tensor) as a 0-d tensor;
    it must be finite and positive, which is checked with the other tensors."""
    if _is_number(scale):
        return torch.tensor(float(scale))
    if _is_real_tensor(scale) and scale.numel() == 1:
        return scale.float().reshape(())
    shown = f"a tensor of shape {list(scale.shape)}" if _is_tensor(scale) else repr(scale)[:40]
    raise InputError(f"{p}: scaling_factor must be a number, got {shown}")


def _is_tensor(value: Any) -> bool:
    return isinstance(value, torch.Tensor)


def _is_real_tensor(value: Any) -> bool:
    return _is_tensor(value) and not value.is_complex() and value.dtype != torch.bool


def convert_reference(path: str | os.PathLike[str], out_dir: str | os.PathLike[str]) -> Path:
    """Convert a reference ``.pt`` checkpoint into our directory format."""
    return save_sae(load_reference_checkpoint(path), out_dir)
