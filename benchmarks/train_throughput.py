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
  the regimes of ``--regimes``: ``init`` (random initialisation: about half the latents are
  positive), ``trained`` (the weights the ``train_sae`` run ended with) and ``active=F`` (the
  initial weights with one encoder bias for all latents that leaves a fraction ``F`` of them
  positive: a trained model's sparsity without the training). The mean and largest number of
  positive pre-activations per row say which regime a figure describes. Each regime is timed
  in each of ``--precisions``: ``fp32`` (TF32 products on a GPU, as ``train_sae`` sets) and
  ``bf16`` (the loss under CUDA bf16 autocast, as ``train_sae`` runs it; our loss casts to
  float32 inside, the naive one multiplies in bf16). Before timing, each regime's loss and
  gradients of ours and naive are compared (|Δloss|, largest relative gradient difference).
  On a GPU each loop's step peak memory is recorded (above what a step starts with:
  parameters, AdamW's moments, the batches), with the analytic estimate for ours
  (:mod:`audit.sae.memory`).

Usage::

    python benchmarks/train_throughput.py                     # d=512, n=4096, batch 4096, k_min 64
    python benchmarks/train_throughput.py --rows 262144 --epochs 4 --lr 1e-3 --naive-steps 5
    python benchmarks/train_throughput.py --d 768 --n 6144 --rows 2900000 --epochs 30 --device cuda
    # the paper's configuration (d 768, expansion 32, RW), as benchmarks/gpu_check.py runs it
    python benchmarks/train_throughput.py --d 768 --n 24576 --weighting rw --rows 262144 \
        --regimes init,active=0.2,active=0.04 --precisions fp32,bf16 --device cuda
    python benchmarks/train_throughput.py --d 768 --rows 2900000 --make-store /data/clip2p9m
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch
from device_stats import (
    allocated_bytes,
    device_name,
    mib,
    peak_memory_bytes,
    reset_peak_memory,
)
from train_step import loss_and_grads

from audit.device import autocast, enable_tf32, resolve_device, tune_cpu_allocator
from audit.sae import SAEConfig, build_sae, matryoshka_k_list
from audit.sae.base import SparseAutoencoder
from audit.sae.data import epoch_order
from audit.sae.memory import step_peak_bytes
from audit.sae.nested_plan import plan_nested_step
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


def bare_step(
    model: SparseAutoencoder, naive: bool, precision: str = "fp32"
) -> Callable[[torch.Tensor], None]:
    """The training step of ``train_sae`` without its bookkeeping; only the loss differs.

    ``precision="bf16"``: the loss under bf16 autocast on CUDA (``train_sae``'s setting; the
    nested loss casts to float32 inside, the naive one runs its products in bf16)."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, eps=6.25e-10)
    device = next(model.parameters()).device

    def step(x: torch.Tensor) -> None:
        optimizer.zero_grad(set_to_none=True)
        with autocast(device, enabled=precision == "bf16"):
            loss = model.naive_training_loss(x) if naive else model.training_loss(x).loss
        loss.backward()
        model.project_decoder_grad()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        model.normalize_decoder()

    return step


def time_bare_loop(
    init: SparseAutoencoder,
    batches: list[torch.Tensor],
    naive: bool,
    device: torch.device,
    precision: str = "fp32",
) -> tuple[list[float], int | None]:
    """Seconds per step over ``batches`` (the first batch is an untimed warm-up), and the peak
    memory a timed step allocated above what it started with (CUDA only: parameters, AdamW's
    moments and the batches are already there; last step's gradients are released first)."""
    model = build_sae(init.cfg).to(device)
    model.load_state_dict(init.state_dict())
    model.train()
    step = bare_step(model, naive, precision)
    times = []
    start_bytes = None
    for i, x in enumerate(batches):
        if i == 1:  # after the warm-up step, which creates AdamW's moments
            model.zero_grad(set_to_none=True)
            reset_peak_memory(device)
            start_bytes = allocated_bytes(device)
        _sync(device)
        start = time.perf_counter()
        step(x)
        _sync(device)
        if i > 0:
            times.append(time.perf_counter() - start)
    peak = peak_memory_bytes(device)
    return times, (peak - start_bytes if peak is not None and start_bytes is not None else None)


def with_active_fraction(
    init: SparseAutoencoder, x: torch.Tensor, fraction: float
) -> SparseAutoencoder:
    """``init`` with one encoder bias for every latent, chosen so that about ``fraction`` of the
    pre-activations of ``x`` are positive: a trained model's sparsity, without training."""
    model = build_sae(init.cfg).to(x.device)
    model.load_state_dict(init.state_dict())
    with torch.no_grad():
        pre = model.pre_activations(x[:256]).flatten().float()
        sample = pre[:: max(1, pre.numel() // 1_000_000)]
        model.b_enc.sub_(torch.quantile(sample, 1.0 - fraction))
    return model


def equality_check(model: SparseAutoencoder, x: torch.Tensor) -> dict[str, float]:
    """|Δloss| and the largest relative gradient difference, ours against naive (float32)."""
    loss_fast, grads_fast = loss_and_grads(model, x, naive=False)
    loss_naive, grads_naive = loss_and_grads(model, x, naive=True)
    grad_err = max(
        float((grads_fast[k] - grads_naive[k]).norm() / grads_naive[k].norm().clamp_min(1e-30))
        for k in grads_fast
    )
    return {"loss_abs_diff": abs(loss_fast - loss_naive), "grad_rel_diff": grad_err}


def _parse_args() -> argparse.Namespace:
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
        "--regimes",
        default="init,trained",
        help="bare-loop regimes: init, trained, and active=F (init weights with an encoder "
        "bias that leaves a fraction F of the latents positive, e.g. active=0.04)",
    )
    parser.add_argument(
        "--precisions", default="fp32", help="bare-loop precisions: fp32, bf16 (CUDA autocast)"
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
    return parser.parse_args()


def run_train_sae(store: EmbeddingStore, cfg: SAEConfig, args, device, out: Path):  # type: ignore[no-untyped-def]
    """The product's training loop end to end: figures and the trained model."""
    train_cfg = TrainConfig(
        epochs=args.epochs,
        batch_size=args.batch,
        lr=args.lr,
        seed=args.seed,
        checkpoint_every=0,
        device=str(device),
        log_every=1_000_000,
    )
    stamps: list[float] = []
    reset_peak_memory(device)
    result = train_sae(
        store,
        cfg,
        train_cfg,
        out,
        on_step=lambda state, metrics: stamps.append(time.perf_counter()),
    )
    summary = result.summary
    steady = (
        (summary["samples"] - min(args.batch, store.count)) / (stamps[-1] - stamps[0])
        if len(stamps) > 1
        else float("nan")
    )
    figures = {
        "epochs": args.epochs,
        "steps": summary["steps"],
        "seconds": summary["seconds"],
        "samples_per_second": summary["samples_per_second"],
        "steady_samples_per_second": round(steady, 1),
        "final_fvu_batch": summary["final"].get("fvu"),
        "peak_memory_mib": mib(peak_memory_bytes(device)),
    }
    print(
        f"train_sae, {args.epochs} epoch(s), {figures['steps']} steps: "
        f"{figures['samples_per_second']:,.0f} samples/s overall, "
        f"{figures['steady_samples_per_second']:,.0f} samples/s after the first step "
        f"({figures['seconds']:.1f} s, final batch FVU {figures['final_fvu_batch']:.3f}"
        + (f", peak {figures['peak_memory_mib']:,.0f} MiB)" if device.type == "cuda" else ")"),
        flush=True,
    )
    return figures, result.model.to(device)


def regime_starts(
    names: list[str], cfg: SAEConfig, trained: SparseAutoencoder, x: torch.Tensor, seed: int
) -> dict[str, SparseAutoencoder]:
    init = build_sae(cfg)
    init.reset_parameters(generator=torch.Generator().manual_seed(seed))
    init.set_preprocessing(trained.mean.cpu(), trained.scale.cpu())
    init = init.to(x.device)
    starts = {}
    for name in names:
        if name == "init":
            starts[name] = init
        elif name == "trained":
            starts[name] = trained
        elif name.startswith("active="):
            starts[name] = with_active_fraction(init, x, float(name.split("=", 1)[1]))
        else:
            raise SystemExit(f"unknown regime {name!r}")
    return starts


def bare_loops(starts, batches, precisions, device, batch: int) -> dict:  # type: ignore[no-untyped-def]
    """Ours against naive from each regime's weights, in each precision."""
    regimes: dict[str, dict] = {}
    for name, weights in starts.items():
        with torch.no_grad():
            active = (weights.pre_activations(batches[0]) > 0).sum(1).float()
        figures: dict = {
            "active_mean": round(float(active.mean()), 1),
            "active_max": int(active.max()),
            **equality_check(weights, batches[0]),
        }
        if device.type == "cuda":
            with torch.no_grad():
                pre = weights.pre_activations(batches[0])
                plan = plan_nested_step(pre, (pre > 0).float(), weights.cfg.k_list or ())
            figures["ours_step_peak_estimate_mib"] = mib(
                step_peak_bytes(plan, batch, weights.n_latents, weights.d_in)
            )
        for precision in precisions:
            ours, ours_peak = time_bare_loop(weights, batches, False, device, precision)
            naive, naive_peak = time_bare_loop(weights, batches, True, device, precision)
            ours_step, naive_step = statistics.median(ours), statistics.median(naive)
            figures[precision] = {
                "ours_step_seconds": ours,
                "naive_step_seconds": naive,
                "ours_samples_per_second": round(batch / ours_step, 1),
                "naive_samples_per_second": round(batch / naive_step, 1),
                "speedup_vs_naive": round(naive_step / ours_step, 2),
                "ours_step_peak_mib": mib(ours_peak),
                "naive_step_peak_mib": mib(naive_peak),
            }
            f = figures[precision]
            print(
                f"bare step [{name}, {precision}: {figures['active_mean']:.0f} of "
                f"{weights.n_latents} latents positive per row on average, at most "
                f"{figures['active_max']}], median of {len(ours)}: ours {ours_step * 1000:,.1f} ms "
                f"({f['ours_samples_per_second']:,.0f} samples/s), naive "
                f"{naive_step * 1000:,.1f} ms ({f['naive_samples_per_second']:,.0f} samples/s) "
                f"-> {f['speedup_vs_naive']:.2f}x faster than naive",
                flush=True,
            )
        regimes[name] = figures
    return regimes


def main() -> None:
    args = _parse_args()
    if args.make_store is not None:
        store = make_store(args.make_store, args.rows, args.d, args.seed, args.data, args.n)
        print(f"wrote {store.describe()} to {args.make_store}")
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    if device.type == "cpu":
        tune_cpu_allocator()  # train_sae does this too; both bare loops get it alike
    else:
        enable_tf32()  # as train_sae does
    cfg = SAEConfig(
        arch="matryoshka",
        d_in=args.d,
        n_latents=args.n,
        k_list=matryoshka_k_list(args.n, args.k_min),
        weighting=args.weighting,
    )
    print(
        f"device={device} ({device_name(device)}), threads={torch.get_num_threads()}, "
        f"torch={torch.__version__}, d={args.d}, n={args.n}, batch={args.batch}, "
        f"k_list={list(cfg.k_list or ())}, {args.weighting}, rows={args.rows}, "
        f"data={'store ' + str(args.store) if args.store else args.data}",
        flush=True,
    )
    precisions = [p.strip() for p in args.precisions.split(",") if p.strip()]
    names = [r.strip() for r in args.regimes.split(",") if r.strip()]
    with tempfile.TemporaryDirectory() as tmp:
        store = open_store(args.store) if args.store else None
        if store is None:
            store = make_store(Path(tmp) / "data", args.rows, args.d, args.seed, args.data, args.n)
        if store.dim != args.d:
            raise SystemExit(f"--store has dimension {store.dim}, not --d {args.d}")
        train_figures, trained = run_train_sae(store, cfg, args, device, Path(tmp) / "sae")
        # Only the batches the loops use are read (not the whole store): epoch 0's first ones.
        order = epoch_order(args.seed, 0, store.count).numpy()
        full_batches = max(1, store.count // args.batch)
        batches = []
        for i in range(args.naive_steps + 1):
            rows = order[(i % full_batches) * args.batch : (i % full_batches + 1) * args.batch]
            x = torch.from_numpy(store.take(rows)).to(device)
            batches.append(trained.preprocess(x).detach())
        starts = regime_starts(names, cfg, trained, batches[0], args.seed)
        regimes = bare_loops(starts, batches, precisions, device, args.batch)

    figures = {
        "device": str(device),
        "device_name": device_name(device),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "config": {
            k: getattr(args, k)
            for k in ("d", "n", "batch", "k_min", "weighting", "rows", "lr", "data")
        },
        "k_list": list(cfg.k_list or ()),
        "precisions": precisions,
        "train_sae": train_figures,
        "bare_loops": regimes,
    }
    if args.json is not None:
        args.json.write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
