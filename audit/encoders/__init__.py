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

Modules: ``clip`` (loading), ``inputs`` (image lists, rank slices), ``embedding`` (the batched,
resumable loops), ``distributed`` (``torchrun``: per-rank stores, one merged store).
"""

from audit.encoders.clip import PRECISIONS, ClipEncoder, ProgressCallback, l2_normalize, load_clip
from audit.encoders.distributed import embed_images_distributed
from audit.encoders.embedding import (
    SKIPPED_FILE,
    EmbedResult,
    SkippedImage,
    _ImageFiles,
    embed_images,
    embed_texts,
    finish_store,
    to_rgb,
)
from audit.encoders.inputs import IMAGE_SUFFIXES, LeftOut, list_images, rank_slice, scan_images

__all__ = [
    "IMAGE_SUFFIXES",
    "PRECISIONS",
    "SKIPPED_FILE",
    "ClipEncoder",
    "EmbedResult",
    "LeftOut",
    "ProgressCallback",
    "SkippedImage",
    "_ImageFiles",
    "embed_images",
    "embed_images_distributed",
    "embed_texts",
    "finish_store",
    "l2_normalize",
    "list_images",
    "load_clip",
    "rank_slice",
    "scan_images",
    "to_rgb",
]
