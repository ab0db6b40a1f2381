"""Small SAEs with known behaviour, shared by the evaluation tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from audit.data.planted import planted_embeddings
from audit.sae import SAEConfig, SparseAutoencoder, build_sae, matryoshka_k_list, save_sae
from audit.sae.train import TrainConfig, train_sae
from audit.store import EmbeddingStore, write_store


def planted_store(path: Path, rows: int = 3000, dim: int = 32, seed: int = 0) -> EmbeddingStore:
    data = planted_embeddings(n_samples=rows, dim=dim, n_atoms=48, active=3, seed=seed)
    return write_store(path, data.embeddings, model="planted", modality="image")


def trained_matryoshka(store: EmbeddingStore, out: Path, n_latents: int = 256) -> Path:
    """A Matryoshka SAE trained for a few seconds (k-list 16 … n)."""
    cfg = SAEConfig(
        arch="matryoshka",
        d_in=store.dim,
        n_latents=n_latents,
        k_list=matryoshka_k_list(n_latents, 16),
        embedding_model="planted",
    )
    train_sae(
        store,
        cfg,
        TrainConfig(epochs=6, batch_size=256, lr=2e-3, device="cpu", checkpoint_every=0),
        out,
    )
    return out


def _with_data_preprocessing(model: SparseAutoencoder, x: np.ndarray) -> SparseAutoencoder:
    mean = x.astype(np.float64).mean(0)
    scale = np.sqrt(x.shape[1] / ((x - mean) ** 2).sum(1).mean())
    model.set_preprocessing(torch.from_numpy(mean).float(), float(scale))
    return model.eval()


@torch.no_grad()
def perfect_sae(x: np.ndarray) -> SparseAutoencoder:
    """A ReLU SAE that reconstructs exactly: z = [ReLU(x̃), ReLU(−x̃)], W_dec = [I; −I]."""
    d = x.shape[1]
    model = build_sae(SAEConfig(arch="relu", d_in=d, n_latents=2 * d, l1=0.0))
    eye = torch.eye(d)
    model.W_enc.copy_(torch.cat([eye, -eye], 1))
    model.W_dec.copy_(torch.cat([eye, -eye], 0))
    model.b_enc.zero_()
    model.b_pre.zero_()
    return _with_data_preprocessing(model, x)


@torch.no_grad()
def mean_sae(x: np.ndarray, n_latents: int = 16) -> SparseAutoencoder:
    """A ReLU SAE whose code is always 0, so it predicts the data mean for every row."""
    model = build_sae(SAEConfig(arch="relu", d_in=x.shape[1], n_latents=n_latents, l1=0.0))
    model.b_enc.fill_(-1e6)
    model.b_pre.zero_()
    return _with_data_preprocessing(model, x)


def save(model: SparseAutoencoder, out: Path) -> Path:
    save_sae(model, out)
    return out
