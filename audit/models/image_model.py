"""The user's image model: a TorchScript or ``torch.export`` file, loaded and called safely.

The model takes float32 images ``[B, 3, H, W]`` with values in [0, 1] (it normalises them
itself, as a deployed model does) and returns one score per image (``[B]`` or ``[B, 1]``: a
logit or a probability of the positive class) or two class scores (``[B, 2]``).

* **TorchScript** (``.pt``, ``.pth``, ``.ts``, ``.jit``, ``.torchscript``): loaded with
  :func:`torch.jit.load`.
* **torch.export** (``.pt2``): loaded with :func:`torch.export.load`. An exported program may
  have a fixed batch size or image size (unless it was exported with dynamic shapes); both are
  read from the file and respected — the last batch is padded, and the image size becomes the
  default.

Both formats are *code* (and ``torch.export.load`` unpickles parts of the archive): only pass
files you would run yourself. Every failure — an unreadable file, a model that raises, an output
of the wrong shape or with NaN/inf — is one :class:`~audit.errors.InputError` line.
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from audit.errors import InputError, first_line
from audit.fileio import file_sha256

#: File endings read as TorchScript (the same as the embedding classifiers').
TORCHSCRIPT_SUFFIXES = (".pt", ".pth", ".ts", ".jit", ".torchscript")

EXPORT_SUFFIXES = (".pt2",)
FORMATS = ("torchscript", "torch.export")


@dataclass
class ImageModel:
    """A loaded image model; :meth:`scores` runs it on one batch and checks what it returned."""

    module: Callable[[Tensor], Any]
    format: str  # "torchscript" | "torch.export"
    source: str
    sha256: str
    fixed_batch: int | None = None  # an exported program's static batch size
    fixed_size: tuple[int, int] | None = None  # an exported program's static (H, W)
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    def to(self, device: torch.device | str) -> ImageModel:
        device = torch.device(device)
        if device != self.device:
            try:
                self.module = self.module.to(device)  # type: ignore[attr-defined]
            except Exception as exc:  # an exported program may refuse to move
                raise InputError(
                    f"{self.source}: cannot move the model to {device} ({first_line(exc)})"
                ) from exc
            self.device = device
        return self

    def scores(self, images: Tensor) -> np.ndarray:
        """Scores of a batch ``[B, 3, H, W]``: float64 ``[B]`` (one output) or ``[B, 2]``."""
        n = images.shape[0]
        try:
            with torch.inference_mode():
                out = self.module(images.to(self.device, torch.float32, non_blocking=True))
        except InputError:
            raise
        except Exception as exc:  # the model's own code failed; say where, not how
            raise InputError(
                f"{self.source}: the model failed on a batch of shape {list(images.shape)} "
                f"({model_error(exc)}); it must take float32 [B, 3, H, W] images in [0, 1] "
                "(set --image-size to the size it expects)"
            ) from exc
        if isinstance(out, (tuple, list)) and len(out) == 1:
            out = out[0]
        if not isinstance(out, Tensor):
            raise InputError(
                f"{self.source}: the model returned {type(out).__name__}, not a tensor of scores"
            )
        shape = list(out.shape)
        if out.ndim == 2 and out.shape[1] == 1:
            out = out[:, 0]
        # ndim first: a 0-d tensor (a model that sums its batch) has no shape[0] to compare.
        if not (out.ndim == 1 or (out.ndim == 2 and out.shape[1] == 2)) or out.shape[0] != n:
            raise InputError(
                f"{self.source}: the model returned shape {shape} for a batch of {n} images; "
                "expected [B], [B, 1] or [B, 2] scores"
            )
        return out.detach().to("cpu", torch.float64).numpy()

    def describe(self) -> dict[str, Any]:
        return {
            "format": self.format,
            "path": self.source,
            "sha256": self.sha256,
            "fixed_batch": self.fixed_batch,
            "fixed_size": list(self.fixed_size) if self.fixed_size else None,
        }


def model_error(exc: BaseException) -> str:
    """``Type: message`` of an error raised inside the model. TorchScript wraps it in a
    multi-line report whose last line names the original error."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    if lines and "TorchScript interpreter" in lines[0]:
        return lines[-1].removeprefix("builtins.")[:200]
    return f"{type(exc).__name__}: {first_line(exc, 160)}"


def _sentence(exc: BaseException) -> str:
    """The first sentence of a loader's message (torch's run on for several)."""
    return first_line(exc).split(". ")[0].rstrip(".")


