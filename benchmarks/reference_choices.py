"""Two of the choices where this project and the paper's reference code differ, measured on a
store (docs/reference-differences.md):

* ``scale`` — the input scale: ours ``√(d / E‖x − μ‖²)`` against the reference's
  ``√d / E‖x − μ‖²``, for each learning rate given: a Matryoshka SAE trained under each rule
  and evaluated with ``msae-audit eval``'s metrics;
* ``progressive`` — a TopK SAE's progressive recovery on its own top-k code against the
  reference evaluation's ReLU(pre) code.

Usage (the tiny-CLIP world: ``msae-audit demo --out DEMO`` writes ``DEMO/corpus_store``)::

    python benchmarks/reference_choices.py scale DEMO/corpus_store --lrs 1e-4 1e-3 3e-3
    python benchmarks/reference_choices.py progressive DEMO/corpus_store
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from audit.evaluate import EvalConfig, evaluate_sae
from audit.sae import SAEConfig, matryoshka_k_list
from audit.sae.train import TrainConfig, train_sae
from audit.store import EmbeddingStore, open_store


def _train(store: EmbeddingStore, cfg: SAEConfig, args: argparse.Namespace, **options: Any):
    with tempfile.TemporaryDirectory() as tmp:
        train_cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, seed=args.seed,
                                device="cpu", checkpoint_every=0, **options)  # fmt: skip
        return train_sae(store, cfg, train_cfg, Path(tmp) / "sae").model.eval()


def scale(store: EmbeddingStore, args: argparse.Namespace) -> list[dict[str, Any]]:
    n = store.dim * args.expansion
    cfg = SAEConfig("matryoshka", store.dim, n, k_list=matryoshka_k_list(n, args.k))
    rows = []
    for lr in args.lrs:
        for rule in ("unit", "reference"):
            started = time.perf_counter()
            model = _train(store, cfg, args, lr=lr, scale_rule=rule)
            ev = evaluate_sae(model, store, EvalConfig(device="cpu", cknna_samples=2048))
            row = {"scale_rule": rule, "lr": lr, "scale": float(model.scale),
                   **{k: ev[k] for k in ("fvu", "fvu_per_sample", "cosine", "cknna", "l0",
                                         "dead_latents")},
                   "seconds": round(time.perf_counter() - started, 1)}  # fmt: skip
            print(json.dumps(row), flush=True)
            rows.append(row)
    return rows


def progressive(store: EmbeddingStore, args: argparse.Namespace) -> list[dict[str, Any]]:
    cfg = SAEConfig("topk", store.dim, store.dim * args.expansion, k=args.k)
    model = _train(store, cfg, args)
    rows = []
    for code in ("inference", "relu"):
        ev = evaluate_sae(model, store, EvalConfig(device="cpu", cknna_samples=0, code=code))
        levels = [{k: p[k] for k in ("k", "l0", "fvu", "cosine")} for p in ev["progressive"]]
        print(code, json.dumps(levels), flush=True)
        rows.append({"code": code, "progressive": levels})
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("what", choices=("scale", "progressive"))
    parser.add_argument("store", type=Path)
    parser.add_argument("--lrs", type=float, nargs="+", default=[1e-4, 1e-3, 3e-3])
    parser.add_argument("--expansion", type=int, default=8)
    parser.add_argument("--k", type=int, default=16, help="Matryoshka k_min / TopK k")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    store = open_store(args.store)
    rows = scale(store, args) if args.what == "scale" else progressive(store, args)
    if args.json:
        args.json.write_text(json.dumps({"what": args.what, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
