"""Regenerate the tiny CLIP's shipped weights (audit/data/assets/tinyclip-v<N>.*).

    python scripts/train_tinyclip.py                 # train, then write version ASSET_VERSION
    python scripts/train_tinyclip.py --version 2     # after a change to the world or training
    python scripts/train_tinyclip.py --out /tmp/tc --steps 20 --scenes 500  # a quick look

Training is deterministic for a given torch build, CPU and thread count (fixed seed), not
across them: regenerated weights differ in their last bits, which is why the shipped file
is versioned and the tests check margins, never a figure measured on one machine. Bump
``ASSET_VERSION`` in audit/data/tinyclip.py together with a new version, so that caches
unpacked from the old weights are not reused.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import asdict, replace
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from audit.data.tinyclip import (  # noqa: E402
    ASSET_DIR,
    ASSET_VERSION,
    TinyClipSettings,
    pack_weights,
    train_tiny_clip,
)


def percent_printer(every: float = 0.1):  # type: ignore[no-untyped-def]
    """A ``progress(step, total)`` callback printing one line per ``every`` of the run."""
    started = time.perf_counter()
    state = {"next": every}

    def progress(step: int, total: int) -> None:
        done = step / total
        if done + 1e-9 >= state["next"] or step == total:
            elapsed = time.perf_counter() - started
            eta = elapsed / done * (1 - done)
            print(
                f"  step {step}/{total} ({done:.0%}), {elapsed:.0f} s, ETA {eta:.0f} s", flush=True
            )
            while state["next"] <= done + 1e-9:
                state["next"] += every

    return progress


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--version", type=int, default=ASSET_VERSION)
    parser.add_argument("--out", type=Path, default=ASSET_DIR, help="where the asset goes")
    parser.add_argument("--steps", type=int, default=None, help="override the training steps")
    parser.add_argument("--scenes", type=int, default=None, help="override the training scenes")
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    settings = TinyClipSettings()
    if args.steps is not None:
        settings = replace(settings, steps=args.steps)
    if args.scenes is not None:
        settings = replace(settings, train_scenes=args.scenes, eval_scenes=min(600, args.scenes))
    print(f"training the tiny CLIP: {asdict(settings)}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        info = train_tiny_clip(settings, tmp, progress=percent_printer())
        record = pack_weights(tmp, args.version, args.out)
    print(f"trained in {info['train_seconds']} s; zero-shot accuracy {info['zero_shot_accuracy']}")
    print(f"wrote {args.out / record['file']} ({record['bytes']} bytes, sha256 {record['sha256']})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
