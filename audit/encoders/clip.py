"""Loading a CLIP model through open_clip (a name, a config JSON, a tag or a local checkpoint)."""

from __future__ import annotations

import atexit
import contextlib
import difflib
import hashlib
import json
import logging
import os
import shutil
import tempfile
import zipfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from audit.device import resolve_device
from audit.errors import InputError, first_line
from audit.hub import hub_access

PRECISIONS = ("auto", "fp32", "fp16", "bf16")


_CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".ckpt", ".npz")

ProgressCallback = Callable[[int, int], None]  # (rows done, rows total)


@dataclass
class ClipEncoder:
    """An open_clip model with its image transform and tokenizer, ready to embed."""

    model: torch.nn.Module
    preprocess: Callable[[Image.Image], torch.Tensor]
    tokenizer: Callable[[list[str]], torch.Tensor]
    model_id: str  # what stores and banks record as "model"
    pretrained: str | None  # what they record as "pretrained"
    device: torch.device
    precision: str  # "fp32" | "fp16" | "bf16" (autocast)
    embed_dim: int
    context_length: int
    info: dict[str, Any] = field(default_factory=dict)

    @contextlib.contextmanager
    def _autocast(self) -> Iterator[None]:
        if self.precision == "fp32":
            yield
            return
        dtype = torch.float16 if self.precision == "fp16" else torch.bfloat16
        with torch.autocast(self.device.type, dtype=dtype):
            yield

    @torch.no_grad()
    def encode_image_batch(self, images: torch.Tensor) -> np.ndarray:
        """Preprocessed images ``[B, 3, H, W]`` to raw float32 embeddings ``[B, d]``."""
        with self._autocast():
            features = self.model.encode_image(images.to(self.device, non_blocking=True))
        return features.float().cpu().numpy()

    @torch.no_grad()
    def encode_text_batch(self, texts: Sequence[str]) -> tuple[np.ndarray, int]:
        """Raw float32 embeddings of ``texts`` and how many filled the whole context
        (open_clip truncates longer texts silently)."""
        tokens = self.tokenizer(list(texts))
        full = int((tokens[:, -1] != 0).sum())
        with self._autocast():
            features = self.model.encode_text(tokens.to(self.device))
        return features.float().cpu().numpy(), full

    def encode_texts(
        self,
        texts: Sequence[str],
        batch_size: int = 256,
        normalize: bool = False,
        progress: ProgressCallback | None = None,
    ) -> np.ndarray:
        """All of ``texts`` in memory (for vocabularies and prompts)."""
        out = np.empty((len(texts), self.embed_dim), dtype=np.float32)
        for lo in range(0, len(texts), batch_size):
            out[lo : lo + batch_size], _ = self.encode_text_batch(texts[lo : lo + batch_size])
            if progress is not None:
                progress(min(lo + batch_size, len(texts)), len(texts))
        return l2_normalize(out) if normalize else out

    def manifest_fields(self) -> dict[str, Any]:
        """What a store records about the model beyond ``model`` and ``pretrained``."""
        return {"precision": self.precision, "context_length": self.context_length, **self.info}


