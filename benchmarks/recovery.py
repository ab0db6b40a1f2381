"""Dictionary recovery on a planted world with frequent, correlated atoms and many rare ones.

**World** (:func:`recovery_world`): ``A`` unit atoms in ``R^d`` (default 200 in d = 256). A few
*frequent* atoms (default 8, in two groups of 4) share a common direction (pairwise cosine
≈ ``frequent_cosine``) and fire together: each group switches on in 40 % of the samples and
then each of its atoms fires with probability 0.6, plus 5 % independent firing (≈ 29 % per
atom). The other atoms are *rare*: Zipf-distributed probabilities adding up to ``rare_active``
atoms per sample (the rarest fire in ~0.4 % of the samples). Weights are exponential + 0.2; each
sample adds a large shared offset (CLIP's anisotropy) and a little noise and is L2-normalised,
like a CLIP embedding: ``x = normalise(c·u + Σ_j a_j w_j + ε)``.

**Measured** for every architecture (Matryoshka UW and RW, TopK, ReLU) and expansion (1×, 2×,
8×): MMCS — the mean over true atoms of the best cosine with any decoder row — over all atoms,
the frequent ones and the rare ones; dataset-level FVU of the inference code on 10 000 held-out
rows, its L0, and the fraction of dead latents (never non-zero on those rows, the paper's NDN).
Each (architecture, expansion) is one training run scored at several step counts (interrupted
and resumed there, which gives the same weights as an uninterrupted run; earlier points are
before the learning-rate decay, the last one is the finished run).

Usage::

    python benchmarks/recovery.py --json reports/recovery.json       # docs/recovery.md's figure
    python benchmarks/recovery.py --setting reference                # the paper's training settings
    python benchmarks/recovery.py --quick                            # seconds (tests run this)
    python benchmarks/recovery.py --only matryoshka-uw --expansions 8 --set lr=1e-3
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from audit.data.planted import atom_recovery
from audit.sae import SAEConfig, matryoshka_k_list
from audit.sae.base import SparseAutoencoder
from audit.sae.train import REFERENCE_LR, TrainConfig, train_sae
from audit.store import EmbeddingStore, write_store


@dataclass(frozen=True)
class World:
    train: np.ndarray  # [N, d] float32, unit-norm rows
    held_out: np.ndarray  # [M, d]
    atoms: np.ndarray  # [A, d] unit rows
    frequent: np.ndarray  # [A] bool
    frequency: np.ndarray  # [A] empirical firing rate on the training rows


def recovery_world(
    n_samples: int = 50_000,
    dim: int = 256,
    n_atoms: int = 200,
    n_frequent: int = 8,
    frequent_cosine: float = 0.3,
    rare_active: float = 4.0,
    offset_strength: float = 3.0,
    noise: float = 0.01,
    held_out: int = 10_000,
    seed: int = 0,
) -> World:
    """Draw the world described in the module docstring (training rows + held-out rows)."""
    rng = np.random.default_rng(seed)
    atoms = rng.normal(size=(n_atoms, dim))
    atoms /= np.linalg.norm(atoms, axis=1, keepdims=True)
    shared = rng.normal(size=dim)
    shared /= np.linalg.norm(shared)
    # Frequent atoms: a common component gives pairwise cosines of about frequent_cosine.
    mix = np.sqrt(frequent_cosine)
    frequent_atoms = mix * shared + np.sqrt(1 - frequent_cosine) * atoms[:n_frequent]
    atoms[:n_frequent] = frequent_atoms / np.linalg.norm(frequent_atoms, axis=1, keepdims=True)
    offset = rng.normal(size=dim)
    offset /= np.linalg.norm(offset)
    n_rare = n_atoms - n_frequent
    zipf = 1.0 / (np.arange(n_rare) + 10.0) ** 1.1
    rare_p = np.minimum(zipf * rare_active / zipf.sum(), 0.5)

    total = n_samples + held_out
    fires = np.zeros((total, n_atoms), dtype=bool)
    groups = np.array_split(np.arange(n_frequent), 2)
    for group in groups:
        on = rng.random(total) < 0.4
        fires[:, group] = (on[:, None] & (rng.random((total, len(group))) < 0.6)) | (
            rng.random((total, len(group))) < 0.05
        )
    fires[:, n_frequent:] = rng.random((total, n_rare)) < rare_p
    codes = np.where(fires, rng.exponential(1.0, fires.shape) + 0.2, 0.0)
    x = codes @ atoms + offset_strength * offset + noise * rng.normal(size=(total, dim))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    x = x.astype(np.float32)
    frequent = np.zeros(n_atoms, dtype=bool)
    frequent[:n_frequent] = True
    return World(x[:n_samples], x[n_samples:], atoms, frequent, fires[:n_samples].mean(0))


@torch.no_grad()
def score(model: SparseAutoencoder, world: World) -> dict[str, float]:
    """MMCS (all, frequent, rare), FVU and dead fraction of a trained model on the world."""
    cos = atom_recovery(world.atoms, model.decoder_directions().detach().cpu().numpy())
    x = torch.from_numpy(world.held_out)
    z = model.encode(x)
    x_hat = model.decode(z)
    fvu = float((x - x_hat).pow(2).sum() / (x - x.mean(0)).pow(2).sum())
    return {
        "mmcs": float(cos.mean()),
        "mmcs_frequent": float(cos[world.frequent].mean()),
        "mmcs_rare": float(cos[~world.frequent].mean()),
        "min_cos_frequent": float(cos[world.frequent].min()),
        "fvu": fvu,
        "dead_fraction": float(((z > 0).sum(0) == 0).float().mean()),
        "l0": float((z > 0).sum(1).float().mean()),
    }


# ------------------------------------------------------------------------------------------
# Architectures and training settings
# ------------------------------------------------------------------------------------------

ARCHS = ("matryoshka-uw", "matryoshka-rw", "topk", "relu")


def sae_config(arch: str, d: int, expansion: int, k: int, l1: float) -> SAEConfig:
    n = d * expansion
    if arch.startswith("matryoshka"):
        weighting = arch.split("-")[1]
        return SAEConfig("matryoshka", d, n, k_list=matryoshka_k_list(n, k), weighting=weighting)
    if arch == "topk":
        return SAEConfig("topk", d, n, k=k)
    if arch == "relu":
        return SAEConfig("relu", d, n, l1=l1)
    raise ValueError(arch)


#: Named training settings (TrainConfig overrides): ``default`` is this project's default;
#: ``reference`` the paper's code — its per-architecture learning rates, encoder scale ≈ 0.01,
#: ``b_pre = 0``, renormalisation before clipping and its input scale.
SETTINGS: dict[str, dict[str, Any]] = {
    "default": {},
    "reference": {
        "enc_init_scale": 0.01,
        "b_pre_init": "zero",
        "warmup_steps": 0,
        "decoder_renorm": "before_clip",
        "scale_rule": "reference",
    },
}


def train_curve(
    store: EmbeddingStore,
    world: World,
    sae_cfg: SAEConfig,
    train_cfg: TrainConfig,
    out: Path,
    points: list[int],
) -> list[dict[str, Any]]:
    """One training run, scored after each step count in ``points`` (the run is interrupted
    there and resumed, which gives the same weights as an uninterrupted run); the last point
    is the finished run, learning-rate decay included."""
    rows: list[dict[str, Any]] = []
    done, started = 0, time.perf_counter()
    for steps in points:
        last = steps == points[-1]
        result = train_sae(
            store,
            sae_cfg,
            train_cfg,
            out,
            resume=done > 0,
            stop_after=None if last else steps - done,
        )
        done = result.state.step
        rows.append({"steps": done, "seconds": round(time.perf_counter() - started, 1),
                     **score(result.model, world)})  # fmt: skip
    return rows


def parse_overrides(items: list[str], config: type) -> dict[str, Any]:
    """``name=value`` pairs for a config's fields (values parsed as JSON when they can be)."""
    fields = {f.name for f in dataclasses.fields(config)}
    out: dict[str, Any] = {}
    for item in items:
        name, _, value = item.partition("=")
        if name not in fields:
            raise SystemExit(f"{name}: not a {config.__name__} field ({', '.join(sorted(fields))})")
        try:
            out[name] = json.loads(value)
        except json.JSONDecodeError:
            out[name] = value
    return out


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny world and runs (for tests)")
    parser.add_argument("--samples", type=int, default=50_000)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--atoms", type=int, default=200)
    parser.add_argument("--expansions", type=int, nargs="+", default=[1, 2, 8])
    parser.add_argument("--epochs", type=int, default=8, help="length of each run")
    parser.add_argument("--points", type=int, default=4, help="curve points per run (halving)")
    parser.add_argument("--only", nargs="+", choices=ARCHS, default=list(ARCHS))
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--k", type=int, default=16, help="TopK k and the Matryoshka k_min")
    parser.add_argument("--l1", type=float, default=0.03, help="ReLU L1 strength (paper scale)")
    parser.add_argument("--setting", choices=sorted(SETTINGS), default="default")
    parser.add_argument("--set", nargs="*", default=[], help="TrainConfig overrides name=value")
    parser.add_argument("--seed", type=int, default=0, help="SAE initialisation and batch order")
    parser.add_argument("--world-seed", type=int, default=0)
    parser.add_argument(
        "--sae-set",
        nargs="*",
        default=[],
        help="SAEConfig overrides, e.g. loss=nmse mean_center=false",
    )
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path, help="write every figure here")
    parser.add_argument("--markdown", type=Path, help="write the table as Markdown here")
    return parser


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = _parser().parse_args(argv)
    if args.quick:
        args.samples, args.dim, args.atoms = 3000, 32, 24
        args.expansions, args.epochs, args.points, args.batch_size, args.k = [2], 2, 2, 256, 4
    torch.set_num_threads(args.threads)
    world = recovery_world(args.samples, args.dim, args.atoms, seed=args.world_seed)
    overrides = {**SETTINGS[args.setting], **parse_overrides(args.set, TrainConfig)}
    steps_per_epoch = -(-args.samples // args.batch_size)
    total = args.epochs * steps_per_epoch
    points = sorted({max(1, total >> i) for i in range(args.points)})
    rows: list[dict[str, Any]] = []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        store = write_store(Path(tmp) / "store", world.train, model="recovery-world")
        for arch in args.only:
            for expansion in args.expansions:
                sae_cfg = dataclasses.replace(
                    sae_config(arch, args.dim, expansion, args.k, args.l1),
                    **parse_overrides(args.sae_set, SAEConfig),
                )
                run = dict(overrides)
                if args.setting == "reference" and "lr" not in run:
                    run["lr"] = REFERENCE_LR[sae_cfg.arch]
                train_cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch_size,
                                        seed=args.seed, device="cpu", checkpoint_every=0, **run)  # fmt: skip
                out = Path(tmp) / f"{arch}-{expansion}"
                for point in train_curve(store, world, sae_cfg, train_cfg, out, points):
                    row = {"arch": arch, "expansion": expansion, **point}
                    rows.append(row)
                    print(_format_row(row), flush=True)
    figures = {
        "setting": args.setting,
        "overrides": overrides,
        "sae_overrides": parse_overrides(args.sae_set, SAEConfig),
        "seed": args.seed,
        "world": _describe(world, args),
        "batch_size": args.batch_size,
        "epochs": args.epochs,
        "k": args.k,
        "l1": args.l1,
        "rows": rows,
        "seconds": round(time.perf_counter() - started, 1),
        "machine": f"{platform.processor() or platform.machine()}, {args.threads} thread(s)",
        "torch": torch.__version__,
    }
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(figures, indent=2))
    if args.markdown:
        args.markdown.write_text(markdown_table(figures))
    print(f"total {figures['seconds']} s")
    return figures


