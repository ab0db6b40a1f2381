"""Helpers shared by the encoder, world, concept and demo tests.

The tiny CLIP needs no fixture here: :func:`audit.data.tinyclip.tiny_clip` unpacks its shipped
weights once into ``$MSAE_AUDIT_CACHE`` or ``~/.cache/msae-audit`` (under their version and
sha256), and every later call reuses them.
"""

from __future__ import annotations

from pathlib import Path

# A small open_clip config (ModifiedResNet vision tower, 1-layer text transformer), random
# weights: for tests of the loading and embedding code paths, where learning is irrelevant.
TINY_CONFIG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": [1, 1, 1, 1], "width": 8, "head_width": 16},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


def make_random_clip(root: Path) -> tuple[Path, Path, Path]:
    """``(config JSON, weights .safetensors, weights .pt)`` of a randomly initialised model."""
    import json

    import torch
    from open_clip.model import CLIP
    from safetensors.torch import save_file

    root.mkdir(parents=True, exist_ok=True)
    config = root / "tinyref.json"
    config.write_text(json.dumps(TINY_CONFIG), encoding="utf-8")
    torch.manual_seed(0)
    model = CLIP(**TINY_CONFIG)
    with torch.no_grad():  # make the zero-initialised biases non-trivial too
        for p in model.parameters():
            if p.ndim == 1:
                p.add_(0.05 * torch.randn_like(p))
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    weights = root / "weights.safetensors"
    save_file(state, str(weights))
    torch_ckpt = root / "weights.pt"
    torch.save(state, torch_ckpt)
    return config, weights, torch_ckpt
