"""TorchScript classifiers on embeddings (``.pt``, ``.pth``, ``.ts``, ``.jit``, ``.torchscript``):
a module mapping ``[B, d]`` embeddings to ``[B]``, ``[B, 1]`` or ``[B, 2]`` scores, audited by
decode-and-rerun.

TorchScript is *code*: :func:`torch.jit.load` runs whatever the file contains, so only pass
files you would run yourself. Nothing else is ever unpickled.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from audit.errors import InputError, first_line
from audit.fairness.classifiers.base import Classifier
from audit.fileio import file_sha256
from audit.models.image_model import CHECKPOINT_PROBLEM, is_torch_checkpoint, model_error

SUFFIXES = (".pt", ".pth", ".ts", ".jit", ".torchscript")


def l2_normalize(x: Tensor) -> Tensor:
    return x / x.norm(dim=1, keepdim=True).clamp_min(torch.finfo(x.dtype).tiny)


class ScriptedClassifier(Classifier):
    """A TorchScript module; ``[B, 2]`` outputs give the margin score₁ − score₀."""

    kind = "torchscript"

    def __init__(self, module: torch.jit.ScriptModule, input: str, source: str, sha256: str):
        self.module = module
        self.input = input
        self.source = source
        self.sha256 = sha256

    def to(self, device: torch.device | str) -> ScriptedClassifier:
        return ScriptedClassifier(self.module.to(device), self.input, self.source, self.sha256)

    def margin(self, x: Tensor) -> Tensor:
        inp = l2_normalize(x) if self.l2 else x
        out = self._run(inp.to(torch.float32)).to(x.dtype)
        n = x.shape[0]
        if out.ndim == 2 and out.shape[1] in (1, 2) and out.shape[0] == n:
            out = out[:, 1] - out[:, 0] if out.shape[1] == 2 else out[:, 0]
        elif not (out.ndim == 1 and out.shape[0] == n):
            raise InputError(
                f"{self.source}: the TorchScript module returned shape {list(out.shape)} for a "
                f"batch of {n}; expected [B], [B, 1] or [B, 2]"
            )
        # A NaN margin has no sign (no decision): every later number would be NaN and the
        # audit would fail far from the cause, when its JSON is read back.
        if not bool(torch.isfinite(out).all()):
            raise InputError(
                f"{self.source}: the TorchScript module returned NaN or inf scores for a batch "
                f"of {n} embeddings"
            )
        return out

    def _run(self, inp: Tensor) -> Tensor:
        """The module's output on ``inp``; a failure inside its code is one line (TorchScript's
        own report is a multi-line traceback of the serialized code)."""
        try:
            out = self.module(inp)
        except Exception as exc:
            raise InputError(
                f"{self.source}: the TorchScript module failed on embeddings of shape "
                f"{list(inp.shape)} ({model_error(exc)}); it must map [B, d] embeddings to "
                "scores (if it reads images, pass --classifier-input image)"
            ) from exc
        if not isinstance(out, Tensor):
            raise InputError(f"{self.source}: the TorchScript module must return a tensor")
        return out

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "input": self.input, "path": self.source, "sha256": self.sha256}


def load_torchscript(p: Path, dim: int, input: str) -> ScriptedClassifier:
    try:
        with warnings.catch_warnings():
            # torch >= 2.9 marks torch.jit.load deprecated; the error line stays the only line.
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            module = torch.jit.load(str(p), map_location="cpu")
    except (RuntimeError, ValueError, OSError) as exc:
        if is_torch_checkpoint(p):
            raise InputError(f"{p}: {CHECKPOINT_PROBLEM}") from exc
        raise InputError(f"{p}: not a TorchScript module ({first_line(exc)})") from exc
    module.eval()
    return ScriptedClassifier(module, input, str(p), file_sha256(p))
