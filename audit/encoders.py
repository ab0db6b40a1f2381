"""CLIP encoders through open_clip: loading, batched image and text embedding into stores.

``--model`` is an open_clip model name (``ViT-B-32``, ``hf-hub:org/repo``, ``local-dir:PATH``) or
a path to an open_clip model-config JSON (``{"embed_dim", "vision_cfg", "text_cfg"}``, or an
``open_clip_config.json`` with ``model_cfg`` and ``preprocess_cfg``). ``--pretrained`` is an
open_clip tag (downloaded by open_clip when online) or a local checkpoint file, which open_clip
reads with ``weights_only=True`` (or as safetensors): nothing is unpickled.

Stores hold the model's raw outputs (``encode_image`` / ``encode_text`` without normalisation)
unless ``normalize=True``; the manifest's ``normalized`` says which.

The embedding loops take a :class:`~audit.store.StoreWriter` and resume where an interrupted
run stopped. They work on any slice of the input, so a distributed run gives each rank a
contiguous slice (:func:`rank_slice`) and its own store; concatenating the rank stores in rank
order restores the input order.
"""

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
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from PIL import Image

from audit.device import resolve_device
from audit.errors import InputError, first_line
from audit.fileio import atomic_path, write_json
from audit.hub import hub_access
from audit.store import PARTIAL_DIR, StoreWriter

PRECISIONS = ("auto", "fp32", "fp16", "bf16")
SKIPPED_FILE = "skipped.csv"
_EMBED_STATE = "embed-state.json"
_CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".ckpt", ".npz")

ProgressCallback = Callable[[int, int], None]  # (rows done, rows total)


# ------------------------------------------------------------------------------------------
# Loading
# ------------------------------------------------------------------------------------------


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
        with _quiet_open_clip(), hub_access(name, checkpoint):
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
        return text, text  # fetched from the Hub or its cache (audit.hub)
    if _looks_like_path(text) or text.endswith(_CHECKPOINT_SUFFIXES):
        raise InputError(f"checkpoint not found: {path}")
    known = f"; known tags for {name}: {', '.join(tags)}" if tags else ""
    raise InputError(f"--pretrained {text!r} is neither a checkpoint file nor a known tag{known}")


def _refuse_unsafe_checkpoint(path: Path) -> None:
    """Load a pickle-based checkpoint with ``weights_only=True`` before open_clip sees it.

    open_clip's ``load_state_dict`` retries ``torch.load`` *without* ``weights_only`` when the
    safe load raises ``TypeError`` — which a crafted pickle can trigger — and on torch < 2.6 (or
    with ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1``) that retry unpickles arbitrary code. A file the
    safe loader does not accept is therefore refused here, so open_clip's first, safe load is
    the only one that ever runs. ``mmap`` keeps this check cheap for large checkpoints.
    """
    try:
        try:
            torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as exc:
            if "mmap" not in str(exc):
                raise
            torch.load(str(path), map_location="cpu", weights_only=True)  # legacy format
    except Exception as exc:
        raise InputError(
            f"--pretrained {path}: refused to load: only tensors and plain data are read "
            f"(torch.load weights_only=True), never pickled code ({first_line(exc)})"
        ) from exc


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


# ------------------------------------------------------------------------------------------
# Inputs
# ------------------------------------------------------------------------------------------

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")


def list_images(source: str | os.PathLike[str]) -> pd.DataFrame:
    """The images to embed: a folder (recursive, sorted by relative path) or a manifest CSV
    with a ``path`` column (relative paths are relative to the CSV) and any label columns.

    Returns a table with ``id``, ``path`` (absolute) and the manifest's other columns.
    """
    src = Path(source)
    if not src.exists():
        raise InputError(f"image folder or manifest not found: {src}")
    if src.is_dir():
        files = sorted(
            (p for p in src.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()),
            key=lambda p: p.relative_to(src).as_posix(),
        )
        if not files:
            raise InputError(f"no images ({', '.join(IMAGE_SUFFIXES)}) found under {src}")
        ids = [p.relative_to(src).as_posix() for p in files]
        return pd.DataFrame({"id": ids, "path": [str(p.resolve()) for p in files]})
    if src.suffix.lower() != ".csv":
        raise InputError(f"{src}: expected an image folder or a manifest .csv")
    from audit.store import read_labels_csv

    table = read_labels_csv(src)
    if "path" not in table.columns:
        cols = ", ".join(map(str, table.columns[:10]))
        raise InputError(f"{src}: manifest needs a 'path' column (found: {cols})")
    if table["path"].isna().any():
        row = int(table["path"].isna().to_numpy().argmax())
        raise InputError(f"{src}: row {row + 2} has an empty path")
    base = src.resolve().parent
    paths = [str(p if Path(p).is_absolute() else (base / p)) for p in table["path"].astype(str)]
    table = table.copy()
    table["path"] = paths
    if "id" not in table.columns:
        table.insert(0, "id", [Path(p).name for p in paths])
    table = table[["id", "path", *[c for c in table.columns if c not in ("id", "path")]]]
    if not len(table):
        raise InputError(f"{src}: the manifest lists no images")
    return table.reset_index(drop=True)


