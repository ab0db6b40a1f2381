"""Matryoshka SAE training throughput (samples/s) and its ratio to the naive per-level algorithm.

Data (``--data``): ``clip`` — random but CLIP-shaped embeddings: unit-norm rows around a shared
direction (CLIP's "cone": pairwise cosines around 0.5) plus an anisotropic Gaussian with a
power-law spectrum in a random basis; ``sparse`` — the same shape, but the varying part is a
sparse non-negative mix of ``n/4`` fixed atoms (8 per row), the structure an SAE finds in real
embeddings, so training makes codes sparse. Written chunk by chunk to a temporary store (or
to ``--make-store PATH`` for later runs).

Measured in one process, on the same data and the same initial weights:

* ``train_sae`` — the product's training loop end to end (batches from the store, our fast
  nested loss, backward, decoder-gradient projection, clipping, AdamW, renormalisation,
  dead-latent counters, metrics) for ``--epochs`` epochs: samples/s over the whole run and
  over its steady state (the first step excluded);
* a bare loop of the same training step with our loss, and with the naive loss
  (:func:`audit.sae.nested.naive_nested_loss`: per level one top-k, a dense ``[B, n]`` code and
  a full decode, back-propagated by autograd) — only the loss differs, so their ratio is the
  algorithm's speed-up. Both loops start from the same weights and see the same batches, in
  two regimes: ``init`` (random initialisation: about half the latents are positive) and
  ``trained`` (the weights the ``train_sae`` run ended with; fewer active latents, which our
  algorithm exploits and the naive one cannot). The mean and largest number of positive
  pre-activations per row say which regime a figure describes.

Usage::

    python benchmarks/train_throughput.py                     # d=512, n=4096, batch 4096, k_min 64
    python benchmarks/train_throughput.py --rows 262144 --epochs 4 --lr 1e-3 --naive-steps 5
    python benchmarks/train_throughput.py --d 768 --n 6144 --rows 2900000 --epochs 30 --device cuda
    python benchmarks/train_throughput.py --d 768 --rows 2900000 --make-store /data/clip2p9m
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch

from audit.device import resolve_device, tune_cpu_allocator
from audit.sae import SAEConfig, build_sae, matryoshka_k_list
from audit.sae.base import SparseAutoencoder
from audit.sae.data import epoch_order
from audit.sae.train import TrainConfig, train_sae
from audit.store import EmbeddingStore, StoreWriter, open_store


def clip_shaped_chunks(
    rows: int, dim: int, seed: int = 0, chunk_rows: int = 1 << 16
) -> Iterator[np.ndarray]:
    """Unit-norm rows: a shared direction plus a power-law-spectrum Gaussian, chunk by chunk."""
    rng = np.random.default_rng(seed)
    shared = rng.normal(size=dim)
    shared /= np.linalg.norm(shared)
    basis, _ = np.linalg.qr(rng.normal(size=(dim, dim)))
    spectrum = 1.0 / np.sqrt(np.arange(1, dim + 1))  # std of component i ∝ i^(-1/2)
    spectrum /= np.linalg.norm(spectrum)  # E‖noise‖² = 1
    for start in range(0, rows, chunk_rows):
        n = min(chunk_rows, rows - start)
        noise = (rng.normal(size=(n, dim)) * spectrum) @ basis.T
        x = 0.75 * shared + 0.66 * noise
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        yield x.astype(np.float32)


def sparse_clip_chunks(
    rows: int, dim: int, atoms: int, active: int = 8, seed: int = 0, chunk_rows: int = 1 << 16
) -> Iterator[np.ndarray]:
    """CLIP-shaped rows whose varying part mixes ``active`` of ``atoms`` fixed directions."""
    rng = np.random.default_rng(seed)
    shared = rng.normal(size=dim)
    shared /= np.linalg.norm(shared)
    dictionary = rng.normal(size=(atoms, dim))
    dictionary /= np.linalg.norm(dictionary, axis=1, keepdims=True)
    for start in range(0, rows, chunk_rows):
        n = min(chunk_rows, rows - start)
        chosen = rng.integers(0, atoms, size=(n, active))
        weights = rng.exponential(1.0, size=(n, active, 1)) + 0.2
        mix = (weights * dictionary[chosen]).sum(1)
        mix /= np.linalg.norm(mix, axis=1, keepdims=True)
        x = 0.75 * shared + 0.66 * mix + 0.02 * rng.normal(size=(n, dim))
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        yield x.astype(np.float32)


def make_store(
    path: Path, rows: int, dim: int, seed: int, data: str = "clip", n_latents: int = 4096
) -> EmbeddingStore:
    writer = StoreWriter(path, dim, model=f"{data}-shaped-random", overwrite=True)
    chunks = (
        sparse_clip_chunks(rows, dim, max(1, n_latents // 4), seed=seed)
        if data == "sparse"
        else clip_shaped_chunks(rows, dim, seed)
    )
    for block in chunks:
        writer.append(block)
    return writer.finalize()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bare_step(model: SparseAutoencoder, naive: bool) -> Callable[[torch.Tensor], None]:
    """The training step of ``train_sae`` without its bookkeeping; only the loss differs."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, eps=6.25e-10)

    def step(x: torch.Tensor) -> None:
        loss = model.naive_training_loss(x) if naive else model.training_loss(x).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        model.project_decoder_grad()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        model.normalize_decoder()

    return step


