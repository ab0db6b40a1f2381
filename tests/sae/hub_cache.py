"""A Hugging Face Hub cache written by hand, in the layout ``huggingface_hub`` reads offline:
``models--OWNER--REPO/blobs/<sha256>``, ``snapshots/<commit>/<path>`` (relative links to the
blobs) and ``refs/main`` holding the commit."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def write_hub_cache(
    cache: Path, repo_id: str, files: dict[str, bytes], commit: str = COMMIT, ref: str = "main"
) -> Path:
    """Put ``files`` (path in the repository → content) into ``cache`` as revision ``commit``
    of ``repo_id``; returns the snapshot folder."""
    repo_dir = cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo_dir / "snapshots" / commit
    for path, content in files.items():
        blob = repo_dir / "blobs" / hashlib.sha256(content).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(content)
        link = snapshot / path
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    (repo_dir / "refs").mkdir(parents=True, exist_ok=True)
    (repo_dir / "refs" / ref).write_text(commit)
    return snapshot
