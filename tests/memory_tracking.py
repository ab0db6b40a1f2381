"""Peak bytes of the tensors a piece of PyTorch code allocates, on any device.

:class:`LiveTensorBytes` sees every tensor an ATen operator returns while it is active and
counts its storage until the storage is freed (storages created before, and outputs that
alias an input, are not counted). It sees no library workspace and no allocator rounding:
what a step's own tensors need, which is what :mod:`audit.sae.memory` estimates.
"""

from __future__ import annotations

import weakref
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten


def _storages(t: torch.Tensor) -> list[torch.UntypedStorage]:
    if t.layout == torch.sparse_csr:
        parts = [t.crow_indices(), t.col_indices(), t.values()]
    elif t.layout == torch.strided:
        parts = [t]
    else:
        parts = []
    return [p.untyped_storage() for p in parts]


class LiveTensorBytes(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.live = 0
        self.peak = 0
        self._tracked: dict[int, weakref.finalize] = {}

    def _release(self, key: int, nbytes: int) -> None:
        self._tracked.pop(key, None)
        self.live -= nbytes

    def __torch_dispatch__(self, func, types, args=(), kwargs=None) -> Any:  # type: ignore[no-untyped-def]
        kwargs = kwargs or {}
        inputs = {
            id(s)
            for t in tree_flatten((args, kwargs))[0]
            if isinstance(t, torch.Tensor)
            for s in _storages(t)
        }
        out = func(*args, **kwargs)
        for t in tree_flatten(out)[0]:
            if not isinstance(t, torch.Tensor):
                continue
            for storage in _storages(t):
                key = id(storage)
                if key in self._tracked or key in inputs:
                    continue
                nbytes = storage.nbytes()
                self._tracked[key] = weakref.finalize(storage, self._release, key, nbytes)
                self.live += nbytes
                self.peak = max(self.peak, self.live)
        return out
