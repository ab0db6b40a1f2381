"""A planted-bias world with exact ground truth, for the audit's tests.

Embeddings are built from orthonormal atoms, and the SAE's decoder *is* those atoms (encoder = the
transpose, with the stored mean ``μ`` and scale ``s``), so every latent's activation is exactly the
planted coefficient of its atom. In preprocessed space ``x̃ = Σ_k z_k a_k + ε⊥`` (noise orthogonal to
every atom), and the raw embedding is ``x = μ + x̃ / s``.

Roles (binary target ``Male``, spurious attribute ``Blond_Hair`` that is much more common among
the negative class):

* **target** ("masculine face") — carries the label; the classifier uses it legitimately,
* **spurious** ("blond hair") — active exactly on ``Blond_Hair = 1``. With ``bias=True`` the
  classifier uses it as a shortcut, in one of two ways (``shortcut``):

  - ``"presence"`` (default): blond hair is common among negatives and the classifier reads it
    as evidence for the negative class, so its *presence* hurts blond positives (the worst
    group); removing it (any ablation) helps them;
  - ``"absence"``: blond hair is common among positives and the classifier reads its *absence*
    as evidence for the negative class (margin term ``β_s (z_s − 1)``, 1 being the typical
    activation when present), so non-blond positives are the worst group. Setting the concept
    to zero changes nothing for them (it is already zero there): only an edit that puts the
    concept's typical value in its place reveals this shortcut;
* **decoy** ("necktie") — correlated with the target, *not* used by the classifier,
* **nuisance** ("smiling") — used by the classifier, independent of target and attribute,
* **background** — independent concepts the classifier uses a little (random small weights); two
  of them share the name "hat", three are unnamed, one has an unvalidated name.

The linear head's margin is ``4(z_target − 0.65) + β_s (z_spurious − κ) + β_n (z_nuisance − E z_n)
+ Σ_k β_k (z_k − E z_k)`` (presence: β_s < 0, κ = 0; absence: β_s > 0, κ = 1), written as
raw-space weights ``w = s Σ β_k a_k``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from audit.concepts import Concept, ConceptBank, save_bank
from audit.fairness.classifiers import LinearHead, save_head
from audit.sae import SAEConfig, SparseAutoencoder, build_sae, sae_fingerprint, save_sae

ROLE_NAMES = {
    "target": "masculine face",
    "spurious": "blond hair",
    "decoy": "necktie",
    "nuisance": "smiling",
}
BACKGROUND_NAMES = (
    "glasses", "hat", "hat", "sky", "grass", "red", "text", "dog", "car", "lamp", None, None, None,
)  # fmt: skip
UNNAMED_CLOSEST = ("tree", "water", "cloud")
UNVALIDATED = "lamp"


@dataclass
class PlantedWorld:
    embeddings: np.ndarray  # [N, d] float32
    labels: pd.DataFrame  # id, Male, Blond_Hair (and split when asked)
    sae: SparseAutoencoder
    bank: ConceptBank
    head: LinearHead
    roles: dict[str, int]  # role -> latent
    codes: np.ndarray  # [N, n] the planted activations
    weights: np.ndarray  # [n] the classifier's margin weight per latent (β)

    @property
    def planted_concept(self) -> str:
        return ROLE_NAMES["spurious"]


ROLES = {"target": 0, "spurious": 1, "decoy": 2, "nuisance": 3}
N_ATOMS = len(ROLES) + len(BACKGROUND_NAMES)
SHORTCUTS = ("presence", "absence")
#: P(Blond_Hair = 1 | Male = 1), P(Blond_Hair = 1 | Male = 0) for each kind of shortcut.
BLOND_RATES = {"presence": (0.08, 0.35), "absence": (0.65, 0.08)}


def _codes(
    rng: np.random.Generator, n: int, shortcut: str = "presence"
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The labels and every atom's planted activation (the roles' dependence on them)."""
    y = (rng.random(n) < 0.5).astype(np.int64)
    rate_pos, rate_neg = BLOND_RATES[shortcut]
    blond = (rng.random(n) < np.where(y == 1, rate_pos, rate_neg)).astype(np.int64)
    z = np.zeros((n, N_ATOMS))
    z[:, 0] = np.clip(np.where(y == 1, rng.normal(1.1, 0.3, n), rng.normal(0.25, 0.25, n)), 0, None)
    z[:, 1] = blond * rng.uniform(0.6, 1.4, n)
    z[:, 2] = (rng.random(n) < np.where(y == 1, 0.8, 0.15)) * rng.uniform(0.5, 1.5, n)
    z[:, 3] = (rng.random(n) < 0.5) * rng.uniform(0.5, 1.5, n)
    for k in range(len(ROLES), N_ATOMS):
        z[:, k] = (rng.random(n) < 0.15) * rng.uniform(0.3, 1.2, n)
    return y, blond, z


