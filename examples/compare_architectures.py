"""Reproduce the paper's architecture comparison (Zaigrajew et al., ICML 2025, Table 1) on a store.

Trains eight SAEs on the same embeddings with the same epochs, batch size and seed — ReLU
(two L1 strengths λ), TopK (k = 64, 256), BatchTopK (k = 64, 256), Matryoshka UW and RW
(k_min = 64) — then evaluates them with ``msae-audit``'s evaluation (every metric in raw
embedding space) and writes::

    OUTDIR/models/<name>/      the trained SAEs (reused on a second run unless --retrain)
    OUTDIR/compare.json        every model's eval JSON (schema msae-audit/compare)
    OUTDIR/compare.html        the table, the sparsity–fidelity plot and progressive recovery
    OUTDIR/table.md            the table as Markdown (also printed)

Usage::

    # on the project's planted CLIP-like data (written to STORE first if it does not exist)
    python examples/compare_architectures.py reports/planted-store reports/arch --planted 60000
    # on any store, e.g. the tiny-CLIP world embeddings
    python examples/compare_architectures.py path/to/store reports/arch-world --epochs 20

Learning rates default to the reference code's per-architecture values (``--lr`` sets one for
all). If the store's ``metadata.csv`` has the ``--label-column`` (default ``label``), LP-KL and
LP-agreement are computed too.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from audit.data.planted import planted_embeddings
from audit.evaluate import EvalConfig, evaluate_sae, fit_probe
from audit.fileio import read_json, write_json, write_text
from audit.report.compare import COLUMNS, build_comparison, render_compare_html, table_rows
from audit.sae import SAEConfig, load_sae, matryoshka_k_list
from audit.sae.base import expansion_to_latents
from audit.sae.train import REFERENCE_LR, TrainConfig, train_sae
from audit.store import EmbeddingStore, open_store, write_store


@dataclass(frozen=True)
class Spec:
    name: str
    arch: str
    k: int | None = None
    l1: float | None = None
    weighting: str = "uw"


# ReLU λ on the paper's scale: audit.sae.relu normalises the L1 term by ‖x̃‖ like the paper's code.
SPECS = (
    Spec("ReLU λ=0.03", "relu", l1=0.03),
    Spec("ReLU λ=0.003", "relu", l1=0.003),
    Spec("TopK k=64", "topk", k=64),
    Spec("TopK k=256", "topk", k=256),
    Spec("BatchTopK k=64", "batchtopk", k=64),
    Spec("BatchTopK k=256", "batchtopk", k=256),
    Spec("Matryoshka UW", "matryoshka", weighting="uw"),
    Spec("Matryoshka RW", "matryoshka", weighting="rw"),
)


def folder_name(spec: Spec) -> str:
    return spec.name.lower().replace(" ", "-").replace("λ=", "l").replace("=", "")


def write_planted_store(path: Path, rows: int, dim: int, atoms: int, active: int) -> None:
    """Planted CLIP-like embeddings with a binary ``label`` for the probe: the side of a seeded
    random hyperplane through the median (a linear concept, so the probe can learn it and LP
    metrics measure how often reconstruction error moves a sample across it)."""
    data = planted_embeddings(n_samples=rows, dim=dim, n_atoms=atoms, active=active, seed=0)
    direction = np.random.default_rng(1).normal(size=dim)
    score = data.embeddings.astype(np.float64) @ direction
    labels = pd.DataFrame({"id": np.arange(rows), "label": (score > np.median(score)).astype(int)})
    write_store(path, data.embeddings, labels, model="planted-atoms", normalized=True)
    print(f"wrote {rows:,} planted embeddings (d={dim}, {atoms} atoms, {active} active) to {path}")


def sae_config(spec: Spec, store: EmbeddingStore, n_latents: int, k_min: int) -> SAEConfig:
    return SAEConfig(
        arch=spec.arch,
        d_in=store.dim,
        n_latents=n_latents,
        k=spec.k,
        k_list=matryoshka_k_list(n_latents, k_min) if spec.arch == "matryoshka" else None,
        weighting=spec.weighting,
        l1=spec.l1,
        embedding_model=store.model,
        modality=store.modality,
    )


def train_all(store: EmbeddingStore, out: Path, args: argparse.Namespace) -> dict[str, float]:
    n_latents = expansion_to_latents(store.dim, args.expansion)
    seconds = {}
    for spec in SPECS:
        target = out / "models" / folder_name(spec)
        if (target / "sae.safetensors").exists() and not args.retrain:
            seconds[spec.name] = read_json(target / "training.json").get("seconds", float("nan"))
            print(f"{spec.name:16s} reusing {target}")
            continue
        train_cfg = TrainConfig(
            epochs=args.epochs,
            batch_size=args.batch_size,
            lr=args.lr if args.lr is not None else REFERENCE_LR[spec.arch],
            seed=args.seed,
            device=args.device,
            checkpoint_every=0,
        )
        result = train_sae(store, sae_config(spec, store, n_latents, args.k_min), train_cfg, target)
        seconds[spec.name] = result.summary["seconds"]
        final = result.summary["final"]
        print(
            f"{spec.name:16s} trained in {seconds[spec.name]:6.1f} s "
            f"(last batch: FVU {final.get('fvu', float('nan')):.4f}, L0 {final.get('l0', 0):.0f})"
        )
    return seconds


def markdown_table(comparison: dict[str, Any], train_seconds: dict[str, float]) -> str:
    headers = ["model", *(header for _, header, _, _ in COLUMNS), "train s"]
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for row in table_rows(comparison):
        lines.append(
            "| " + " | ".join([*row, f"{train_seconds.get(row[0], float('nan')):.0f}"]) + " |"
        )
    return "\n".join(lines) + "\n"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("store", type=Path, help="embedding store (or .npy)")
    parser.add_argument("outdir", type=Path)
    parser.add_argument(
        "--planted", type=int, default=0, help="write N planted rows to STORE first"
    )
    parser.add_argument("--planted-dim", type=int, default=128)
    parser.add_argument("--planted-atoms", type=int, default=2048)
    parser.add_argument("--planted-active", type=int, default=32)
    parser.add_argument("--expansion", type=float, default=8.0)
    parser.add_argument("--k-min", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--lr", type=float, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--label-column", default="label")
    parser.add_argument("--retrain", action="store_true")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    if args.planted and not args.store.exists():
        write_planted_store(
            args.store, args.planted, args.planted_dim, args.planted_atoms, args.planted_active
        )
    store = open_store(args.store)
    started = time.perf_counter()
    train_seconds = train_all(store, args.outdir, args)

    labels = None
    if store.metadata is not None and args.label_column in store.metadata.columns:
        labels = store.labels(args.label_column)
    cfg = EvalConfig(device=args.device, seed=args.seed)
    probe = fit_probe(store, labels, cfg, args.label_column) if labels is not None else None
    results = []
    for spec in SPECS:
        target = args.outdir / "models" / folder_name(spec)
        results.append(
            evaluate_sae(
                load_sae(target),
                store,
                cfg,
                probe=probe,
                sae_path=str(target),
            )
        )
    comparison = build_comparison(results, [spec.name for spec in SPECS])
    comparison["training"] = {
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "lr": args.lr or "per-architecture, the reference code's",
        "relu_l1_used": {s.name: s.l1 for s in SPECS if s.l1 is not None},
        "seed": args.seed,
        "expansion": args.expansion,
        "k_min": args.k_min,
        "seconds": train_seconds,
    }
    write_json(args.outdir / "compare.json", comparison)
    write_text(args.outdir / "compare.html", render_compare_html(comparison))
    table = markdown_table(comparison, train_seconds)
    write_text(args.outdir / "table.md", table)
    print()
    print(table)
    print(f"total {time.perf_counter() - started:.0f} s; wrote {args.outdir}/compare.html")


if __name__ == "__main__":
    main()
