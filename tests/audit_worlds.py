"""Planted-bias worlds written as files, shared by the CLI and report tests."""

from __future__ import annotations

import copy
from pathlib import Path

import pandas as pd

from audit.concepts import save_bank
from tests.fairness.planted import ROLE_NAMES, PlantedWorld, planted_bias_world, save_planted_world

HOSTILE_NAME = "<script>alert(1)</script>"
HOSTILE_VALUE = "<img src=x onerror=alert(2)>"


def write_world(root: Path, n_samples: int = 2000, seed: int = 0, **kwargs) -> dict[str, Path]:
    return save_planted_world(planted_bias_world(n_samples=n_samples, seed=seed, **kwargs), root)


def hostile_world(
    root: Path, n_samples: int = 2000, seed: int = 0
) -> tuple[dict[str, Path], PlantedWorld]:
    """The planted world with a script tag as the shortcut's name and as an attribute value."""
    world = planted_bias_world(n_samples=n_samples, seed=seed)
    bank = copy.deepcopy(world.bank)
    for c in bank.concepts:
        if c.name == ROLE_NAMES["spurious"]:
            c.name = c.closest = HOSTILE_NAME
    world.bank = bank
    labels = world.labels.copy()
    labels["Blond_Hair"] = labels["Blond_Hair"].map({0: "plain | text", 1: HOSTILE_VALUE})
    world.labels = labels
    paths = save_planted_world(world, root)
    save_bank(bank, paths["bank"])
    return paths, world


def labels_frame(paths: dict[str, Path]) -> pd.DataFrame:
    return pd.read_csv(paths["labels"])
