"""Where a Matryoshka training step spends its time: a torch.profiler table per regime.

    python benchmarks/gpu_profile.py                 # the paper's shapes on CUDA
    python benchmarks/gpu_profile.py --smoke         # toy shapes on the CPU

Prints, for the step at initialisation and at trained-like sparsity (4 % of the latents
positive), the operators sorted by device time, and the step's wall time.
"""

from __future__ import annotations

import argparse
import time

import torch

from audit.sae import SAEConfig, build_sae, matryoshka_k_list

# Encoder biases that leave about half and 4 % of the latents positive (pre ≈ N(0, 0.1²)).
REGIMES = {"init": 0.0, "active=0.04": -0.1 * 1.7507}


def _model(n: int, d: int, k_min: int, bias: float, device: torch.device) -> torch.nn.Module:
    cfg = SAEConfig(
        arch="matryoshka", d_in=d, n_latents=n, k_list=matryoshka_k_list(n, k_min), weighting="rw"
    )
    model = build_sae(cfg)
    model.reset_parameters(torch.Generator().manual_seed(0))
    with torch.no_grad():
        model.b_enc.fill_(bias)
    return model.to(device)


def _step(model, optimizer, x: torch.Tensor) -> None:
    optimizer.zero_grad(set_to_none=True)
    out = model.training_loss(x)
    out.loss.backward()
    model.project_decoder_grad()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    model.normalize_decoder()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--rows", type=int, default=30)
    args = parser.parse_args()
    device = torch.device("cpu" if args.smoke else "cuda")
    n, d, batch, k_min = (512, 32, 256, 8) if args.smoke else (24576, 768, 4096, 64)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    sort_by = "cuda_time_total" if device.type == "cuda" else "cpu_time_total"
    for regime, bias in REGIMES.items():
        model = _model(n, d, k_min, bias, device)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-6)
        x = torch.randn(batch, d, device=device)
        for _ in range(3):
            _step(model, optimizer, x)
        sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
        sync()
        start = time.perf_counter()
        for _ in range(5):
            _step(model, optimizer, x)
        sync()
        wall_ms = (time.perf_counter() - start) / 5 * 1e3
        with torch.profiler.profile(activities=activities) as prof:
            for _ in range(3):
                _step(model, optimizer, x)
            sync()
        print(f"\n== {regime}: step {wall_ms:.2f} ms (wall, mean of 5)")
        print(
            prof.key_averages().table(
                sort_by=sort_by, row_limit=args.rows, max_name_column_width=60
            )
        )


if __name__ == "__main__":
    main()
