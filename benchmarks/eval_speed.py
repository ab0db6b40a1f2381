"""How long ``msae-audit eval`` takes: 200k × 512 planted embeddings, a Matryoshka SAE, n = 4096.

Everything ``eval`` computes is timed (one chunked pass for L0, both FVUs, cosine, dead latents
and progressive recovery at k = 16 … 4096; CKNNA on its 4096-row subsample; decoder
orthogonality), on a store read from disk through its memory map. The SAE is randomly
initialised (``--train-steps 0``, the default) or briefly trained. A random ReLU code has about
half the latents active, the slow case for progressive recovery; a trained Matryoshka SAE is
sparser, so the default setting is pessimistic.

With ``--naive-rows R`` the first R rows are also scored the way the paper's evaluation script
does it (one top-k and one full decode per progressive level), for comparison.

Usage::

    python benchmarks/eval_speed.py                       # 200k × 512, n = 4096, cpu
    python benchmarks/eval_speed.py --rows 1000000 --device cuda
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from device_stats import device_name, mib, peak_memory_bytes, reset_peak_memory

from audit.data.planted import planted_embeddings
from audit.device import resolve_device
from audit.evaluate import EvalConfig, evaluate_sae
from audit.metrics import progressive_ks
from audit.sae import SAEConfig, build_sae, keep_topk, matryoshka_k_list
from audit.sae.data import fit_preprocessing
from audit.sae.train import TrainConfig, train_sae
from audit.store import EmbeddingStore, write_store


def make_store(root: Path, rows: int, dim: int, seed: int) -> EmbeddingStore:
    data = planted_embeddings(n_samples=rows, dim=dim, n_atoms=1024, active=16, seed=seed)
    return write_store(root / "store", data.embeddings, model="planted", normalized=True)


def make_sae(store: EmbeddingStore, n_latents: int, train_steps: int, root: Path, device: str):
    cfg = SAEConfig(
        arch="matryoshka",
        d_in=store.dim,
        n_latents=n_latents,
        k_list=matryoshka_k_list(n_latents, 64),
    )
    if train_steps > 0:
        train_cfg = TrainConfig(
            epochs=1, batch_size=4096, max_steps=train_steps, device=device, checkpoint_every=0
        )
        return train_sae(store, cfg, train_cfg, root / "sae").model.cpu().eval()
    model = build_sae(cfg)
    model.reset_parameters(generator=torch.Generator().manual_seed(0))
    prep = fit_preprocessing(store)
    model.set_preprocessing(torch.from_numpy(prep.mean).float(), prep.scale)
    return model.eval()


@torch.inference_mode()
def naive_progressive_seconds(model, store: EmbeddingStore, rows: int, device) -> float:
    """The reference way: a separate top-k and full decode for every level."""
    model = model.to(device)
    ks = progressive_ks(model.n_latents)
    started = time.perf_counter()
    for lo in range(0, rows, 4096):
        x = torch.tensor(store.read(lo, min(lo + 4096, rows)), device=device)
        z = model.encode(x)
        for k in ks:
            x_hat = model.decode(keep_topk(z, k))
            float((x - x_hat).pow(2).sum())
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--latents", type=int, default=4096)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--chunk-rows", type=int, default=None)
    parser.add_argument("--train-steps", type=int, default=0)
    parser.add_argument("--naive-rows", type=int, default=0)
    parser.add_argument(
        "--no-progressive", action="store_true", help="skip progressive recovery (k = 16 … n)"
    )
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        store = make_store(root, args.rows, args.dim, seed=0)
        model = make_sae(store, args.latents, args.train_steps, root, args.device)
        setup = time.perf_counter() - t0
        cfg = EvalConfig(
            device=args.device, chunk_rows=args.chunk_rows, progressive=not args.no_progressive
        )
        reset_peak_memory(device)
        t0 = time.perf_counter()
        result = evaluate_sae(model, store, cfg)
        seconds = time.perf_counter() - t0
        peak = peak_memory_bytes(device)
        timing = result["timing"]
        print(
            f"eval of {args.rows:,} x {args.dim} embeddings, n = {args.latents} "
            f"({'trained ' + str(args.train_steps) + ' steps' if args.train_steps else 'random init'}"
            f", L0 = {result['l0']:.0f}) on {timing['device']}, "
            f"{torch.get_num_threads()} CPU threads"
        )
        print(f"  total                 {seconds:8.1f} s   (setup, not timed: {setup:.0f} s)")
        print(
            f"  chunked pass          {timing['seconds_reconstruction_pass']:8.1f} s   "
            f"({timing['rows_per_second']:,.0f} rows/s; "
            f"{len(result['progressive'])} progressive levels)"
        )
        print(
            f"  CKNNA ({result['cknna_detail']['samples']} rows)    {timing['seconds_cknna']:8.1f} s"
        )
        print(
            f"  FVU {result['fvu']:.4f}  FVU/sample {result['fvu_per_sample']:.4f}  "
            f"cosine {result['cosine']:.4f}  CKNNA {result['cknna']:.3f}  "
            f"DO {result['decoder_orthogonality']:.2e}"
        )
        if peak is not None:
            print(f"  peak memory           {mib(peak):8,.0f} MiB")
        figures = {
            "device": str(device),
            "device_name": device_name(device),
            "rows": args.rows,
            "dim": args.dim,
            "latents": args.latents,
            "seconds": round(seconds, 2),
            "rows_per_second": round(args.rows / seconds, 1),
            "pass_seconds": round(timing["seconds_reconstruction_pass"], 2),
            "cknna_seconds": round(timing["seconds_cknna"], 2),
            "peak_memory_mib": mib(peak),
        }
        if args.naive_rows:
            rows = min(args.naive_rows, args.rows)
            naive = naive_progressive_seconds(model, store, rows, device)
            ours = timing["seconds_reconstruction_pass"] * rows / args.rows
            print(
                f"  naive per-level decode on {rows:,} rows: {naive:.1f} s "
                f"(ours, pro rata: {ours:.1f} s)"
            )
            figures["naive"] = {"rows": rows, "seconds": round(naive, 2), "ours_pro_rata": ours}
        if args.json is not None:
            args.json.write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    np.set_printoptions(precision=4)
    main()
