"""One number per column of a large row-major matrix (rows × concepts), column by column.

Reading a column of a C-ordered ``[N, C]`` array touches one cache line per row; copying a block
of columns transposed makes each of them contiguous first. Blocks run on threads: NumPy's sort
and arithmetic release the GIL, and each column's value depends on that column alone.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch


def map_columns(
    values: np.ndarray,
    per_column: Callable[[np.ndarray], float],
    block_values: int = 1 << 22,
    workers: int | None = None,
) -> np.ndarray:
    """``[C]`` float64: ``per_column`` of each column of ``values`` (``[N, C]``), given as a
    contiguous 1-D array, in blocks of about ``block_values`` values on ``workers`` threads
    (default: torch's thread count); the result does not depend on either."""
    n, n_columns = values.shape
    out = np.empty(n_columns, dtype=np.float64)
    step = max(1, block_values // max(n, 1))

    def block(lo: int) -> None:
        for i, column in enumerate(np.ascontiguousarray(values[:, lo : lo + step].T)):
            out[lo + i] = per_column(column)

    starts = range(0, n_columns, step)
    threads = min(len(starts), workers or torch.get_num_threads())
    if threads <= 1:
        for lo in starts:
            block(lo)
    else:
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(block, starts))
    return out
