"""A small registry: architecture name → model class."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from audit.errors import InputError

if TYPE_CHECKING:
    from audit.sae.base import SAEConfig, SparseAutoencoder

_REGISTRY: dict[str, type[SparseAutoencoder]] = {}


def register(name: str) -> Callable[[type[SparseAutoencoder]], type[SparseAutoencoder]]:
    def wrap(cls: type[SparseAutoencoder]) -> type[SparseAutoencoder]:
        _REGISTRY[name] = cls
        return cls

    return wrap


def build_sae(cfg: SAEConfig) -> SparseAutoencoder:
    """A freshly initialised model for ``cfg``."""
    _load_architectures()
    try:
        cls = _REGISTRY[cfg.arch]
    except KeyError as exc:
        raise InputError(f"unknown architecture {cfg.arch!r}") from exc
    return cls(cfg)


def architectures() -> list[str]:
    _load_architectures()
    return sorted(_REGISTRY)


def _load_architectures() -> None:
    # Importing the modules runs their @register decorators.
    from audit.sae import batchtopk, matryoshka, relu, topk  # noqa: F401