def rank_slice(n: int, rank: int, world_size: int) -> range:
    """Rank ``rank``'s contiguous share of ``n`` inputs (earlier ranks get the extra rows), so
    that rank stores concatenated in rank order keep the input order."""
    if world_size < 1 or not 0 <= rank < world_size:
        raise InputError(f"invalid rank {rank} for world size {world_size}")
    base, extra = divmod(n, world_size)
    start = rank * base + min(rank, extra)
    return range(start, start + base + (1 if rank < extra else 0))


# ------------------------------------------------------------------------------------------
# Image embedding
# ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SkippedImage:
    row: int  # position in the input list
    path: str
    error: str


@dataclass
class EmbedResult:
    rows: int  # rows in the store
    skipped: list[SkippedImage]
    seconds: float
    resumed_from: int  # input rows an earlier, interrupted run had already done
    truncated_texts: int = 0


class _ImageFiles(torch.utils.data.Dataset):
    """Loads and preprocesses one image; failures come back as an error string, not an
    exception, so a bad file never kills a worker and the caller decides what to do."""

    def __init__(self, paths: Sequence[str], rows: Sequence[int], transform: Callable) -> None:
        self.paths, self.rows, self.transform = paths, rows, transform

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> tuple[int, torch.Tensor | None, str]:
        row = self.rows[i]
        try:
            with Image.open(self.paths[row]) as image:
                image.load()
                rgb = image.convert("RGB")
            return row, self.transform(rgb), ""
        except FileNotFoundError:
            return row, None, "file not found"
        except Image.DecompressionBombError as exc:
            return row, None, f"refused: {exc}"
        except Exception as exc:  # PIL raises many types for damaged files
            message = (str(exc).strip().splitlines() or [""])[0][:200]
            return row, None, f"{type(exc).__name__}: {message}" if message else type(exc).__name__


def _collate(
    items: list[tuple[int, torch.Tensor | None, str]],
) -> tuple[list[int], torch.Tensor | None, list[tuple[int, str]]]:
    good = [(row, tensor) for row, tensor, _ in items if tensor is not None]
    bad = [(row, error) for row, tensor, error in items if tensor is None]
    stacked = torch.stack([t for _, t in good]) if good else None
    return [row for row, _ in good], stacked, bad


def embed_images(
    paths: Sequence[str],
    clip: ClipEncoder,
    writer: StoreWriter,
    *,
    metadata: pd.DataFrame | None = None,
    batch_size: int = 64,
    num_workers: int = 0,
    skip_bad_images: bool = False,
    normalize: bool = False,
    progress: ProgressCallback | None = None,
) -> EmbedResult:
    """Embed ``paths`` in order into ``writer`` (resuming an interrupted run), without
    finalising it. ``metadata`` (row-aligned with ``paths``) goes into ``metadata.csv`` for
    the rows that are stored. An unreadable image raises an :class:`InputError` naming the
    file, or with ``skip_bad_images`` is left out and recorded (see :func:`finish_store`).
    """
    started = time.perf_counter()
    _check_writer(writer, clip, normalize)
    if metadata is not None and len(metadata) != len(paths):
        raise InputError(f"{len(metadata)} metadata rows for {len(paths)} images")
    state = _EmbedState.open(writer, _input_digest(paths, metadata))
    start = state.input_position(writer.rows_done, len(paths))
    already_skipped = state.skipped_rows
    rows = [r for r in range(start, len(paths)) if r not in already_skipped]
    dataset = _ImageFiles(list(map(str, paths)), rows, clip.preprocess)
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=max(1, batch_size),
        shuffle=False,  # row order is the input order
        num_workers=max(0, num_workers),
        collate_fn=_collate,
        pin_memory=clip.device.type == "cuda",
    )
    if progress is not None:
        progress(start, len(paths))
    for good_rows, images, bad in loader:
        for row, error in bad:
            if not skip_bad_images:
                raise InputError(
                    f"cannot read image {paths[row]}: {error} "
                    "(use --skip-bad-images to leave unreadable images out)"
                )
            state.add_skip(SkippedImage(row, str(paths[row]), error))
        if images is not None:
            features = clip.encode_image_batch(images)
            if normalize:
                features = l2_normalize(features)
            meta = None if metadata is None else metadata.iloc[good_rows]
            writer.append(features, meta)
        if progress is not None:
            last = max([*good_rows, *(r for r, _ in bad)])
            progress(last + 1, len(paths))
    return EmbedResult(
        rows=writer.rows_written,
        skipped=state.skipped,
        seconds=time.perf_counter() - started,
        resumed_from=start,
    )