def _atom_sae(atoms: np.ndarray, mean: np.ndarray, scale: float) -> SparseAutoencoder:
    """An SAE whose decoder is the atoms (encoder: their transpose), so codes are exact."""
    dim = atoms.shape[1]
    cfg = SAEConfig(arch="matryoshka", d_in=dim, n_latents=N_ATOMS, k_list=(N_ATOMS,),
                    embedding_model="planted-atoms")  # fmt: skip
    model = build_sae(cfg)
    with torch.no_grad():
        model.W_dec.copy_(torch.from_numpy(atoms).float())
        model.W_enc.copy_(torch.from_numpy(atoms.T).float())
        model.b_enc.fill_(-1e-4)  # clips float round-off, so inactive atoms stay exactly 0
        model.b_pre.zero_()
        model.set_preprocessing(torch.from_numpy(mean).float(), scale)
    return model.eval()


def _bank(model: SparseAutoencoder) -> ConceptBank:
    concepts = [
        Concept(j, name, 0.5, name, True, [], 1)
        for name, j in ((ROLE_NAMES[r], ROLES[r]) for r in ROLES)
    ]
    unnamed = iter(UNNAMED_CLOSEST)
    for offset, name in enumerate(BACKGROUND_NAMES):
        j = len(ROLES) + offset
        if name is None:
            concepts.append(Concept(j, None, 0.1, next(unnamed), False, [], None))
        else:
            concepts.append(Concept(j, name, 0.4, name, name != UNVALIDATED, [], 1))
    sae = {"fingerprint": sae_fingerprint(model), "arch": "matryoshka", "d_in": model.d_in,
           "n_latents": N_ATOMS}  # fmt: skip
    return ConceptBank(
        name="planted", sae=sae, concepts=concepts, embedding_model="planted-atoms",
        threshold=0.2, threshold_method="planted (exact atoms)",
    )  # fmt: skip


def planted_bias_world(
    n_samples: int = 6000,
    dim: int = 48,
    seed: int = 0,
    bias: bool = True,
    shortcut_strength: float = 1.2,
    nuisance_weight: float = 1.0,
    background_scale: float = 0.25,
    noise: float = 0.05,
    with_split: bool = False,
    shortcut: str = "presence",
) -> PlantedWorld:
    """Draw a planted world; ``bias=False`` gives the same data with a classifier that ignores the
    spurious concept (the no-bias null world); ``shortcut`` is ``"presence"`` or ``"absence"``
    (see the module doc)."""
    if shortcut not in SHORTCUTS:
        raise ValueError(f"shortcut must be one of {SHORTCUTS}")
    rng = np.random.default_rng(seed)
    if dim < N_ATOMS + 2:
        raise ValueError(f"dim must be at least {N_ATOMS + 2}")
    atoms = np.linalg.qr(rng.normal(size=(dim, dim)))[0][:N_ATOMS]  # orthonormal rows
    y, blond, z = _codes(rng, n_samples, shortcut)
    absence = shortcut == "absence"
    beta = np.zeros(N_ATOMS)
    beta[0] = 4.0
    beta[1] = 0.0 if not bias else (shortcut_strength if absence else -shortcut_strength)
    beta[3] = nuisance_weight
    beta[len(ROLES) :] = rng.normal(0.0, background_scale, N_ATOMS - len(ROLES))
    expected = z.mean(0)
    expected[0] = 0.65  # the target's threshold
    expected[1] = 1.0 if absence else 0.0  # κ: the typical activation when present (absence)

    mean = rng.normal(0.0, 2.0 / np.sqrt(dim), dim)
    scale = 1.7
    eps = rng.normal(0.0, noise, (n_samples, dim))
    eps -= (eps @ atoms.T) @ atoms  # keep the noise orthogonal to every atom
    x = (mean + (z @ atoms + eps) / scale).astype(np.float32)
    model = _atom_sae(atoms, mean, scale)

    w = scale * (beta @ atoms)
    b = -float(w @ mean) - float((beta * expected).sum())
    head = LinearHead(torch.from_numpy(w.astype(np.float32)), b, "raw", "linear", "planted head")
    labels = pd.DataFrame(
        {"id": [f"s{i:06d}" for i in range(n_samples)], "Male": y, "Blond_Hair": blond}
    )
    if with_split:
        labels["split"] = np.where(rng.random(n_samples) < 0.5, "train", "test")
    return PlantedWorld(x, labels, model, _bank(model), head, dict(ROLES), z, beta)


def save_planted_world(world: PlantedWorld, out: str | os.PathLike[str]) -> dict[str, Path]:
    """Write the world as files the CLI takes: a store with metadata, an SAE, a bank, a head."""
    from audit.store import write_store

    root = Path(out)
    store = root / "embeddings"
    write_store(
        store,
        world.embeddings,
        world.labels,
        model="planted-atoms",
        modality="image",
        overwrite=True,
    )
    sae_dir = save_sae(world.sae, root / "sae")
    bank_path = save_bank(world.bank, root / "planted-bank.yaml")
    head_path = save_head(world.head, root / "head.npz")
    labels_path = root / "labels.csv"
    from audit.fileio import write_text

    write_text(labels_path, world.labels.to_csv(index=False))
    return {
        "store": store,
        "sae": sae_dir,
        "bank": bank_path,
        "head": head_path,
        "labels": labels_path,
    }
