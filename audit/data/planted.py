"""Planted, CLIP-like embeddings whose dictionary is known (for tests, demos and benchmarks).

Each sample is a sparse non-negative mix of unit-norm atoms plus a shared offset direction and
a little noise, L2-normalised like CLIP embeddings: ``x = normalise(c·u + Σ_j a_j w_j + ε)``.
A good SAE recovers every atom ``w_j`` as (the direction of) some decoder row.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class PlantedData:
    embeddings: np.ndarray  # [N, d] float32, unit-norm rows
    atoms: np.ndarray  # [A, d] unit-norm rows
    codes: np.ndarray  # [N, A] the non-negative mixing coefficients
    offset: np.ndarray  # [d] the shared direction (unit norm)


def planted_embeddings(
    n_samples: int = 20_000,
    dim: int = 64,
    n_atoms: int = 64,
    active: int = 4,
    offset_strength: float = 3.0,
    noise: float = 0.01,
    seed: int = 0,
    normalize: bool = True,
) -> PlantedData:
    """Draw ``n_samples`` embeddings, each mixing ``active`` random atoms (exponential weights)."""
    rng = np.random.default_rng(seed)
    atoms = rng.normal(size=(n_atoms, dim))
    atoms /= np.linalg.norm(atoms, axis=1, keepdims=True)
    offset = rng.normal(size=dim)
    offset /= np.linalg.norm(offset)
    codes = np.zeros((n_samples, n_atoms))
    chosen = np.argsort(rng.random((n_samples, n_atoms)), axis=1)[:, :active]
    np.put_along_axis(codes, chosen, rng.exponential(1.0, (n_samples, active)) + 0.2, axis=1)
    x = codes @ atoms + offset_strength * offset + noise * rng.normal(size=(n_samples, dim))
    if normalize:
        x /= np.linalg.norm(x, axis=1, keepdims=True)
    return PlantedData(x.astype(np.float32), atoms, codes, offset)


def atom_recovery(atoms: np.ndarray, directions: np.ndarray) -> np.ndarray:
    """For each atom, the best cosine with any decoder direction."""
    a = atoms / np.linalg.norm(atoms, axis=1, keepdims=True)
    w = directions / np.maximum(np.linalg.norm(directions, axis=1, keepdims=True), 1e-12)
    return (a @ w.T).max(axis=1)


def main(argv: list[str] | None = None) -> None:
    """``python -m audit.data.planted OUT [N]``: write a planted store (used by the quickstart)."""
    import sys

    from audit.store import write_store

    args = sys.argv[1:] if argv is None else argv
    if not args:
        raise SystemExit("usage: python -m audit.data.planted OUT_STORE [N_SAMPLES]")
    n = int(args[1]) if len(args) > 1 else 50_000
    data = planted_embeddings(n_samples=n, dim=128, n_atoms=256, active=6, seed=0)
    write_store(
        args[0],
        data.embeddings,
        model="planted-atoms",
        modality=None,
        normalized=True,
        overwrite=True,
    )
    print(f"wrote {n} planted embeddings to {args[0]}")


if __name__ == "__main__":
    main()
