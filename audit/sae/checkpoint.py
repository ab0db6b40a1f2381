"""SAE files: sae.safetensors + config.json (+ training.json); the reference code's .pt files.

A model is a directory with ``sae.safetensors`` (``W_enc [d, n]``, ``b_enc [n]``, ``W_dec [n, d]``,
``b_pre [d]``, ``mean [d]``, ``scale []`` and, for ``batchtopk``, ``threshold [] or [n]``) and
``config.json``. Loading never unpickles: safetensors only. A ``.pt``/``.pth`` file from the
paper's reference code (github.com/WolodjaZ/MSAE) is read by :mod:`audit.sae.reference`.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from audit.errors import InputError, first_line
from audit.fileio import ensure_dir, read_json, write_json, write_safetensors
from audit.sae.base import SAEConfig, SparseAutoencoder
from audit.sae.registry import build_sae

WEIGHTS_FILE = "sae.safetensors"
CONFIG_FILE = "config.json"
_CORE_TENSORS = ("W_enc", "b_enc", "W_dec", "b_pre", "mean", "scale")


def model_tensors(model: SparseAutoencoder) -> dict[str, torch.Tensor]:
    tensors = {
        name: getattr(model, name).detach().to("cpu", torch.float32).contiguous()
        for name in _CORE_TENSORS
    }
    if model.cfg.arch == "batchtopk":
        tensors["threshold"] = model.threshold.detach().to("cpu", torch.float32).contiguous()
    return tensors


def save_sae(model: SparseAutoencoder, out_dir: str | os.PathLike[str]) -> Path:
    """Write ``sae.safetensors`` and ``config.json`` atomically into ``out_dir``."""
    out = ensure_dir(Path(out_dir))
    write_safetensors(
        out / WEIGHTS_FILE,
        model_tensors(model),
        metadata={"format": "msae-audit/sae", "arch": model.cfg.arch},
    )
    write_json(out / CONFIG_FILE, model.cfg.to_json())
    return out


def load_sae(path: str | os.PathLike[str], device: str | torch.device = "cpu") -> SparseAutoencoder:
    """Load a model directory (ours), a ``sae.safetensors`` file, a reference ``.pt`` file, or
    any of these on the Hugging Face Hub as ``hf:OWNER/REPO[/PATH][@REVISION]``."""
    from audit.sae.hub import is_hub_ref, resolve_hub_sae
    from audit.sae.reference import load_reference_checkpoint  # it builds on this module

    p = resolve_hub_sae(str(path)) if is_hub_ref(path) else Path(path)
    if not p.exists():
        raise InputError(f"SAE not found: {p}")
    if p.is_file() and p.suffix in (".pt", ".pth"):
        model = load_reference_checkpoint(p)
    else:
        directory = p.parent if p.is_file() else p
        weights = p if p.is_file() else p / WEIGHTS_FILE
        if p.is_file() and p.suffix != ".safetensors":
            raise InputError(
                f"{p}: expected an SAE directory, a .safetensors file or a reference .pt file"
            )
        if not weights.exists():
            raise InputError(f"{directory} is not an SAE directory: {WEIGHTS_FILE} is missing")
        cfg = SAEConfig.from_json(
            read_json(directory / CONFIG_FILE, "SAE config"), str(directory / CONFIG_FILE)
        )
        model = model_from_tensors(cfg, _read_safetensors(weights), str(weights))
    model.eval()
    return model.to(device)


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise InputError(
            f"{path}: corrupt or truncated safetensors file ({first_line(exc)})"
        ) from exc


def model_from_tensors(
    cfg: SAEConfig, tensors: dict[str, torch.Tensor], source: str
) -> SparseAutoencoder:
    """The ``cfg`` model holding ``tensors``, checked against the config *before* the model is
    built: a config whose size disagrees with the weights (n_latents 10^12 in a hand-edited
    config.json) must not allocate a model of that size first."""
    expected = _expected_shapes(cfg, tensors, source)
    model = build_sae(cfg)
    with torch.no_grad():
        for name in expected:
            target = getattr(model, name)
            value = tensors[name].to(torch.float32)
            if name == "threshold" and value.shape != target.shape:
                model.threshold = value.clone()
            else:
                target.copy_(value)
    return model


def _expected_shapes(
    cfg: SAEConfig, tensors: dict[str, torch.Tensor], source: str
) -> dict[str, tuple[int, ...]]:
    """Each tensor's shape for ``cfg``, after checking that ``tensors`` have them and hold
    finite floating-point values."""
    d, n = cfg.d_in, cfg.n_latents
    expected = {
        "W_enc": (d, n),
        "b_enc": (n,),
        "W_dec": (n, d),
        "b_pre": (d,),
        "mean": (d,),
        "scale": (),
    }
    if cfg.arch == "batchtopk":
        expected["threshold"] = tuple(tensors["threshold"].shape) if "threshold" in tensors else ()
        if expected["threshold"] not in ((), (n,)):
            raise InputError(
                f"{source}: threshold must have shape [] or [{n}], got {list(expected['threshold'])}"
            )
    missing = [k for k in expected if k not in tensors]
    if missing:
        raise InputError(f"{source}: missing tensors {', '.join(missing)} for a {cfg.arch} SAE")
    for name, shape in expected.items():
        t = tensors[name]
        if tuple(t.shape) != shape:
            raise InputError(
                f"{source}: {name} has shape {list(t.shape)}, expected {list(shape)} "
                f"(d_in={d}, n_latents={n}: is this checkpoint for another model?)"
            )
        if not t.is_floating_point():
            raise InputError(f"{source}: {name} must be floating point, got {t.dtype}")
        if not torch.isfinite(t).all():
            raise InputError(f"{source}: {name} contains NaN or inf")
    if float(tensors["scale"]) <= 0:
        raise InputError(f"{source}: scale must be positive")
    return expected


def sae_fingerprint(model: SparseAutoencoder) -> str:
    """A content hash of the model's tensors and config: concept banks and reports record it so
    that a bank is never applied to a different SAE."""
    import hashlib
    import json

    digest = hashlib.sha256()
    digest.update(json.dumps(model.cfg.to_json(), sort_keys=True).encode())
    for name, tensor in sorted(model_tensors(model).items()):
        digest.update(name.encode())
        digest.update(tensor.numpy().tobytes())
    return "sha256:" + digest.hexdigest()[:32]
