"""Speed of ``msae-audit discover`` at CelebA scale on synthetic data (target: under 2 min on
2 CPU cores for 200k × 768 embeddings and a ~500-name bank).

The data are :func:`audit_speed.make_world`'s (sparse mixtures of the SAE's own decoder atoms,
a planted shortcut atom named "blond hair"), with ``--named`` validated names. Prints the total
time, the stage breakdown and the planted concept's rank::

    PYTHONPATH=. python benchmarks/discover_speed.py                 # full size
    PYTHONPATH=. python benchmarks/discover_speed.py --rows 20000 --latents 1536 --named 200

The **naive** comparison (``--naive-concepts K``, default 8) does what a first script would, per
concept: encode every row, sum the concept's latents, threshold them (Otsu's), zero the concept
in the code, decode, add the SAE's residual, rerun the classifier and recompute the four
groups' accuracies — timed on K concepts (the planted one first, whose ΔWGA must equal
discover's) and extrapolated to the whole bank. It has no statistics at all (no bootstrap, no
null), which understates the gap. Timings on a shared machine are noisy; run it twice.
"""

from __future__ import annotations

import argparse
import atexit
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from audit_speed import make_world

from audit.concepts import load_bank
from audit.concepts.activity import otsu_threshold, validated_groups
from audit.device import tune_cpu_allocator
from audit.discover import DiscoverSettings
from audit.fairness import AuditSettings
from audit.report.discover import discover_files


def naive_discover(paths: dict, groups: list, chunk: int = 8192) -> tuple[list[float], float]:
    """ΔWGA of removing each concept of ``groups`` by a per-concept decode-and-rerun loop."""
    from audit.fairness.classifiers import load_classifier
    from audit.sae import load_sae
    from audit.store import open_store

    store = open_store(paths["store"])
    y = store.metadata["Male"].to_numpy()
    sae = load_sae(paths["sae"])
    head = load_classifier(paths["head"], store.dim, "raw")
    x_all = torch.from_numpy(np.asarray(store.read()))
    start = time.perf_counter()
    deltas = []
    with torch.no_grad():
        for group in groups:
            cols = list(group.latents)
            sums, before, after = [], [], []
            for lo in range(0, len(y), chunk):
                x = x_all[lo : lo + chunk]
                z = sae.encode(x)
                residual = x - sae.decode(z)
                edited = z.clone()
                edited[:, cols] = 0.0
                sums.append(z[:, cols].sum(1).numpy())
                before.append((head.margin(x) > 0).numpy())
                after.append((head.margin(sae.decode(edited) + residual) > 0).numpy())
            s = np.concatenate(sums)
            active = s > otsu_threshold(s)
            ok_b, ok_a = np.concatenate(before) == y, np.concatenate(after) == y
            cells = [(y == t) & (active == a) for t in (0, 1) for a in (False, True)]
            wga_b = min(ok_b[c].mean() for c in cells if c.any())
            wga_a = min(ok_a[c].mean() for c in cells if c.any())
            deltas.append(float(wga_a - wga_b))
    return deltas, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--latents", type=int, default=6144)
    parser.add_argument("--active", type=int, default=24, help="atoms per sample")
    parser.add_argument("--named", type=int, default=500, help="latents with a validated name")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--naive-concepts", type=int, default=8, help="0 skips the naive run")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    tune_cpu_allocator()
    folder = Path(tempfile.mkdtemp(prefix="discover-bench-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)  # generated data is not left behind
    start = time.perf_counter()
    paths = make_world(folder, args.rows, args.dim, args.latents, args.active, args.named,
                       args.seed)  # fmt: skip
    print(f"data: {args.rows:,} x {args.dim}, {args.latents} latents, {args.named} named "
          f"(generated in {time.perf_counter() - start:.1f} s, {os.cpu_count()} CPUs visible, "
          f"{torch.get_num_threads()} torch threads)")  # fmt: skip
    start = time.perf_counter()
    outcome = discover_files(
        paths["store"], sae=paths["sae"], bank=paths["bank"], classifier=paths["head"],
        target="Male", out_dir=folder / "reports",
        settings=DiscoverSettings(AuditSettings("Male", "", ablation="zero")),  # as the naive loop
    )  # fmt: skip
    total = time.perf_counter() - start
    r = outcome.result
    if not r.concepts:
        raise SystemExit(f"discover refused: {r.error} (choose a larger --dim for --latents)")
    top = r.concepts[0]
    planted = next(c for c in r.concepts if c.name == "blond hair")
    print(f"discover: {total:.1f} s total ({r.family.size} concepts, {r.family.with_null} with "
          f"a null; rank 1 {top.name!r} ΔWGA {top.delta_wga:+.3f}, flagged "
          f"{r.flagged_concepts})")  # fmt: skip
    print("  stages: " + ", ".join(f"{k} {v:.1f} s" for k, v in outcome.timings.items()))
    if args.naive_concepts:
        groups = validated_groups(load_bank(paths["bank"]), args.latents)
        groups.sort(key=lambda g: g.name != "blond hair")
        deltas, seconds = naive_discover(paths, groups[: args.naive_concepts])
        per = seconds / len(deltas)
        full = per * len(groups)
        print(f"naive: {per:.2f} s per concept, {full:.0f} s extrapolated to {len(groups)} "
              f"concepts (no statistics); discover is {full / total:.1f}x faster")  # fmt: skip
        same = abs(deltas[0] - planted.delta_wga) < 2e-3
        print(f"  planted ΔWGA naive {deltas[0]:+.4f} vs discover {planted.delta_wga:+.4f}: "
              f"{'equal' if same else 'DIFFERENT'}")  # fmt: skip


if __name__ == "__main__":
    main()