def embed_texts(
    texts: Sequence[str],
    clip: ClipEncoder,
    writer: StoreWriter,
    *,
    metadata: pd.DataFrame | None = None,
    batch_size: int = 256,
    normalize: bool = False,
    progress: ProgressCallback | None = None,
) -> EmbedResult:
    """Embed ``texts`` in order into ``writer`` (resuming), without finalising it."""
    started = time.perf_counter()
    _check_writer(writer, clip, normalize)
    if metadata is not None and len(metadata) != len(texts):
        raise InputError(f"{len(metadata)} metadata rows for {len(texts)} texts")
    _EmbedState.open(writer, _input_digest(texts, metadata))
    start = writer.rows_done
    truncated = 0
    for lo in range(start, len(texts), max(1, batch_size)):
        hi = min(lo + batch_size, len(texts))
        features, full = clip.encode_text_batch(texts[lo:hi])
        truncated += full
        if normalize:
            features = l2_normalize(features)
        writer.append(features, None if metadata is None else metadata.iloc[lo:hi])
        if progress is not None:
            progress(hi, len(texts))
    return EmbedResult(writer.rows_written, [], time.perf_counter() - started, start, truncated)


def finish_store(writer: StoreWriter, result: EmbedResult) -> Any:
    """Record what was skipped (``skipped.csv`` and the manifest) and publish the store."""
    skipped_path = writer.out / SKIPPED_FILE
    if result.skipped:
        table = pd.DataFrame(
            {
                "row": [s.row for s in result.skipped],
                "path": [s.path for s in result.skipped],
                "error": [s.error for s in result.skipped],
            }
        )
        with atomic_path(skipped_path) as tmp:
            table.to_csv(tmp, index=False)
        writer.extra["skipped"] = len(result.skipped)
        writer.extra["skipped_file"] = SKIPPED_FILE
    else:
        skipped_path.unlink(missing_ok=True)
        writer.extra["skipped"] = 0
    if result.truncated_texts:
        writer.extra["texts_filling_context"] = result.truncated_texts
    return writer.finalize()


def _check_writer(writer: StoreWriter, clip: ClipEncoder, normalize: bool) -> None:
    if writer.params["dim"] != clip.embed_dim:
        raise InputError(
            f"the store expects dimension {writer.params['dim']} but the model gives "
            f"{clip.embed_dim}"
        )
    if bool(writer.params["normalized"]) != bool(normalize):
        # The manifest must say honestly whether rows are L2-normalised.
        raise InputError("the store's 'normalized' flag does not match the normalize option")


def _input_digest(items: Sequence[Any], metadata: pd.DataFrame | None) -> str:
    digest = hashlib.sha256()
    for item in items:
        digest.update(str(item).encode("utf-8", "surrogatepass"))
        digest.update(b"\0")
    if metadata is not None:
        digest.update(",".join(map(str, metadata.columns)).encode())
    return digest.hexdigest()


