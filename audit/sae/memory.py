"""Analytic peak memory of one Matryoshka training step, as a GPU runs it.

:func:`step_peak_bytes` replays the allocations of a training step (nested loss forward and
backward, decoder-gradient projection, gradient clipping, AdamW) tensor by tensor, in the
order the code makes and frees them, from the shapes and the decode plan alone
(:func:`audit.sae.nested_plan.plan_nested_step`). It counts every tensor whose size grows with
``B·n``, ``B·k``, ``B·d``, ``n·d`` or the number of sparse entries; vectors of length ``B``,
``n`` or ``d`` are left out (each is under ``1/min(n, d)`` of a ``[B, n]`` matrix), and so are
library workspaces (cuBLAS, cuSPARSE, sort buffers).

It describes the GPU's plan: the batch in one chunk, sparse pieces only from the sorted top-k.
The result is the peak *above* what is allocated when the step starts (parameters, AdamW's
moments and the data; last step's gradients already released), so that on a GPU
``torch.cuda.max_memory_allocated() − memory_allocated_before ≈ step_peak_bytes(...)``.
tests/sae/test_memory.py checks it on a CPU against every tensor a step allocates;
tests/cuda/ checks it against the GPU allocator.
"""

from __future__ import annotations

from collections.abc import Iterable

from audit.sae.nested_plan import NestedStep


class Ledger:
    """Named allocations and the peak of their total."""

    def __init__(self) -> None:
        self.sizes: dict[str, int] = {}
        self.live = 0
        self.peak = 0

    def alloc(self, name: str, nbytes: int) -> None:
        if name in self.sizes:
            raise ValueError(f"{name} is already allocated")
        self.sizes[name] = int(nbytes)
        self.live += int(nbytes)
        self.peak = max(self.peak, self.live)

    def free(self, *names: str) -> None:
        for name in names:
            self.live -= self.sizes.pop(name)

    def free_all(self, names: Iterable[str]) -> None:
        self.free(*[n for n in names if n in self.sizes])


def step_peak_bytes(step: NestedStep, batch: int, n: int, d: int, itemsize: int = 4) -> int:
    """Peak bytes a training step allocates above its starting point (see module doc)."""
    if any(p.kind != "segment" or p.level > step.top for p in step.sparse_pieces):
        raise ValueError("the estimate covers the GPU plan: sparse pieces from the top-k only")
    ledger = Ledger()
    saved = _forward(ledger, step, batch, n, d, itemsize)
    _backward(ledger, step, saved, batch, n, d, itemsize)
    # After backward: gradients (2·n·d) and x̂ (kept by the step's output) are live.
    params = (2 * n * d) * itemsize
    ledger.alloc("decoder projection temporary", n * d * itemsize)
    ledger.free("decoder projection temporary")
    ledger.alloc("AdamW sqrt(v) temporaries", params)
    ledger.free("AdamW sqrt(v) temporaries")
    return ledger.peak


def _forward(ledger: Ledger, step: NestedStep, batch: int, n: int, d: int, size: int) -> list[str]:
    """The nested loss's forward; returns the names it saves for backward."""
    M, D = batch * n * size, batch * d * size
    ledger.alloc("x_in", D)
    ledger.alloc("pre", M)
    ledger.alloc("positive", M)
    top_values, top_indices = _topk_chain(ledger, step, batch, size)
    masks = _Masks(ledger, step, M)
    inside = masks.prefix(step.last)
    sparse_out = _sparse_blocks(ledger, step, batch, d, size)
    saved: list[str] = []
    contributions: list[str] = []
    for i, piece in enumerate(step.plan.pieces):
        if not piece.dense:
            continue
        mask = masks.prefix(piece.level) if piece.kind == "prefix" else masks.segment(piece.level)
        ledger.alloc(f"code {i}", M)
        saved += [f"code {i}", mask]
        ledger.alloc(f"contribution {i}", D)
        contributions.append(f"contribution {i}")
    # `del ranks`: cached masks no piece keeps (the last level's stays until the end).
    ledger.free_all(m for m in masks.cached if m not in saved and m != inside)
    ledger.free_all([top_values])
    ledger.alloc("base", D)
    levels = [f"residual {i}" for i in range(step.last + 1)]
    for name in levels:
        ledger.alloc(name, D)
    ledger.alloc("x_hat", D)  # returned, kept by the step's output until the step ends
    ledger.free_all(["base", *contributions, *sparse_out])
    ledger.free_all(m for m in dict.fromkeys(["pre", "positive", inside]) if m not in saved)
    # The sparse blocks' columns are views of the top-k indices: those live as long as they do.
    return [*dict.fromkeys(saved), "x_in", *levels, top_indices]


def _topk_chain(ledger: Ledger, step: NestedStep, batch: int, size: int) -> tuple[str, str]:
    """The shrinking top-k calls of ``_rank_segments``; returns the names of the sorted top-k's
    values and indices that outlive it (empty when there is none)."""
    values = columns = j = None
    top_values = top_indices = ""
    for i in reversed(step.strict):
        k = step.k_eff[i]
        ledger.alloc(f"values {i}", batch * k * size)
        ledger.alloc(f"indices {i}", batch * k * 8)
        if j is not None and j != columns:
            ledger.free(j)  # rebinding `j` drops the last call's indices
        j = f"indices {i}"
        if i == step.top:
            top_values, top_indices = f"values {i}", j
            if columns is not None:
                top_indices = f"top columns {i}"
                ledger.alloc(top_indices, batch * k * 8)
            break
        if step.top >= 0:
            if columns is None:
                columns = j
            else:
                ledger.alloc(f"columns {i}", batch * k * 8)
                ledger.free(columns)
                columns = f"columns {i}"
        if values is not None:
            ledger.free(values)
        values = f"values {i}"
    ledger.free_all(dict.fromkeys(n for n in (values, columns, j) if n and n != top_indices))
    return top_values, top_indices


