"""Data-parallel runs on PyTorch's own engine: ``torch.distributed`` launched by ``torchrun``.

``torchrun --nproc-per-node N -m audit train …`` starts N copies of the command line with
``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` (and the rendezvous address) in the environment.
:func:`distributed_session` turns that environment into a process group — NCCL for CUDA
tensors, gloo for CPU tensors — and the training loop picks the group up through
:func:`current_context` (a library user may equally call ``init_process_group`` themselves).

:class:`DistContext` carries the few collectives training needs beyond DDP's gradient
all-reduce: sums and minima of small arrays (preprocessing statistics, step metrics, fired
latents) and barriers around the files that only rank 0 writes.
"""

from __future__ import annotations

import contextlib
import datetime
import gc
import os
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.distributed as dist

from audit.errors import InputError

#: How long a rank waits for the others in one collective before giving up.
DEFAULT_TIMEOUT = datetime.timedelta(minutes=30)

_REDUCE_OPS = {"sum": "SUM", "min": "MIN", "max": "MAX"}


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError as exc:
        raise InputError(f"environment variable {name}={value!r} is not an integer") from exc


def launched_with_torchrun() -> bool:
    """Whether this process is one of several started by ``torchrun`` (``WORLD_SIZE > 1``)."""
    return _env_int("WORLD_SIZE", 1) > 1 and "RANK" in os.environ


def env_rank() -> int:
    """This process's global rank according to the launcher (0 outside ``torchrun``)."""
    return _env_int("RANK", 0)


@dataclass(frozen=True)
class DistContext:
    """Where this process stands in a data-parallel run; a world of one is the plain case."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    # -- collectives (no-ops in a world of one) ------------------------------------------------
    def all_reduce_tensor(self, tensor: torch.Tensor, op: str = "sum") -> torch.Tensor:
        """Reduce ``tensor`` in place across ranks (on its own device) and return it."""
        if self.enabled:
            dist.all_reduce(tensor, op=getattr(dist.ReduceOp, _REDUCE_OPS[op]))
        return tensor

    def all_reduce_numpy(self, array: np.ndarray, op: str = "sum") -> np.ndarray:
        """Reduce a float64 array across ranks; it travels on the training device.

        The training device is the one the process group surely serves (NCCL has no CPU
        tensors), and these arrays are small.
        """
        if not self.enabled:
            return array
        tensor = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float64)).to(self.device)
        return self.all_reduce_tensor(tensor, op).cpu().numpy()

    def barrier(self) -> None:
        if self.enabled:
            if self.device.type == "cuda":
                dist.barrier(device_ids=[self.device.index or 0])
            else:
                dist.barrier()

    def agree(self, flags: list[bool], what: str) -> None:
        """Raise the same :class:`InputError` on every rank unless all ranks see ``flags`` alike."""
        if not self.enabled:
            return
        local = np.array(flags, dtype=np.float64)
        low = self.all_reduce_numpy(local.copy(), "min")
        high = self.all_reduce_numpy(local.copy(), "max")
        if not np.array_equal(low, high):
            raise InputError(f"the ranks disagree about {what}")


def current_context(device: torch.device | None = None) -> DistContext:
    """The running process group (if any) as a :class:`DistContext` for ``device``."""
    if not (dist.is_available() and dist.is_initialized()):
        return DistContext(device=device or torch.device("cpu"))
    rank, world = dist.get_rank(), dist.get_world_size()
    local_rank = _env_int("LOCAL_RANK", rank)
    local_world = _env_int("LOCAL_WORLD_SIZE", world)
    return DistContext(rank, world, local_rank, local_world, device or torch.device("cpu"))


def device_for_rank(device: torch.device) -> torch.device:
    """One GPU per process: ``cuda`` becomes ``cuda:LOCAL_RANK`` inside a process group."""
    if device.type != "cuda" or device.index is not None:
        return device
    if dist.is_available() and dist.is_initialized():
        index = _env_int("LOCAL_RANK", dist.get_rank()) % max(1, torch.cuda.device_count())
        return torch.device("cuda", index)
    return device


def backend_for(device_name: str) -> str:
    """NCCL for CUDA tensors plus gloo for CPU ones; gloo alone on a CPU-only run."""
    wants_cuda = device_name.startswith("cuda") or (
        device_name == "auto" and torch.cuda.is_available()
    )
    if wants_cuda and dist.is_nccl_available():
        return "cpu:gloo,cuda:nccl"
    return "gloo"


@contextlib.contextmanager
def distributed_session(
    device_name: str = "auto", timeout: datetime.timedelta = DEFAULT_TIMEOUT
) -> Iterator[bool]:
    """Join the ``torchrun`` process group for the duration of a command (yields whether it did).

    Outside ``torchrun`` (or with one process) nothing happens. A group that already exists
    (a library user's own) is used as it is and left alone.
    """
    if not launched_with_torchrun() or (dist.is_available() and dist.is_initialized()):
        yield dist.is_available() and dist.is_initialized()
        return
    if not dist.is_available():
        raise InputError("this PyTorch build has no torch.distributed; run without torchrun")
    backend = backend_for((device_name or "auto").lower())
    if "nccl" in backend:
        # Before any CUDA work: each process owns the GPU numbered by its local rank.
        torch.cuda.set_device(_env_int("LOCAL_RANK", 0) % max(1, torch.cuda.device_count()))
    dist.init_process_group(backend=backend, timeout=timeout)
    try:
        yield True
    finally:
        # Free what still holds the group (a DDP reducer in a reference cycle) while it
        # exists: one 2-process gloo run aborted at interpreter exit ("terminate called without
        # an active exception"), likely a reducer outliving the destroyed group (not reproduced).
        gc.collect()
        dist.destroy_process_group()
