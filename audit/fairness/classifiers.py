"""The classifiers an audit can examine, reduced to one binary decision margin.

* ``probe`` — a logistic-regression probe fit on the train split (:func:`fit_probe`),
* a **linear head** — ``.safetensors`` or ``.npz`` holding ``weight [C, d]`` and ``bias [C]``
  (C = 1: a logit; C = 2: two class scores) acting on raw embeddings, or on L2-normalised ones
  with ``input="l2"``,
* a **TorchScript** module (``.pt``, ``.pth``, ``.ts``, ``.jit``, ``.torchscript``) mapping
  ``[B, d]`` embeddings to ``[B]``, ``[B, 1]`` or ``[B, 2]`` outputs. TorchScript is *code*: it is
  loaded with :func:`torch.jit.load` and runs whatever the file contains, so only pass files you
  would run yourself. Nothing else is ever unpickled.

Every classifier exposes ``margin(x)``: a score whose sign is the decision (``> 0`` predicts the
positive class; for two outputs, score₁ − score₀). The audit only needs the sign and, for linear
heads, the closed form of how the margin moves when an embedding is edited.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from audit.errors import InputError, first_line

LINEAR_SUFFIXES = (".safetensors", ".npz")
TORCHSCRIPT_SUFFIXES = (".pt", ".pth", ".ts", ".jit", ".torchscript")
INPUT_KINDS = ("raw", "l2")


def file_sha256(path: str | os.PathLike[str], chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return "sha256:" + digest.hexdigest()


def l2_normalize(x: Tensor) -> Tensor:
    return x / x.norm(dim=1, keepdim=True).clamp_min(torch.finfo(x.dtype).tiny)


@dataclass
class LinearHead:
    """``margin(x) = w · x̄ + b`` with ``x̄ = x`` (raw) or ``x / ‖x‖`` (l2)."""

    weight: Tensor  # [d]
    bias: float
    input: str = "raw"
    kind: str = "linear"
    source: str | None = None
    sha256: str | None = None

    @property
    def l2(self) -> bool:
        return self.input == "l2"

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> LinearHead:
        self.weight = self.weight.to(device=device, dtype=dtype or self.weight.dtype)
        return self

    def margin(self, x: Tensor) -> Tensor:
        w = self.weight.to(x.dtype)
        if self.l2:
            return (x @ w) / x.norm(dim=1).clamp_min(torch.finfo(x.dtype).tiny) + self.bias
        return x @ w + self.bias

    def describe(self) -> dict:
        return {
            "kind": "linear" if self.kind == "linear" else self.kind,
            "input": self.input,
            "path": self.source,
            "sha256": self.sha256,
            "weight_norm": float(self.weight.norm()),
        }


class ScriptedClassifier:
    """A TorchScript module, evaluated by decode-and-rerun."""

    kind = "torchscript"

    def __init__(self, module: torch.jit.ScriptModule, input: str, source: str, sha256: str):
        self.module = module
        self.input = input
        self.source = source
        self.sha256 = sha256

    @property
    def l2(self) -> bool:
        return self.input == "l2"

    def to(
        self, device: torch.device | str, dtype: torch.dtype | None = None
    ) -> ScriptedClassifier:
        self.module = self.module.to(device)
        return self

    def margin(self, x: Tensor) -> Tensor:
        inp = l2_normalize(x) if self.l2 else x
        out = self.module(inp.to(torch.float32))
        if not isinstance(out, Tensor):
            raise InputError(f"{self.source}: the TorchScript module must return a tensor")
        out = out.to(x.dtype)
        if out.ndim == 2 and out.shape[1] == 2:
            return out[:, 1] - out[:, 0]
        if out.ndim == 2 and out.shape[1] == 1:
            return out[:, 0]
        if out.ndim == 1 and out.shape[0] == x.shape[0]:
            return out
        raise InputError(
            f"{self.source}: the TorchScript module returned shape {list(out.shape)} for a batch "
            f"of {x.shape[0]}; expected [B], [B, 1] or [B, 2]"
        )

    def describe(self) -> dict:
        return {
            "kind": "torchscript",
            "input": self.input,
            "path": self.source,
            "sha256": self.sha256,
        }


Classifier = LinearHead | ScriptedClassifier


def _check_input_kind(input: str) -> str:
    if input not in INPUT_KINDS:
        raise InputError(f"--classifier-input must be raw or l2, got {input!r}")
    return input


def load_classifier(path: str | os.PathLike[str], dim: int, input: str = "raw") -> Classifier:
    """A linear head (``.safetensors`` / ``.npz``) or a TorchScript module from a file."""
    input = _check_input_kind(input)
    p = Path(path)
    if not p.exists():
        raise InputError(f"classifier not found: {p}")
    suffix = p.suffix.lower()
    if suffix in LINEAR_SUFFIXES:
        return _load_linear(p, dim, input)
    if suffix in TORCHSCRIPT_SUFFIXES:
        try:
            with warnings.catch_warnings():
                # torch >= 2.9 marks torch.jit.load deprecated; the error line stays the only line.
                warnings.simplefilter("ignore", FutureWarning)
                warnings.simplefilter("ignore", DeprecationWarning)
                module = torch.jit.load(str(p), map_location="cpu")
        except (RuntimeError, ValueError, OSError) as exc:
            raise InputError(f"{p}: not a TorchScript module ({first_line(exc)})") from exc
        module.eval()
        return ScriptedClassifier(module, input, str(p), file_sha256(p))
    raise InputError(
        f"{p}: unknown classifier format; use 'probe', a linear head "
        f"({', '.join(LINEAR_SUFFIXES)}) or a TorchScript file ({', '.join(TORCHSCRIPT_SUFFIXES)})"
    )


def _load_linear(p: Path, dim: int, input: str) -> LinearHead:
    try:
        if p.suffix.lower() == ".npz":
            with np.load(p, allow_pickle=False) as data:
                tensors = {k: np.asarray(data[k]) for k in data.files}
        else:
            from safetensors.numpy import load_file

            tensors = load_file(str(p))
    except (ValueError, OSError, EOFError) as exc:
        raise InputError(f"{p}: unreadable linear head ({type(exc).__name__})") from exc
    except Exception as exc:  # safetensors raises its own error type
        raise InputError(f"{p}: unreadable linear head ({type(exc).__name__})") from exc
    if "weight" not in tensors or "bias" not in tensors:
        raise InputError(f"{p}: a linear head needs 'weight' [C, d] and 'bias' [C]")
    weight = np.asarray(tensors["weight"], dtype=np.float64)
    bias = np.asarray(tensors["bias"], dtype=np.float64).reshape(-1)
    if weight.ndim == 1:
        weight = weight[None, :]
    if weight.ndim != 2 or weight.shape[1] != dim:
        raise InputError(
            f"{p}: weight has shape {list(weight.shape)}, expected [C, {dim}] for these embeddings"
        )
    c = weight.shape[0]
    if c not in (1, 2) or bias.shape != (c,):
        raise InputError(
            f"{p}: expected a binary head (C = 1 or 2) with bias [C]; got weight "
            f"{list(weight.shape)}, bias {list(bias.shape)}"
        )
    if not (np.isfinite(weight).all() and np.isfinite(bias).all()):
        raise InputError(f"{p}: the head contains NaN or inf")
    if c == 2:
        w, b = weight[1] - weight[0], bias[1] - bias[0]
    else:
        w, b = weight[0], bias[0]
    return LinearHead(
        torch.from_numpy(w.astype(np.float32)), float(b), input, "linear", str(p), file_sha256(p)
    )


def fit_probe(
    x: np.ndarray, y: np.ndarray, input: str = "raw", seed: int = 0, c: float = 1.0
) -> LinearHead:
    """A logistic-regression probe (scikit-learn, L2 penalty ``C``) fit on standardised features.

    Standardisation only helps the optimiser: the fitted weights are folded back so the head acts
    on raw (or L2-normalised) embeddings, ``w_raw = w / σ`` and ``b_raw = b − Σ w μ / σ``.
    """
    from sklearn.linear_model import LogisticRegression

    input = _check_input_kind(input)
    if len(np.unique(y)) < 2:
        raise InputError("the probe's train split holds only one target class")
    feats = np.asarray(x, dtype=np.float64)
    if input == "l2":
        feats = feats / np.maximum(np.linalg.norm(feats, axis=1, keepdims=True), 1e-30)
    mu = feats.mean(0)
    sigma = feats.std(0)
    sigma[sigma < 1e-12] = 1.0
    model = LogisticRegression(C=c, max_iter=1000, random_state=seed)
    model.fit((feats - mu) / sigma, y)
    w = model.coef_[0] / sigma
    b = float(model.intercept_[0] - (w * mu).sum())
    head = LinearHead(torch.from_numpy(w.astype(np.float32)), b, input, "probe")
    return head