def load_clip(
    model: str,
    pretrained: str | None,
    *,
    device: str = "auto",
    precision: str = "auto",
    allow_random_init: bool = False,
) -> ClipEncoder:
    """Load an open_clip model the way users name it on the command line (see module doc).

    ``allow_random_init`` lets ``pretrained=None`` build an untrained model (for training one).
    """
    import open_clip

    if not model or not str(model).strip():
        raise InputError("--model is required (an open_clip model name or a model-config JSON)")
    torch_device = resolve_device(device)
    precision = _resolve_precision(precision, torch_device)
    info: dict[str, Any] = {"open_clip_version": getattr(open_clip, "__version__", None)}
    name, model_id, preprocess_overrides = _resolve_model_name(str(model), info)
    schema_given = str(model).startswith(("hf-hub:", "local-dir:"))
    if pretrained is None and allow_random_init:
        checkpoint, pretrained_id = None, None
    else:
        checkpoint, pretrained_id = _resolve_pretrained(name, pretrained, schema_given, info)
    try:
        with _quiet_open_clip(), _weights_only_loads(), hub_access(name, checkpoint):
            clip, _, preprocess = open_clip.create_model_and_transforms(
                name,
                pretrained=checkpoint,
                device=torch_device,
                weights_only=True,
                **preprocess_overrides,
            )
            tokenizer = open_clip.get_tokenizer(name)
    except InputError:
        raise
    except (RuntimeError, ValueError, KeyError, OSError, TypeError) as exc:
        raise _model_error(str(model), pretrained, exc) from exc
    except Exception as exc:  # pickle / safetensors / zip errors from a damaged checkpoint
        raise _model_error(str(model), pretrained, exc) from exc
    clip.eval()
    embed_dim = _embed_dim(clip)
    context_length = int(getattr(tokenizer, "context_length", 0) or 0)
    return ClipEncoder(
        model=clip,
        preprocess=preprocess,
        tokenizer=tokenizer,
        model_id=model_id,
        pretrained=pretrained_id,
        device=torch_device,
        precision=precision,
        embed_dim=embed_dim,
        context_length=context_length,
        info=info,
    )


@contextlib.contextmanager
def _quiet_open_clip() -> Iterator[None]:
    # open_clip logs warnings on the root logger (e.g. "initialized randomly" while we train the
    # tiny CLIP) and errors just before it raises them; our own one-line errors say what
    # matters, so keep its log off the terminal.
    previous = logging.root.manager.disable
    logging.disable(logging.ERROR)
    try:
        yield
    finally:
        logging.disable(previous)


@contextlib.contextmanager
def _weights_only_loads() -> Iterator[None]:
    """Every ``torch.load`` inside open_clip reads weights only, whatever the environment says.

    open_clip retries ``torch.load`` without ``weights_only`` when the safe load raises
    ``TypeError`` (which a crafted pickle can make it do), and ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1``
    turns that retry into a full unpickling. ``--pretrained FILE`` is checked before open_clip
    sees it, but the weights of ``local-dir:`` folders and ``hf-hub:`` repositories are found
    by open_clip itself; torch's ``TORCH_FORCE_WEIGHTS_ONLY_LOAD`` covers those loads too.
    """
    names = ("TORCH_FORCE_WEIGHTS_ONLY_LOAD", "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD")
    saved = {name: os.environ.get(name) for name in names}
    os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = "1"
    os.environ.pop("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", None)  # both set is an error in torch
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _resolve_precision(precision: str, device: torch.device) -> str:
    precision = (precision or "auto").lower()
    if precision not in PRECISIONS:
        raise InputError(f"unknown precision {precision!r}; use {', '.join(PRECISIONS)}")
    if precision == "auto":
        if device.type != "cuda":
            return "fp32"  # CPU autocast rarely pays off for inference and changes the numbers
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if precision == "fp16" and device.type == "cpu":
        raise InputError("--precision fp16 needs a CUDA device (use bf16 or fp32 on CPU)")
    return precision


_CONFIG_DIR: Path | None = None


def _private_config_dir() -> Path:
    # open_clip finds model configs by name in registered folders; ours live in a process-private
    # folder so that a user's "ViT-B-32.json" can never shadow open_clip's own ViT-B-32.
    global _CONFIG_DIR
    if _CONFIG_DIR is None:
        _CONFIG_DIR = Path(tempfile.mkdtemp(prefix="msae-audit-open_clip-"))
        atexit.register(shutil.rmtree, _CONFIG_DIR, True)
    return _CONFIG_DIR


def _looks_like_path(text: str) -> bool:
    return text.endswith(".json") or os.sep in text or "/" in text


