"""Shared by the benchmark scripts: which device ran, and the peak memory it allocated.

Imported as a sibling module (``python benchmarks/<script>.py`` puts this folder on the path).
"""

from __future__ import annotations

import platform

import torch


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return platform.processor() or platform.machine()


def reset_peak_memory(device: torch.device) -> None:
    """Start a new peak-memory measurement (a no-op off CUDA)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_bytes(device: torch.device) -> int | None:
    """The CUDA allocator's peak since :func:`reset_peak_memory` (None off CUDA)."""
    if device.type != "cuda":
        return None
    torch.cuda.synchronize(device)
    return int(torch.cuda.max_memory_allocated(device))


def allocated_bytes(device: torch.device) -> int | None:
    """What the CUDA allocator holds for tensors now (None off CUDA)."""
    if device.type != "cuda":
        return None
    torch.cuda.synchronize(device)
    return int(torch.cuda.memory_allocated(device))


def mib(nbytes: int | None) -> float | None:
    return None if nbytes is None else round(nbytes / 2**20, 1)
