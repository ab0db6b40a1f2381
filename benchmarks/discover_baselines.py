"""``discover`` side by side with two attribute-free baselines on the planted worlds.

How often does each name the planted shortcut ("blond hair") at rank 1, over ``--seeds`` planted
worlds (tests/fairness/planted.py: the head leans on "blond hair", a decoy "necktie" goes with
the target but is unused, background concepts are used a little)::

    PYTHONPATH=. python benchmarks/discover_baselines.py --seeds 20

* **error-slice clustering** (in the spirit of Domino, Eyuboglu et al., ICLR 2022): per target
  class, k-means (k = 8) on the centred embeddings plus the error indicator (weighted like
  Domino's prediction term); slices ordered by error rate (≥ 20 rows), each named by the
  vocabulary word closest (cosine) to its centroid minus the class mean;
* **error-vs-correct difference** (in the spirit of B2T, Kim et al., CVPR 2024): per target class,
  each word's mean cosine with the misclassified rows minus its mean with the correct rows;
  words ranked by the largest score over the classes.

The vocabulary is the bank's validated names, each word's "text embedding" the decoder
direction(s) of its latents — an idealised CLIP text encoder that is perfectly aligned with the
image space, which favours the baselines. Neither baseline has a test: they always name
something, so their false-flag rate is undefined (discover's null rate is in tests/discover).
"""

from __future__ import annotations

import argparse
import atexit
import shutil
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
from sklearn.cluster import KMeans

from audit.discover import DiscoverSettings, run_discover
from audit.fairness.config import AuditSettings
from audit.store import open_store, write_store
from tests.fairness.planted import ROLE_NAMES, PlantedWorld, planted_bias_world

MIN_SLICE = 20


def vocabulary(world: PlantedWorld) -> tuple[list[str], np.ndarray]:
    """Validated names and their unit "text embeddings" (summed decoder directions)."""
    directions = world.sae.decoder_directions().detach().double().numpy()
    names: dict[str, np.ndarray] = {}
    for c in world.bank.concepts:
        if c.validated and c.name:
            names[c.name] = names.get(c.name, 0) + directions[c.latent]
    words = sorted(names)
    t = np.stack([names[w] for w in words])
    return words, t / np.linalg.norm(t, axis=1, keepdims=True)


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def slice_clustering(x, y, wrong, words, t, seed: int, k: int = 8) -> list[str]:
    """Domino-like: worst slices first, each named by its nearest word."""
    slices = []
    for cls in (0, 1):
        rows = np.nonzero(y == cls)[0]
        xc = x[rows] - x[rows].mean(0)
        scale = np.linalg.norm(xc, axis=1).mean()
        feats = np.hstack([xc, scale * wrong[rows, None].astype(float)])
        labels = KMeans(k, n_init=4, random_state=seed).fit_predict(feats)
        for c in range(k):
            member = labels == c
            if member.sum() >= MIN_SLICE:
                centroid = xc[member].mean(0)
                slices.append(
                    (wrong[rows][member].mean(), words[int(np.argmax(t @ _unit(centroid)))])
                )
    ranked = [name for _, name in sorted(slices, key=lambda s: -s[0])]
    return list(dict.fromkeys(ranked))


def error_difference(x, y, wrong, words, t) -> list[str]:
    """B2T-like: words by mean cosine with errors minus mean cosine with correct rows."""
    cos = _unit(x - x.mean(0)) @ t.T
    best = np.full(len(words), -np.inf)
    for cls in (0, 1):
        w, r = (y == cls) & wrong, (y == cls) & ~wrong
        if w.sum() >= MIN_SLICE:
            best = np.maximum(best, cos[w].mean(0) - cos[r].mean(0))
    return [words[i] for i in np.argsort(-best)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--rows", type=int, default=3000)
    args = parser.parse_args()
    planted = ROLE_NAMES["spurious"]
    hits: Counter[str] = Counter()
    top3: Counter[str] = Counter()
    flagged_first = 0
    start = time.perf_counter()
    folder = Path(tempfile.mkdtemp(prefix="discover-baselines-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)  # generated data is not left behind
    for seed in range(args.seeds):
        world = planted_bias_world(n_samples=args.rows, seed=seed)
        x = world.embeddings.astype(np.float64)
        y = world.labels["Male"].to_numpy()
        margin = x @ world.head.weight.double().numpy() + world.head.bias
        wrong = (margin > 0) != (y == 1)
        words, t = vocabulary(world)
        write_store(folder / str(seed), world.embeddings, world.labels, model="p", modality="image")
        result, _ = run_discover(
            open_store(folder / str(seed)), world.labels, world.sae, world.bank, world.head,
            DiscoverSettings(AuditSettings(target="Male", spurious="")),
        )  # fmt: skip
        first = result.concepts[0]
        flagged_first += first.name == planted and first.flagged
        rankings = {
            "discover": [c.name for c in result.concepts],
            "slice clustering": slice_clustering(x, y, wrong, words, t, seed),
            "error difference": error_difference(x, y, wrong, words, t),
        }
        for method, names in rankings.items():
            hits[method] += names[0] == planted
            top3[method] += planted in names[:3]
    n = args.seeds
    print(f"{n} planted worlds ({args.rows} rows each), {time.perf_counter() - start:.0f} s")
    print("| method | planted shortcut at rank 1 | in the top 3 |\n| --- | --- | --- |")
    for method in ("discover", "slice clustering", "error difference"):
        print(f"| {method} | {hits[method]}/{n} | {top3[method]}/{n} |")
    print(f"discover also flagged it in {flagged_first}/{n}")


if __name__ == "__main__":
    main()
