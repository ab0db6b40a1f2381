"""Sparse autoencoders: one file per architecture, a registry, training and checkpoint I/O."""

from audit.sae.base import SAEConfig, SparseAutoencoder, TrainOutput, keep_topk
from audit.sae.checkpoint import load_sae, sae_fingerprint, save_sae
from audit.sae.matryoshka import matryoshka_k_list
from audit.sae.registry import architectures, build_sae

__all__ = [
    "SAEConfig",
    "SparseAutoencoder",
    "TrainOutput",
    "architectures",
    "build_sae",
    "keep_topk",
    "load_sae",
    "matryoshka_k_list",
    "sae_fingerprint",
    "save_sae",
]
