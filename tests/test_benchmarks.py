"""The benchmark scripts run (tiny sizes) and report what docs/performance.md quotes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_train_throughput_benchmark_runs(tmp_path):
    out = tmp_path / "figures.json"
    args = [
        "--d",
        "16",
        "--n",
        "64",
        "--batch",
        "64",
        "--k-min",
        "4",
        "--rows",
        "256",
        "--naive-steps",
        "1",
        "--threads",
        "1",
        "--regimes",
        "init,trained,active=0.1",
    ]
    script = ROOT / "benchmarks" / "train_throughput.py"
    done = subprocess.run(
        [sys.executable, str(script), *args, "--json", str(out)],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "faster than naive" in done.stdout and "samples/s" in done.stdout
    figures = json.loads(out.read_text())
    assert figures["train_sae"]["steps"] == 4 and figures["train_sae"]["samples_per_second"] > 0
    for regime in ("init", "trained", "active=0.1"):
        loops = figures["bare_loops"][regime]
        assert (
            loops["fp32"]["speedup_vs_naive"] > 0 and len(loops["fp32"]["naive_step_seconds"]) == 1
        )
        assert loops["loss_abs_diff"] < 1e-5 and loops["grad_rel_diff"] < 1e-4  # ours = naive
    # The bias leaves about a tenth of the 64 latents on (the init has about half).
    assert (
        figures["bare_loops"]["active=0.1"]["active_mean"]
        < figures["bare_loops"]["init"]["active_mean"] / 2
    )


def test_embed_speed_benchmark_runs(tmp_path):
    from tests.world_helpers import make_random_clip

    config, _, _ = make_random_clip(tmp_path / "clip")
    out = tmp_path / "figures.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "embed_speed.py"), "--model", str(config),
         "--images", "12", "--size", "40", "--batch-size", "5", "--workers", "0",
         "--model-batches", "2", "--json", str(out)],
        env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert "faster than naive" in done.stdout
    figures = json.loads(out.read_text())
    assert figures["ours"]["images_per_second"] > 0 and figures["naive"]["images_per_second"] > 0
    assert figures["max_abs_difference"] < 1e-4  # batched and one-at-a-time agree
    assert figures["model_only_images_per_second"] > 0


def test_recovery_benchmark_quick_mode(tmp_path):
    out = tmp_path / "recovery.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "recovery.py"), "--quick", "--json", str(out)],
        env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    figures = json.loads(out.read_text())
    assert {r["arch"] for r in figures["rows"]} == {
        "matryoshka-uw",
        "matryoshka-rw",
        "topk",
        "relu",
    }
    for row in figures["rows"]:
        assert -1 <= row["mmcs_frequent"] <= 1 and 0 <= row["dead_fraction"] <= 1
        assert row["fvu"] >= 0 and row["steps"] > 0
    steps = sorted({r["steps"] for r in figures["rows"]})
    assert len(steps) == 2 and steps[1] == 2 * steps[0]  # one run, scored twice


def test_recovery_world_is_what_it_says():
    import importlib.util

    spec = importlib.util.spec_from_file_location("recovery", ROOT / "benchmarks" / "recovery.py")
    recovery = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(recovery)
    recovery_world = recovery.recovery_world

    world = recovery_world(n_samples=20_000, held_out=100, seed=1)
    frequent = world.frequency[world.frequent]
    assert world.frequent.sum() == 8 and np.all((frequent > 0.2) & (frequent < 0.4))
    assert world.frequency[~world.frequent].max() < 0.2 and world.frequency.sum() > 5
    cos = world.atoms[world.frequent] @ world.atoms[world.frequent].T
    assert 0.2 < cos[~np.eye(8, dtype=bool)].mean() < 0.4  # correlated directions
    np.testing.assert_allclose(np.linalg.norm(world.train, axis=1), 1, atol=1e-5)


@pytest.mark.slow
def test_gpu_check_smoke_mode_runs_end_to_end(tmp_path):
    """The GPU check at toy sizes on whatever device there is: every part runs, one JSON and
    one Markdown summary come out, the goals are listed."""
    out = tmp_path / "out"
    done = subprocess.run(
        ["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), "--smoke", "--out", str(out)],
        env={**os.environ, "PYTHON": sys.executable},
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads((out / "gpu_check.json").read_text())
    assert summary["mode"] == "smoke"
    statuses = {name: part["status"] for name, part in summary["parts"].items()}
    assert statuses == dict.fromkeys(
        ["environment", "calibrate", "train", "embed", "audit", "pytest", "eval"], "ok"
    ), summary["parts"]
    train = summary["parts"]["train"]["figures"]
    assert train["cc3m_projection"]["train_sae_initial_density_seconds"] > 0
    assert set(train["bare_loops"]["init"]) >= {"fp32", "bf16", "loss_abs_diff"}
    tests = summary["parts"]["pytest"]["figures"]
    assert tests["tests"] > 0 and tests["failures"] == tests["errors"] == 0
    assert [g["target"] for g in summary["goals"]] == [3.0, 8.0, 300.0, 2000.0]
    markdown = (out / "gpu_check.md").read_text()
    assert "## Goals" in markdown and "## Training" in markdown and "## pytest -m cuda" in markdown
    assert sorted(p.name for p in out.iterdir()) == [
        "gpu_check.json", "gpu_check.log", "gpu_check.md", "pytest_cuda.xml"
    ]  # fmt: skip


def test_image_model_speed_benchmark_runs(tmp_path):
    out = tmp_path / "figures.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "image_model_speed.py"), "--images", "12",
         "--naive-images", "4", "--image-size", "32", "--batch-size", "5", "--workers", "0",
         "--device", "cpu", "--json", str(out)],
        env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert "faster than naive" in done.stdout and "images/s" in done.stdout
    figures = json.loads(out.read_text())
    assert figures["ours"]["images_per_second"] > 0 and figures["naive"]["images_per_second"] > 0
    assert figures["same_decisions"] and figures["max_abs_difference"] < 1e-4
    assert set(figures["rss_growth_mib"]) == {"quarter", "all"}


def test_gpu_profile_smoke_mode_prints_a_table_per_regime():
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gpu_profile.py"), "--smoke", "--rows", "5"],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    for regime in ("init", "active=0.04"):
        assert f"== {regime}: step " in done.stdout
    assert done.stdout.count("_NestedTopKLoss") >= 2  # the loss appears in each table


def test_ablation_choice_benchmark_separates_the_edits(tmp_path):
    """What docs/audit-method.md quotes: zero ablation misses the absence shortcut that mean,
    resampling and the larger of both find; no edit flags anything on the null head."""
    out = tmp_path / "choice.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "ablation_choice.py"), "--seeds", "0",
         "--null-seeds", "1", "--json", str(out)],
        env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    table = json.loads(out.read_text())
    assert table["absence"]["zero"]["first_and_flagged"] == 0
    for edit in ("mean", "resample", "max"):
        assert table["absence"][edit]["first_and_flagged"] == 1, edit
    for edit in ("zero", "mean", "resample", "max"):
        assert table["presence"][edit]["first_and_flagged"] == 1, edit
        assert table["null"][edit]["runs_with_any_flag"] == 0, edit