def time_bare_loop(
    init: SparseAutoencoder, batches: list[torch.Tensor], naive: bool, device: torch.device
) -> list[float]:
    """Seconds per step over ``batches`` (the first batch is an untimed warm-up)."""
    model = build_sae(init.cfg).to(device)
    model.load_state_dict(init.state_dict())
    model.train()
    step = bare_step(model, naive)
    times = []
    for i, x in enumerate(batches):
        _sync(device)
        start = time.perf_counter()
        step(x)
        _sync(device)
        if i > 0:
            times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--d", type=int, default=512, help="embedding dimension")
    parser.add_argument("--n", type=int, default=4096, help="latents")
    parser.add_argument("--batch", type=int, default=4096)
    parser.add_argument("--k-min", type=int, default=64)
    parser.add_argument("--weighting", default="uw", choices=["uw", "rw"])
    parser.add_argument("--rows", type=int, default=65536, help="rows of random CLIP-shaped data")
    parser.add_argument("--data", default="clip", choices=["clip", "sparse"], help="see above")
    parser.add_argument("--epochs", type=int, default=1, help="epochs of train_sae")
    parser.add_argument("--lr", type=float, default=None, help="train_sae learning rate")
    parser.add_argument(
        "--regimes", default="init,trained", help="bare-loop regimes to time: init, trained"
    )
    parser.add_argument("--naive-steps", type=int, default=3, help="timed steps per bare loop")
    parser.add_argument("--device", default="cpu", help="cpu | cuda | auto")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--store", type=Path, default=None, help="use this store instead")
    parser.add_argument(
        "--make-store", type=Path, default=None, help="only write the random store here and exit"
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args()

    if args.make_store is not None:
        store = make_store(args.make_store, args.rows, args.d, args.seed, args.data, args.n)
        print(f"wrote {store.describe()} to {args.make_store}")
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    if device.type == "cpu":
        tune_cpu_allocator()  # train_sae does this too; both bare loops get it alike
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True

    cfg = SAEConfig(
        arch="matryoshka",
        d_in=args.d,
        n_latents=args.n,
        k_list=matryoshka_k_list(args.n, args.k_min),
        weighting=args.weighting,
    )
    train_cfg = TrainConfig(
        epochs=args.epochs,
        batch_size=args.batch,
        lr=args.lr,
        seed=args.seed,
        checkpoint_every=0,
        device=str(device),
        log_every=1_000_000,
    )
    header = (
        f"device={device} ({platform.processor() or platform.machine()}), "
        f"threads={torch.get_num_threads()}, torch={torch.__version__}, d={args.d}, n={args.n}, "
        f"batch={args.batch}, k_list={list(cfg.k_list)}, {args.weighting}, rows={args.rows}, "
        f"data={'store ' + str(args.store) if args.store else args.data}"
    )
    print(header, flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        store = open_store(args.store) if args.store else None
        if store is None:
            store = make_store(Path(tmp) / "data", args.rows, args.d, args.seed, args.data, args.n)
        if store.dim != args.d:
            raise SystemExit(f"--store has dimension {store.dim}, not --d {args.d}")

        # 1. The product's training loop, end to end.
        stamps: list[float] = []
        result = train_sae(
            store,
            cfg,
            train_cfg,
            Path(tmp) / "sae",
            on_step=lambda state, metrics: stamps.append(time.perf_counter()),
        )
        summary = result.summary
        steady = (
            (summary["samples"] - min(args.batch, store.count)) / (stamps[-1] - stamps[0])
            if len(stamps) > 1
            else float("nan")
        )

        train_figures = {
            "epochs": args.epochs,
            "steps": summary["steps"],
            "seconds": summary["seconds"],
            "samples_per_second": summary["samples_per_second"],
            "steady_samples_per_second": round(steady, 1),
            "final_fvu_batch": summary["final"].get("fvu"),
        }
        t = train_figures
        print(
            f"train_sae, {t['epochs']} epoch(s), {t['steps']} steps: "
            f"{t['samples_per_second']:,.0f} samples/s overall, "
            f"{t['steady_samples_per_second']:,.0f} samples/s after the first step "
            f"({t['seconds']:.1f} s, final batch FVU {t['final_fvu_batch']:.3f})",
            flush=True,
        )

        # 2. Bare loops, ours and naive, from the same weights on the same batches.
        trained = result.model.to(device)
        init = build_sae(cfg)
        init.reset_parameters(generator=torch.Generator().manual_seed(args.seed))
        init.set_preprocessing(trained.mean.cpu(), trained.scale.cpu())
        # Only the batches the loops use are read (not the whole store): epoch 0's first ones.
        order = epoch_order(args.seed, 0, store.count).numpy()
        full_batches = max(1, store.count // args.batch)
        batches = []
        for i in range(args.naive_steps + 1):
            rows = order[(i % full_batches) * args.batch : (i % full_batches + 1) * args.batch]
            x = torch.from_numpy(store.take(rows)).to(device)
            batches.append(trained.preprocess(x).detach())
        starts = {"init": init.to(device), "trained": trained}
        regimes = {}
        for name in [r.strip() for r in args.regimes.split(",") if r.strip()]:
            weights = starts[name]
            with torch.no_grad():
                active = (weights.pre_activations(batches[0]) > 0).sum(1).float()
            ours = time_bare_loop(weights, batches, naive=False, device=device)
            naive = time_bare_loop(weights, batches, naive=True, device=device)
            ours_step, naive_step = statistics.median(ours), statistics.median(naive)
            regimes[name] = {
                "active_mean": round(float(active.mean()), 1),
                "active_max": int(active.max()),
                "ours_step_seconds": ours,
                "naive_step_seconds": naive,
                "ours_samples_per_second": round(args.batch / ours_step, 1),
                "naive_samples_per_second": round(args.batch / naive_step, 1),
                "speedup_vs_naive": round(naive_step / ours_step, 2),
            }
            print(
                f"bare step [{name}: {regimes[name]['active_mean']:.0f} of {args.n} latents "
                f"positive per row on average, at most {regimes[name]['active_max']}], median of "
                f"{len(ours)}: ours {ours_step * 1000:,.0f} ms "
                f"({regimes[name]['ours_samples_per_second']:,.0f} samples/s), naive "
                f"{naive_step * 1000:,.0f} ms "
                f"({regimes[name]['naive_samples_per_second']:,.0f} samples/s) -> "
                f"{regimes[name]['speedup_vs_naive']:.2f}x faster than naive",
                flush=True,
            )

    figures = {
        "device": str(device),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "config": {
            k: getattr(args, k)
            for k in ("d", "n", "batch", "k_min", "weighting", "rows", "lr", "data")
        },
        "k_list": list(cfg.k_list),
        "train_sae": train_figures,
        "bare_loops": regimes,
    }
    if args.json is not None:
        args.json.write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
