"""The naming benchmark's measures on a small world with known answers, and its scale mode."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

from audit.concepts import ImageNamingSettings, name_latents
from tests.concepts.worlds import COLOURS, MARKER, SHAPES, marker_world

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "naming_quality.py"


def _benchmark():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("naming_quality", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    return module


def test_image_naming_is_precise_and_keeps_polarity_where_text_naming_misses():
    """Half the marker world names, the other half scores: every validated image concept is
    right in the right direction; the marker is found, which text naming misses."""
    bench = _benchmark()
    world = marker_world(n=4000, seed=5)
    half = len(world.images) // 2
    truth = {c: world.colour == i for i, c in enumerate(COLOURS)}
    truth |= {s: world.shape == i for i, s in enumerate(SHAPES)}
    truth[MARKER] = world.marked
    held = {v: y[half:] for v, y in truth.items()}
    with torch.no_grad():
        z = world.sae.encode(torch.as_tensor(world.images[half:]))
    info = {"fingerprint": "x"}
    image = name_latents(
        world.sae,
        world.vocab,
        world.texts,
        bank_name="i",
        sae_info=info,
        probe_images=world.images[:half],
        image_settings=ImageNamingSettings(seed=5),
    ).bank
    text = name_latents(world.sae, world.vocab, world.texts, bank_name="t", sae_info=info).bank
    scored = bench.score_concepts(image.concept_groups(), z, held, set(held))
    assert scored["precision"] >= 0.95 and scored["wrong_polarity"] == 0
    assert scored["recall_correct"] >= 5 / 7  # the four colours and the marker at least
    named = {g.name for g in image.concept_groups() if g.validated}
    assert MARKER in named and set(COLOURS) <= named
    text_named = {g.name for g in text.concept_groups() if g.validated}
    assert MARKER not in text_named


def test_scale_mode_runs_and_reports_every_stage():
    done = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--scale",
            "--latents",
            "64",
            "--dim",
            "16",
            "--vocab",
            "300",
            "--probe",
            "600",
        ],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    for stage in ("similarity", "images: responses", "images: random latents", "total"):
        assert stage in done.stdout
    seconds = [float(line.split()[-2]) for line in done.stdout.splitlines() if line.endswith(" s")]
    assert seconds and np.isfinite(seconds).all()


def test_the_demo_truth_has_one_value_per_world_word():
    """The demo-world scoring labels every word of the `world` vocabulary (markers included)
    and nothing else: a value without a word ("none") broke the benchmark once."""
    from audit.concepts import load_vocabulary
    from audit.data import world

    scenes = world.sample_scenes(60, seed=0)
    labels = _benchmark().truth(scenes)
    assert sorted(labels) == sorted(load_vocabulary(["world"]).entries)
    assert all(y.dtype == bool and len(y) == 60 for y in labels.values())
    assert labels["stamp"].sum() == (scenes["marker"] == "stamp").sum()


def test_the_label_oracle_separates_one_latent_from_a_sum_from_nothing():
    """Planted codes: value 0 has its own latent, value 1 is split over two latents (each fires
    on half its images), value 2 is in no latent. The oracle's best latent finds the first, only
    its sum finds the second, and neither finds the third."""
    rng = np.random.default_rng(0)
    rows = 4000
    y = np.zeros((rows, 3), dtype=bool)
    y[:, 0] = rng.random(rows) < 0.3
    y[:, 1] = rng.random(rows) < 0.4
    y[:, 2] = rng.random(rows) < 0.5
    z = np.abs(rng.normal(size=(rows, 12))) * 0.1 * (rng.random((rows, 12)) < 0.2)
    z[:, 0] += y[:, 0] * 1.0
    half_of_1 = rng.random(rows) < 0.5
    z[:, 1] += (y[:, 1] & half_of_1) * 1.0
    z[:, 2] += (y[:, 1] & ~half_of_1) * 1.0
    z = torch.as_tensor(z, dtype=torch.float32)
    fit, held = slice(0, rows // 2), slice(rows // 2, rows)
    found = _benchmark().label_oracle(z[fit], z[held], y[fit], y[held])
    single, total, size = found[0]
    assert single > 0.99 and total > 0.99 and size <= 2
    single, total, size = found[1]
    assert 0.6 < single < 0.85 and total > 0.99 and size >= 2
    single, total, _ = found[2]
    assert abs(single - 0.5) < 0.1 and abs(total - 0.5) < 0.1


def test_expansion_retrains_the_sae_on_the_demo_corpus_with_that_many_latents(tmp_path):
    from audit.store import StoreWriter

    rng = np.random.default_rng(0)
    writer = StoreWriter(tmp_path / "corpus_store", 16, model="test")
    writer.append(rng.standard_normal((600, 16)).astype(np.float32))
    writer.finalize()
    data = {"corpus_store": str(tmp_path / "corpus_store"), "sae": None}
    _benchmark().retrain_sae(data, tmp_path / "out", expansion=2, seed=3)
    assert data["sae"].W_dec.shape == (32, 16)
    assert (tmp_path / "out" / "sae-x2-seed3" / "sae.safetensors").exists()


def test_per_sae_report_averages_each_training_run_then_all_together(capsys):
    """Two SAEs with two naming seeds each: each row is its own SAE's mean (range), the pooled
    table the mean over all four (values by hand)."""

    def scores(recall: float) -> dict:
        keys = ("concepts", "latents", "precision", "latent_precision", "recall_correct")
        return {
            **dict.fromkeys(keys, 1.0),
            "recall": recall,
            "recall_seen": recall,
            "wrong_polarity": 0,
            "bad": [("large", 0.8)],
        }

    per_sae = {
        0: {"fvu": 0.0052, "seeds": {0: {"image": scores(0.6)}, 1: {"image": scores(0.8)}}},
        1: {"fvu": 0.0041, "seeds": {0: {"image": scores(0.9)}, 1: {"image": scores(0.9)}}},
    }
    _benchmark().report_per_sae(per_sae)
    lines = capsys.readouterr().out.splitlines()
    first = next(line for line in lines if line.startswith("| 0 |"))
    assert "| 0.0052 |" in first and "0.700 (0.600–0.800)" in first
    second = next(line for line in lines if line.startswith("| 1 |"))
    assert "0.900 (0.900–0.900)" in second
    pooled = next(line for line in lines if line.startswith("| image |"))
    assert "0.800 (0.600–0.900)" in pooled
    assert not any("below AUC" in line for line in lines)  # 4 runs' misses are not listed
