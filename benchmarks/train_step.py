"""Matryoshka training step: our nested decode against the naive per-level algorithm.

Both run in this process on the same weights and the same batch. A *step* is forward,
backward, decoder-gradient projection, gradient clipping, AdamW and decoder renormalisation;
only the loss computation differs:

* naive — for every level: top-k of the pre-activations, a dense ``[B, n]`` code, a full
  decode and the level's MSE (what the paper's reference code does), autograd backward;
* ours  — :func:`audit.sae.nested.nested_topk_loss`.

Two regimes are measured (issue #2):

* ``init``: random initialisation (about half the latents are positive);
* ``trained``: weights after training on CLIP-like planted data (most latents off), trained
  here with our fast path for ``--train-steps`` steps.

Usage::

    python benchmarks/train_step.py                      # d=512, n=4096, batch 4096, k_min 64, UW
    python benchmarks/train_step.py --d 768 --n 6144 --device cuda
"""

from __future__ import annotations

import argparse
import copy
import statistics
import tempfile
import time
from pathlib import Path

import torch

from audit.data.planted import planted_embeddings
from audit.device import resolve_device, tune_cpu_allocator
from audit.fileio import cache_root
from audit.sae import SAEConfig, build_sae, load_sae, matryoshka_k_list
from audit.sae.base import SparseAutoencoder
from audit.sae.train import TrainConfig, train_sae
from audit.store import write_store


def make_step(model: SparseAutoencoder, naive: bool):
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, eps=6.25e-10)

    def step(x: torch.Tensor) -> float:
        optimizer.zero_grad(set_to_none=True)
        loss = model.naive_training_loss(x) if naive else model.training_loss(x).loss
        loss.backward()
        model.project_decoder_grad()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        model.normalize_decoder()
        return float(loss)

    return step


def loss_and_grads(model: SparseAutoencoder, x: torch.Tensor, naive: bool):
    model.zero_grad(set_to_none=True)
    loss = model.naive_training_loss(x) if naive else model.training_loss(x).loss
    loss.backward()
    return float(loss.detach()), {n: p.grad.detach().clone() for n, p in model.named_parameters()}


def time_steps(
    model: SparseAutoencoder, x: torch.Tensor, naive: bool, repeats: int, warmup: int
) -> list[float]:
    """Milliseconds per step; every repetition starts from the same weights."""
    times = []
    for i in range(warmup + repeats):
        trial = copy.deepcopy(model)
        step = make_step(trial, naive)
        if x.is_cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        step(x)
        if x.is_cuda:
            torch.cuda.synchronize()
        if i >= warmup:
            times.append((time.perf_counter() - start) * 1000)
    return times