class _Masks:
    """The 0/1 masks of ``_Ranks``: level masks cached, segment masks made per piece."""

    def __init__(self, ledger: Ledger, step: NestedStep, nbytes: int) -> None:
        self.ledger, self.strict, self.nbytes = ledger, set(step.strict), nbytes
        self.cached: list[str] = []

    def prefix(self, level: int) -> str:
        if level not in self.strict:
            return "positive"
        name = f"level mask {level}"
        if name not in self.ledger.sizes:
            self.ledger.alloc(name, self.nbytes)
            self.cached.append(name)
        return name

    def segment(self, s: int) -> str:
        if s == 0:
            return self.prefix(0)
        self.prefix(s)
        self.prefix(s - 1)
        self.ledger.alloc(f"segment mask {s}", self.nbytes)
        return f"segment mask {s}"


def _sparse_blocks(ledger: Ledger, step: NestedStep, batch: int, d: int, size: int) -> list[str]:
    """``_SparseBlocks.build`` for top-k blocks and the sparse decode; returns what the forward
    frees at its end (the decoded blocks)."""
    pieces = step.sparse_pieces
    if not pieces:
        return []
    nnz = sum(p.nnz_slots for p in _widths(step, batch))
    whole = len(pieces) == 1 and _widths(step, batch)[0].full
    # Per entry: keep mask (4, kept), values·keep (4), columns (8, a copy unless the block is
    # the whole top-k), row ids (8); then the concatenations and the pattern's ones (4).
    ledger.alloc("block keep masks", nnz * size)
    ledger.alloc("block parts", nnz * (size + 8 + (0 if whole else 8)))
    ledger.alloc("csr", nnz * (size + 8 + 8 + size))
    ledger.free("block parts")
    ledger.alloc("sparse decode", len(pieces) * batch * d * size)
    return ["sparse decode"]


class _Block:
    def __init__(self, width: int, batch: int, full: bool) -> None:
        self.nnz_slots, self.full = width * batch, full


def _widths(step: NestedStep, batch: int) -> list[_Block]:
    k_top = step.k_eff[step.top]
    blocks = []
    for p in step.sparse_pieces:
        lo = 0 if p.level == 0 else step.k_eff[p.level - 1]
        width = step.k_eff[p.level] - lo
        blocks.append(_Block(width, batch, width == k_top))
    return blocks


def _backward(
    ledger: Ledger, step: NestedStep, saved: list[str], batch: int, n: int, d: int, size: int
) -> None:
    M, D, W = batch * n * size, batch * d * size, n * d * size
    pieces = step.plan.pieces
    grads = [f"level grad {i}" for i in range(step.last + 1)]
    for name in grads:
        ledger.alloc(name, D)
    ranges = {(p.first, p.stop) for p in pieces if p.stop - p.first > 1}
    sums = _range_sums(ranges)
    for first, stop in sums:
        ledger.alloc(f"range {first}:{stop}", D)
    negated = [f"negated {i}" for i, p in enumerate(pieces) if p.sign < 0]
    for name in negated:
        ledger.alloc(name, D)
    ledger.alloc("grad W_dec", W)
    dense = [p for p in pieces if p.dense]
    if dense:
        ledger.alloc("grad pre", M)
    if len(dense) > 1:
        ledger.alloc("through", M)
        ledger.free("through")
    if not dense:
        ledger.alloc("grad pre", M)
    _sparse_backward(ledger, step, batch, n, d, size)
    ledger.alloc("grad W_enc", W)
    ledger.free_all([*saved, *grads, *negated, "grad pre", "block keep masks", "csr"])
    ledger.free_all(["gradient blocks", "sampled gradients"])
    ledger.free_all(f"range {a}:{b}" for a, b in sums)


def _range_sums(ranges: set[tuple[int, int]]) -> list[tuple[int, int]]:
    """Every multi-level range the backward's ``range_sum`` caches (sub-ranges it builds on)."""
    made: set[tuple[int, int]] = set()

    def build(first: int, stop: int) -> None:
        if stop - first <= 1 or (first, stop) in made:
            return
        if (first + 1, stop) not in made:
            build(first, stop - 1)
        made.add((first, stop))

    for first, stop in sorted(ranges, key=lambda r: r[1] - r[0]):
        build(first, stop)
    return sorted(made)


def _sparse_backward(
    ledger: Ledger, step: NestedStep, batch: int, n: int, d: int, size: int
) -> None:
    if not step.sparse_pieces:
        return
    nnz = sum(b.nnz_slots for b in _widths(step, batch))
    W = n * d * size
    ledger.alloc("gradient blocks", len(step.sparse_pieces) * batch * d * size)
    # The transpose: 16-bit keys (2) and their order (8), then rows (8) and values in that order.
    ledger.alloc("transpose keys", nnz * (2 + 8))
    ledger.alloc("transposed csr", nnz * (8 + size))
    ledger.free("transpose keys")
    ledger.alloc("decoder gradient of the blocks", W)
    ledger.free("decoder gradient of the blocks", "transposed csr")
    # sampled_addmm's CSR result; its values stay until the end of the backward.
    ledger.alloc("sampled gradients", nnz * size)