def markdown_table(figures: dict[str, Any]) -> str:
    """The rows as a Markdown table (one line per architecture, expansion and step count)."""
    lines = [
        "| architecture | expansion | steps | MMCS all | MMCS frequent (min) | MMCS rare | FVU "
        "| L0 | dead |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in figures["rows"]:
        lines.append(
            f"| {r['arch']} | {r['expansion']}× | {r['steps']} | {r['mmcs']:.3f} "
            f"| {r['mmcs_frequent']:.3f} ({r['min_cos_frequent']:.3f}) | {r['mmcs_rare']:.3f} "
            f"| {r['fvu']:.4f} | {r['l0']:.1f} | {r['dead_fraction']:.3f} |"
        )
    return "\n".join(lines) + "\n"


def _describe(world: World, args: argparse.Namespace) -> dict[str, Any]:
    rare = world.frequency[~world.frequent]
    return {
        "samples": args.samples,
        "dim": args.dim,
        "atoms": args.atoms,
        "frequent": int(world.frequent.sum()),
        "frequent_rate": round(float(world.frequency[world.frequent].mean()), 4),
        "rare_rate_range": [round(float(rare.min()), 5), round(float(rare.max()), 4)],
        "active_per_sample": round(float(world.frequency.sum()), 2),
    }


def _format_row(row: dict[str, Any]) -> str:
    return (
        f"{row['arch']:14s} {row['expansion']}x {row['steps']:5d} steps  "
        f"MMCS {row['mmcs']:.3f}  frequent {row['mmcs_frequent']:.3f} "
        f"(min {row['min_cos_frequent']:.3f})  rare {row['mmcs_rare']:.3f}  "
        f"FVU {row['fvu']:.4f}  dead {row['dead_fraction']:.3f}  L0 {row['l0']:.1f}  "
        f"{row['seconds']:.0f} s"
    )


if __name__ == "__main__":
    main()
