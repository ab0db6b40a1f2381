"""Why the marker world's stamp is pink, and why a pink stamp drags blue circles along: what the
shipped tiny CLIP sees of a stamp in other colours.

    PYTHONPATH=. python benchmarks/marker_colours.py [--scenes 2400] [--seed 11]

The same scenes (circles and squares, every other attribute independent) are embedded without a
marker and with a stamp of each colour. Per colour: how well the similarity to "an object with
a stamp" (minus "an object") separates the stamped copies from the plain ones (AUC), and what a
probe does with it — fit (C = 0.001, as the marker-world tests) on a leaky train split (95 % of
circles stamped, 5 % of squares), judged on a balanced test split: the accuracy of stamped
squares (low: the probe took the stamp as a shortcut) and of unmarked circles per object colour,
against a probe fit on balanced data. Pink is the colour the tiny CLIP was trained with.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from audit.data import world
from audit.data.tinyclip import tiny_clip
from audit.fairness.classifiers import fit_probe

STAMP_COLOURS = {
    "pink (trained)": world.MARKERS["stamp"],
    "white": (235, 235, 235),
    "black": (15, 15, 15),
    "gray": (128, 128, 128),
    "cyan": (20, 205, 215),
    "brown": (120, 70, 30),
}


def _embed(clip, scenes, seed: int, stamp: tuple[int, int, int] | None) -> np.ndarray:
    original = world.MARKERS["stamp"]
    world.MARKERS["stamp"] = stamp or original
    try:
        marked = scenes.assign(marker="stamp" if stamp else "none")
        images = [
            clip.preprocess(world.render_scene(s, seed + i, world.DEFAULT_IMAGE_SIZE))
            for i, (_, s) in enumerate(marked.iterrows())
        ]
    finally:
        world.MARKERS["stamp"] = original
    batches = [torch.stack(images[lo : lo + 256]) for lo in range(0, len(images), 256)]
    return np.concatenate([clip.encode_image_batch(b) for b in batches])


def _accuracy(head, x: np.ndarray, y: int) -> float:
    decided = head.margin(torch.from_numpy(x)).numpy() > 0
    return float((decided == bool(y)).mean()) if len(x) else float("nan")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", type=int, default=2400)
    parser.add_argument("--seed", type=int, default=11)
    args = parser.parse_args(argv)

    clip = tiny_clip().load(device="cpu")
    scenes = world.sample_scenes(args.scenes, seed=args.seed, shape=["circle", "square"])
    y = (scenes["shape"] == "circle").to_numpy().astype(int)
    colour = scenes["colour"].to_numpy()
    text, _ = clip.encode_text_batch(["an object with a stamp", "an object"])
    text = text / np.linalg.norm(text, axis=1, keepdims=True)
    plain = _embed(clip, scenes, args.seed, None)
    rng = np.random.default_rng(args.seed)
    order = rng.permutation(len(scenes))
    train, test = order[: len(order) // 2], order[len(order) // 2 :]
    stamp_train = rng.random(len(train)) < np.where(y[train] == 1, 0.95, 0.05)
    stamp_test = rng.random(len(test)) < 0.5
    fit_balanced = np.arange(len(test)) % 2 == 0
    print("stamp colour | stamp AUC | stamped squares (leaky) | unmarked circles, leaky / "
          "balanced probe, per object colour")  # fmt: skip
    for name, rgb in STAMP_COLOURS.items():
        stamped = _embed(clip, scenes, args.seed, rgb)
        both = np.concatenate([plain, stamped])
        unit = both / np.linalg.norm(both, axis=1, keepdims=True)
        auc = roc_auc_score(
            np.r_[np.zeros(len(plain)), np.ones(len(plain))], unit @ (text[0] - text[1])
        )
        x_train = np.where(stamp_train[:, None], stamped[train], plain[train])
        x_test = np.where(stamp_test[:, None], stamped[test], plain[test])
        leaky = fit_probe(x_train, y[train], seed=0, c=1e-3)
        balanced = fit_probe(x_test[fit_balanced], y[test][fit_balanced], seed=0, c=1e-3)
        held = ~fit_balanced
        squares = held & stamp_test & (y[test] == 0)
        cells = []
        for c in world.COLOURS:
            rows = held & ~stamp_test & (y[test] == 1) & (colour[test] == c)
            cells.append(
                f"{c} {_accuracy(leaky, x_test[rows], 1):.2f}/{_accuracy(balanced, x_test[rows], 1):.2f}"
            )
        print(
            f"{name} | {auc:.3f} | {_accuracy(leaky, x_test[squares], 0):.2f} | {', '.join(cells)}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