@dataclass
class _EmbedState:
    """What an interrupted run needs besides the writer's shards: which input it was reading
    and which images it skipped. Kept in the writer's partial folder, rewritten atomically
    whenever an image is skipped (before any later row can reach a finished shard)."""

    path: Path
    input_sha256: str
    skipped: list[SkippedImage]

    @property
    def skipped_rows(self) -> set[int]:
        return {s.row for s in self.skipped}

    @classmethod
    def open(cls, writer: StoreWriter, digest: str) -> _EmbedState:
        path = writer.out / PARTIAL_DIR / _EMBED_STATE
        state = cls(path, digest, [])
        if path.exists() and writer.rows_done > 0:
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
            except (json.JSONDecodeError, UnicodeDecodeError, OSError):
                data = {}
            if data.get("input_sha256") not in (None, digest):
                raise InputError(
                    f"{writer.out}: an interrupted run for a different input list exists "
                    f"(delete {writer.out / PARTIAL_DIR} or use another --out)"
                )
            state.skipped = [SkippedImage(**s) for s in data.get("skipped", [])]
        elif writer.rows_done > 0 and not path.exists():
            raise InputError(
                f"{writer.out}: found an interrupted store without its input record "
                f"(delete {writer.out / PARTIAL_DIR} or use another --out)"
            )
        state.save()
        return state

    def add_skip(self, item: SkippedImage) -> None:
        if item.row not in self.skipped_rows:
            self.skipped.append(item)
            self.skipped.sort(key=lambda s: s.row)
            self.save()

    def save(self) -> None:
        write_json(
            self.path,
            {
                "input_sha256": self.input_sha256,
                "skipped": [s.__dict__ for s in self.skipped],
            },
        )

    def input_position(self, rows_done: int, n_inputs: int) -> int:
        """The first input row not yet stored: ``rows_done`` stored rows plus the skipped
        rows among them."""
        skipped = self.skipped_rows
        stored = 0
        for row in range(n_inputs):
            if stored == rows_done:
                return row
            if row not in skipped:
                stored += 1
        return n_inputs


def embed_images_distributed(
    paths: Sequence[str],
    clip: ClipEncoder,
    out: str | os.PathLike[str],
    make_writer: Callable[[Path], StoreWriter],
    *,
    metadata: pd.DataFrame | None = None,
    progress: ProgressCallback | None = None,
    overwrite: bool = False,
    **embed_options: Any,
) -> Any:
    """Embed ``paths`` with every rank of the running process group into one store ``out``.

    Rank ``r`` embeds its contiguous block (:func:`audit.store_merge.rank_row_blocks`) into
    its own resumable part store ``out/.ranks/rank-r``; after a barrier rank 0 merges the parts
    in rank order (shards are renamed, not copied) and records every skipped image with its row
    in the whole input. Returns the merged store on rank 0 and ``None`` on the other ranks.
    ``embed_options`` go to :func:`embed_images`; ``overwrite`` replaces a merged store and
    finished parts (without it a finished part is kept, so a rerun resumes).
    """
    from audit.distributed import current_context
    from audit.store import open_store
    from audit.store_merge import (
        merge_rank_stores,
        rank_part_path,
        rank_part_paths,
        rank_row_blocks,
    )

    ctx = current_context(clip.device)
    blocks = rank_row_blocks(len(paths), ctx.rank, ctx.world_size)
    start, stop = blocks[0] if blocks else (0, 0)
    part = rank_part_path(out, ctx.rank)
    if (Path(out) / "manifest.json").exists() and not overwrite:
        raise InputError(f"{out} already holds a store (use --overwrite to replace it)")
    # A finished part is kept unless overwriting: this rank finished before an interruption.
    if overwrite or not (part / "manifest.json").exists():
        writer = make_writer(part)
        result = embed_images(
            list(paths[start:stop]),
            clip,
            writer,
            metadata=None if metadata is None else metadata.iloc[start:stop].reset_index(drop=True),
            progress=progress,
            **embed_options,
        )
        finish_store(writer, result)
    ctx.barrier()
    if not ctx.is_main:
        ctx.barrier()
        return None
    skipped = []
    for rank, part_path in enumerate(rank_part_paths(out, ctx.world_size)):
        table_path = part_path / SKIPPED_FILE
        if table_path.exists():
            table = pd.read_csv(table_path)
            offset = (rank_row_blocks(len(paths), rank, ctx.world_size) or [(0, 0)])[0][0]
            skipped.append(table.assign(row=table["row"] + offset))
    merged = merge_rank_stores(rank_part_paths(out, ctx.world_size), out, overwrite=overwrite)
    if skipped:
        table = pd.concat(skipped, ignore_index=True)
        with atomic_path(Path(out) / SKIPPED_FILE) as tmp:
            table.to_csv(tmp, index=False)
        manifest = dict(merged.manifest)
        manifest.update(skipped=len(table), skipped_file=SKIPPED_FILE)
        write_json(Path(out) / "manifest.json", manifest)
        merged = open_store(out)
    ctx.barrier()
    return merged
