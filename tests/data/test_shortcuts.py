"""Planted shortcuts: the correlation is in the train split only, everything else independent."""

from __future__ import annotations

import pytest

from audit.data.shortcuts import marker_shortcut_scenes, shortcut_scenes
from audit.errors import InputError


def test_shortcut_scenes_plant_the_correlation():
    frame = shortcut_scenes(4000, 0, p_spurious_given_a=0.95, p_spurious_given_b=0.05)
    red = frame["colour"] == "red"
    assert set(frame["shape"]) == {"circle", "square"}
    assert abs(red[frame["shape"] == "circle"].mean() - 0.95) < 0.02
    assert abs(red[frame["shape"] == "square"].mean() - 0.05) < 0.02
    balanced = shortcut_scenes(4000, 1)
    assert abs((balanced["colour"] == "red").mean() - 0.5) < 0.03
    with pytest.raises(InputError, match="unknown world value 'magenta'"):
        shortcut_scenes(10, 0, spurious="magenta")
    with pytest.raises(InputError, match="is a shape"):
        shortcut_scenes(10, 0, spurious="star")


def test_marker_world_leaks_the_label_through_the_marker_in_train_only():
    scenes = marker_shortcut_scenes(4000, 4000, seed=3, marker="frame")
    is_a = scenes["shape"] == "circle"
    framed = scenes["marker"] == "frame"
    train = scenes["split"] == "train"
    assert set(scenes["shape"]) == {"circle", "square"} and train.sum() == 4000
    assert abs(framed[train & is_a].mean() - 0.95) < 0.02
    assert abs(framed[train & ~is_a].mean() - 0.05) < 0.02
    assert abs(framed[~train & is_a].mean() - 0.5) < 0.03
    assert abs(framed[~train & ~is_a].mean() - 0.5) < 0.03
    # Unmarked scenes carry the other marker or none; colour stays independent of the label.
    assert set(scenes.loc[~framed, "marker"]) == {"none", "stamp"}
    red = scenes["colour"] == "red"
    assert abs(red[train & is_a].mean() - red[train & ~is_a].mean()) < 0.03
    with pytest.raises(InputError, match="unknown marker"):
        marker_shortcut_scenes(10, 10, seed=0, marker="red")
