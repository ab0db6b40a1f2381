"""Planted shortcuts in the synthetic world (:mod:`audit.data.world`).

A target of two shapes and one attribute value (a colour, a pasted marker, …) that goes with
one of them more often in the train split than in the test split: a classifier trained on
the train split can learn the cheap cue instead of the shape, and fails where the
correlation breaks. Every other attribute stays independent of the target.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from audit.data.world import ATTRIBUTES, MARKERS, NO_MARKER, attribute_of, sample_scenes
from audit.errors import InputError


def shortcut_scenes(
    n: int,
    seed: int,
    *,
    target_shapes: tuple[str, str] = ("circle", "square"),
    spurious: str = "red",
    p_spurious_given_a: float = 0.5,
    p_spurious_given_b: float = 0.5,
) -> pd.DataFrame:
    """Scenes of two shapes (half each) where the first shape has the value ``spurious`` (a
    colour, a marker, any attribute value) with probability ``p_spurious_given_a`` and the
    second with ``p_spurious_given_b``; otherwise that attribute is uniform over its other
    values, and every other attribute stays independent. Equal probabilities give a balanced
    (shortcut-free) split."""
    a, b = target_shapes
    attribute = attribute_of(spurious)
    if attribute == "shape":
        raise InputError(f"the spurious value {spurious!r} is a shape, which is the target")
    frame = sample_scenes(n, seed, shape=[a, b])
    rng = np.random.default_rng([seed, 0xC0102])
    is_a = rng.random(n) < 0.5
    frame["shape"] = np.where(is_a, a, b)
    others = np.array([v for v in ATTRIBUTES[attribute] if v != spurious])
    p = np.where(is_a, p_spurious_given_a, p_spurious_given_b)
    frame[attribute] = np.where(rng.random(n) < p, spurious, rng.choice(others, size=n))
    return frame


def split_shortcut_scenes(
    n_train: int,
    n_test: int,
    seed: int,
    *,
    spurious: str,
    p_spurious_given_a: float,
    p_spurious_given_b: float,
    target_shapes: tuple[str, str] = ("circle", "square"),
) -> pd.DataFrame:
    """A train split with the shortcut (:func:`shortcut_scenes`, seed ``seed``) followed by a
    balanced test split (``spurious`` with probability 1/2 for both shapes, seed ``seed + 1``);
    the ``split`` column says which is which."""
    train = shortcut_scenes(
        n_train,
        seed,
        target_shapes=target_shapes,
        spurious=spurious,
        p_spurious_given_a=p_spurious_given_a,
        p_spurious_given_b=p_spurious_given_b,
    )
    test = shortcut_scenes(
        n_test,
        seed + 1,
        target_shapes=target_shapes,
        spurious=spurious,
        p_spurious_given_a=0.5,
        p_spurious_given_b=0.5,
    )
    scenes = pd.concat([train, test], ignore_index=True)
    scenes["split"] = ["train"] * n_train + ["test"] * n_test
    return scenes


def marker_shortcut_scenes(
    n_train: int,
    n_test: int,
    seed: int,
    *,
    marker: str = "frame",
    p_marker_given_a: float = 0.95,
    p_marker_given_b: float = 0.05,
    target_shapes: tuple[str, str] = ("circle", "square"),
) -> pd.DataFrame:
    """The marker world: the label (first shape or second) leaks through a pasted ``marker``
    in the train split (95 % of the first shape carry it, 5 % of the second) and not in the
    test split; colour and every other attribute are independent of the label."""
    if marker not in MARKERS or marker == NO_MARKER:
        raise InputError(f"unknown marker {marker!r}; choose from {list(MARKERS)[1:]}")
    return split_shortcut_scenes(
        n_train,
        n_test,
        seed,
        spurious=marker,
        p_spurious_given_a=p_marker_given_a,
        p_spurious_given_b=p_marker_given_b,
        target_shapes=target_shapes,
    )