def _resolve_model_name(model: str, info: dict[str, Any]) -> tuple[str, str, dict[str, Any]]:
    """``(name to give open_clip, id to record, preprocessing overrides)``."""
    import open_clip

    if model.startswith(("hf-hub:", "local-dir:")):
        return model, model, {}
    path = Path(model)
    if not (_looks_like_path(model) or path.is_file()):
        if model.replace("/", "-") not in open_clip.list_models():
            close = difflib.get_close_matches(model, open_clip.list_models(), n=4, cutoff=0.6)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise InputError(
                f"unknown open_clip model {model!r} (not a built-in name and not a config file)"
                + hint
            )
        return model, model, {}
    if not path.is_file():
        raise InputError(f"model config not found: {path}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise InputError(f"model config {path} is not UTF-8 text") from exc
    except json.JSONDecodeError as exc:
        raise InputError(f"model config {path} is not valid JSON (line {exc.lineno})") from exc
    except OSError as exc:
        raise InputError(f"cannot read model config {path}: {exc.strerror}") from exc
    preprocess_cfg: dict[str, Any] = {}
    if isinstance(data, dict) and isinstance(data.get("model_cfg"), dict):
        preprocess_cfg = data.get("preprocess_cfg") or {}
        data = data["model_cfg"]
    if not isinstance(data, dict) or not all(
        k in data for k in ("embed_dim", "vision_cfg", "text_cfg")
    ):
        raise InputError(
            f"{path} is not an open_clip model config (needs embed_dim, vision_cfg and text_cfg)"
        )
    text = json.dumps(data, sort_keys=True)
    digest = hashlib.sha256(text.encode()).hexdigest()
    name = f"msae-audit-{digest[:16]}"
    target = _private_config_dir() / f"{name}.json"
    if not target.exists():
        target.write_text(text, encoding="utf-8")
        open_clip.add_model_config(target)
    info["model_config_sha256"] = digest
    overrides = {
        key: preprocess_cfg[src]
        for src, key in (
            ("mean", "image_mean"),
            ("std", "image_std"),
            ("interpolation", "image_interpolation"),
            ("resize_mode", "image_resize_mode"),
        )
        if src in preprocess_cfg
    }
    return name, str(path.resolve()), overrides


def _resolve_pretrained(
    name: str, pretrained: str | None, schema_given: bool, info: dict[str, Any]
) -> tuple[str | None, str | None]:
    """``(value for open_clip, value to record)`` for ``--pretrained``."""
    import open_clip

    if schema_given:
        if name.startswith("local-dir:"):
            _refuse_unsafe_folder(Path(name.removeprefix("local-dir:")), name)
        return None, None  # hf-hub:/local-dir: bring their own weights
    if pretrained is None or not str(pretrained).strip():
        raise InputError(
            "--pretrained is required: an open_clip tag (e.g. openai, laion2b_s34b_b79k) "
            "or a local checkpoint file"
        )
    text = str(pretrained)
    path = Path(text)
    if path.is_file():
        info["checkpoint_bytes"] = path.stat().st_size
        if path.suffix.lower() != ".safetensors":
            _refuse_unsafe_checkpoint(path)
        return str(path), str(path.resolve())
    if path.is_dir():
        raise InputError(f"--pretrained {text} is a folder; give the checkpoint file inside it")
    tags = open_clip.list_pretrained_tags_by_model(name)
    if text in tags or text.lower() in tags:
        _check_activation(name, text if text in tags else text.lower())
        return text, text  # fetched from the Hub or its cache (audit.hub)
    if _looks_like_path(text) or text.endswith(_CHECKPOINT_SUFFIXES):
        raise InputError(f"checkpoint not found: {path}")
    known = f"; known tags for {name}: {', '.join(tags)}" if tags else ""
    raise InputError(f"--pretrained {text!r} is neither a checkpoint file nor a known tag{known}")


def _check_activation(name: str, tag: str) -> None:
    """Refuse weights trained with another activation than the config builds.

    open_clip builds plain ``ViT-L-14`` with GELU and, given OpenAI's QuickGELU-trained weights,
    loads them anyway with only a warning: every embedding then differs from that CLIP's.
    """
    import open_clip

    trained = bool(open_clip.get_pretrained_cfg(name, tag).get("quick_gelu", False))
    built = bool((open_clip.get_model_config(name) or {}).get("quick_gelu", False))
    if trained == built:
        return
    activation = {True: "QuickGELU", False: "GELU"}
    other = f"{name}-quickgelu" if trained else name.removesuffix("-quickgelu")
    fix = f"; use --model {other}" if other in open_clip.list_models() else ""
    raise InputError(
        f"--pretrained {tag} was trained with {activation[trained]} but --model {name} builds "
        f"{activation[built]}, so every embedding would differ from that CLIP's{fix}"
    )


def _refuse_unsafe_folder(folder: Path, model: str) -> None:
    """The pickle-based weights open_clip may pick in a ``local-dir:`` folder, checked as
    ``--pretrained`` files are (whichever it picks has passed)."""
    if folder.is_dir():
        for path in sorted([*folder.glob("*.bin"), *folder.glob("*.pth")]):
            _refuse_unsafe_checkpoint(path, what=f"--model {model}: {path.name}")


def _refuse_unsafe_checkpoint(path: Path, what: str | None = None) -> None:
    """Load a pickle-based checkpoint with ``weights_only=True`` before open_clip sees it.

    open_clip's ``load_state_dict`` retries ``torch.load`` *without* ``weights_only`` when the
    safe load raises ``TypeError`` — which a crafted pickle can trigger — and on torch < 2.6 (or
    with ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1``) that retry unpickles arbitrary code. A file the
    safe loader does not accept is therefore refused here, so open_clip's first, safe load is
    the only one that ever runs. ``mmap`` keeps this check cheap for large checkpoints.
    A TorchScript archive (OpenAI's original CLIP ``.pt`` files are ones) is code, not weights:
    it is refused by name, never run.
    """
    what = what or f"--pretrained {path}"
    if _is_torchscript(path):
        raise InputError(
            f"{what}: refused to load: a TorchScript archive is code, and msae-audit reads "
            "weights only (use the open_clip tag, e.g. --pretrained openai, or save the "
            "model's state_dict with torch.save or as .safetensors)"
        )
    try:
        try:
            torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as exc:
            if "mmap" not in str(exc):
                raise
            torch.load(str(path), map_location="cpu", weights_only=True)  # legacy format
    except Exception as exc:
        raise InputError(
            f"{what}: refused to load: only tensors and plain data are read "
            f"(torch.load weights_only=True), never pickled code ({first_line(exc)})"
        ) from exc


def _is_torchscript(path: Path) -> bool:
    """Whether ``path`` is a TorchScript zip (it has a ``constants.pkl`` record, as torch checks)."""
    try:
        with zipfile.ZipFile(path) as archive:
            return any(n.rsplit("/", 1)[-1] == "constants.pkl" for n in archive.namelist())
    except (zipfile.BadZipFile, OSError, ValueError):
        return False


def _model_error(model: str, pretrained: str | None, exc: BaseException) -> InputError:
    first = first_line(exc, limit=None)
    if "state_dict" in first or "size mismatch" in str(exc) or "Missing key" in str(exc):
        return InputError(f"checkpoint {pretrained} does not match model {model} ({first})")
    if pretrained and Path(pretrained).is_file():
        return InputError(f"cannot load {model} with checkpoint {pretrained}: {first}")
    return InputError(f"cannot load open_clip model {model} (pretrained {pretrained}): {first}")


def _embed_dim(model: torch.nn.Module) -> int:
    projection = getattr(model, "text_projection", None)
    if isinstance(projection, torch.nn.Linear):
        return int(projection.out_features)
    if isinstance(projection, torch.Tensor):
        return int(projection.shape[1])
    visual = getattr(model, "visual", None)
    dim = getattr(visual, "output_dim", None)
    if dim is None:
        raise InputError("cannot determine the embedding dimension of this open_clip model")
    return int(dim)


def l2_normalize(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.maximum(norms, 1e-12)).astype(np.float32, copy=False)