def load_image_model(path: str | os.PathLike[str]) -> ImageModel:
    """An :class:`ImageModel` from a TorchScript or ``torch.export`` (``.pt2``) file, on CPU."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"image model not found: {p}")
    if p.is_dir():
        raise InputError(f"image model {p} is a folder, not a file")
    suffix = p.suffix.lower()
    if suffix in EXPORT_SUFFIXES:
        return _load_exported(p)
    if suffix in TORCHSCRIPT_SUFFIXES:
        return _load_torchscript(p)
    raise InputError(
        f"{p}: unknown image-model format; use TorchScript ({', '.join(TORCHSCRIPT_SUFFIXES)}) "
        f"or torch.export ({', '.join(EXPORT_SUFFIXES)})"
    )


def _load_torchscript(p: Path) -> ImageModel:
    try:
        with warnings.catch_warnings():
            # torch >= 2.9 marks torch.jit.load deprecated; the error line stays the only line.
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            module = torch.jit.load(str(p), map_location="cpu")
    except Exception as exc:  # RuntimeError, ValueError, OSError, zip errors …
        if is_torch_checkpoint(p):
            raise InputError(f"{p}: {CHECKPOINT_PROBLEM}") from exc
        hint = " (a torch.export program? name it .pt2)" if _is_pt2_archive(p) else ""
        raise InputError(f"{p}: not a TorchScript module{hint} ({_sentence(exc)})") from exc
    module.eval()
    return ImageModel(module, "torchscript", str(p), file_sha256(p))


def _load_exported(p: Path) -> ImageModel:
    try:
        with _quiet_torch_export():
            program = torch.export.load(str(p))
        module = program.module()
    except Exception as exc:  # RuntimeError, BadZipFile, KeyError from a damaged archive …
        raise InputError(f"{p}: not a torch.export program ({_sentence(exc)})") from exc
    batch, size = _static_input_shape(program, p)
    return ImageModel(module, "torch.export", str(p), file_sha256(p), batch, size)


def _static_input_shape(
    program: torch.export.ExportedProgram, p: Path
) -> tuple[int | None, tuple[int, int] | None]:
    """The fixed batch size and (H, W) of an exported program's one image input, if fixed."""
    names = list(program.graph_signature.user_inputs)
    if len(names) != 1:
        raise InputError(
            f"{p}: the exported model takes {len(names)} inputs; expected one image batch"
        )
    node = next(
        (n for n in program.graph.nodes if n.op == "placeholder" and n.name == names[0]), None
    )
    value = None if node is None else node.meta.get("val")
    shape = getattr(value, "shape", None)
    if shape is None:
        return None, None
    if len(shape) != 4 or not (isinstance(shape[1], int) and shape[1] == 3):
        raise InputError(
            f"{p}: the exported model takes input of shape {list(shape)}; expected [B, 3, H, W]"
        )
    batch = shape[0] if isinstance(shape[0], int) else None
    height, width = shape[2], shape[3]
    size = (height, width) if isinstance(height, int) and isinstance(width, int) else None
    return batch, size


@contextlib.contextmanager
def _quiet_torch_export() -> Iterator[None]:
    """torch.export.load logs a traceback before raising; the error line is enough."""
    logger = logging.getLogger("torch.export")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


#: What a ``torch.save`` file given as a model is, and what to give instead.
CHECKPOINT_PROBLEM = (
    "not a TorchScript module but a torch.save checkpoint (a pickled model or a state dict), "
    "which is never unpickled; save the model as code with torch.jit.script or torch.jit.trace "
    "(.pt) or torch.export (.pt2)"
)

# The first bytes of a torch.save file written with _use_new_zipfile_serialization=False:
# a pickle (protocol 2) of torch's magic number.
_LEGACY_TORCH_SAVE = b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19"


def is_torch_checkpoint(p: Path) -> bool:
    """Whether ``p`` is a ``torch.save`` file — a zip archive with a pickle (``data.pkl``) and
    none of TorchScript's code (``constants.pkl``), or the legacy pickle format. Read from the
    archive's names and first bytes only; nothing is unpickled. Such a file is what users
    most often give for "my model": it loads only with its Python class, as code we never run.
    """
    import zipfile

    try:
        with zipfile.ZipFile(p) as archive:
            names = [name.split("/", 1)[-1] for name in archive.namelist()]
    except (zipfile.BadZipFile, OSError):
        try:
            with open(p, "rb") as fh:
                return fh.read(len(_LEGACY_TORCH_SAVE)) == _LEGACY_TORCH_SAVE
        except OSError:
            return False
    return "data.pkl" in names and "constants.pkl" not in names


def _is_pt2_archive(p: Path) -> bool:
    import zipfile

    try:
        with zipfile.ZipFile(p) as archive:
            return any(name.endswith("archive_format") for name in archive.namelist())
    except (zipfile.BadZipFile, OSError):
        return False