def compare(
    label: str, model: SparseAutoencoder, x: torch.Tensor, repeats: int, warmup: int
) -> dict:
    loss_fast, grads_fast = loss_and_grads(model, x, naive=False)
    loss_naive, grads_naive = loss_and_grads(model, x, naive=True)
    grad_err = max(
        float(
            (grads_fast[k] - grads_naive[k]).abs().max()
            / grads_naive[k].abs().max().clamp_min(1e-30)
        )
        for k in grads_fast
    )
    with torch.no_grad():
        pre = model.pre_activations(x)
        active = (pre > 0).sum(1).float()
    fast = time_steps(model, x, naive=False, repeats=repeats, warmup=warmup)
    naive = time_steps(model, x, naive=True, repeats=repeats, warmup=warmup)
    result = {
        "regime": label,
        "active_mean": float(active.mean()),
        "active_max": float(active.max()),
        "fast_ms": statistics.median(fast),
        "naive_ms": statistics.median(naive),
        "loss_fast": loss_fast,
        "loss_naive": loss_naive,
        "loss_abs_diff": abs(loss_fast - loss_naive),
        "grad_max_rel_diff": grad_err,
    }
    result["ratio"] = result["naive_ms"] / result["fast_ms"]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--d", type=int, default=512)
    parser.add_argument("--n", type=int, default=4096)
    parser.add_argument("--batch", type=int, default=4096)
    parser.add_argument("--k-min", type=int, default=64)
    parser.add_argument("--weighting", default="uw", choices=["uw", "rw"])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument(
        "--train-steps", type=int, default=1500, help="steps of training for the 'trained' regime"
    )
    parser.add_argument("--train-batch", type=int, default=1024, help="batch size of that training")
    parser.add_argument("--train-rows", type=int, default=65536)
    parser.add_argument("--lr", type=float, default=3e-3, help="learning rate of that training")
    parser.add_argument(
        "--cache",
        type=Path,
        default=cache_root() / "bench",
        help="where the trained weights are kept between runs",
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    device = resolve_device(args.device)
    if device.type == "cpu":
        tune_cpu_allocator()  # applies to both implementations alike
    torch.manual_seed(args.seed)
    data = planted_embeddings(
        n_samples=args.train_rows, dim=args.d, n_atoms=args.n // 2, active=8, seed=args.seed
    )
    cfg = SAEConfig(
        arch="matryoshka",
        d_in=args.d,
        n_latents=args.n,
        k_list=matryoshka_k_list(args.n, args.k_min),
        weighting=args.weighting,
    )
    print(
        f"device={device} threads={torch.get_num_threads()} d={args.d} n={args.n} batch={args.batch} "
        f"k_list={list(cfg.k_list)} weighting={args.weighting} torch={torch.__version__}"
    )

    key = (
        f"d{args.d}-n{args.n}-k{args.k_min}-{args.weighting}-s{args.train_steps}"
        f"-b{args.train_batch}-lr{args.lr}-r{args.train_rows}-seed{args.seed}"
    )
    sae_dir = args.cache / key
    train_seconds = None
    with tempfile.TemporaryDirectory() as tmp:
        if not (sae_dir / "sae.safetensors").exists():
            # The trained regime: fast-path training on planted data (also fits μ and s).
            store = write_store(Path(tmp) / "planted", data.embeddings)
            t0 = time.perf_counter()
            train_sae(
                store,
                cfg,
                TrainConfig(
                    epochs=1000,
                    max_steps=args.train_steps,
                    batch_size=args.train_batch,
                    lr=args.lr,
                    seed=args.seed,
                    checkpoint_every=0,
                    device=str(device),
                    decay_fraction=0.0,
                ),
                sae_dir,
            )
            train_seconds = time.perf_counter() - t0
    trained = load_sae(sae_dir, device=device)
    init = build_sae(cfg)
    init.reset_parameters(torch.Generator().manual_seed(args.seed))
    init.set_preprocessing(trained.mean.cpu(), trained.scale.cpu())
    init = init.to(device)
    batch = torch.from_numpy(data.embeddings[: args.batch]).to(device)
    x = trained.preprocess(batch).detach()
    results = [
        compare("init", init.train(), x, args.repeats, args.warmup),
        compare("trained", trained.train(), x, args.repeats, args.warmup),
    ]
    took = f" in {train_seconds:.1f} s" if train_seconds is not None else f" (cached in {sae_dir})"
    print(
        f"(trained regime: {args.train_steps} steps of fast training at batch {args.train_batch}{took})"
    )
    header = f"{'regime':8s} {'active mean/max':>16s} {'ours ms':>9s} {'naive ms':>9s} {'ratio':>6s} {'|Δloss|':>9s} {'max rel Δgrad':>13s}"
    print(header)
    print("-" * len(header))
    for r in results:
        print(
            f"{r['regime']:8s} {r['active_mean']:8.0f}/{r['active_max']:<7.0f} {r['fast_ms']:9.1f} {r['naive_ms']:9.1f} "
            f"{r['ratio']:5.2f}x {r['loss_abs_diff']:9.2e} {r['grad_max_rel_diff']:13.2e}"
        )


if __name__ == "__main__":
    main()
