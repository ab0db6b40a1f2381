"""The benchmark scripts run (tiny sizes) and report what RESULTS.md quotes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

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
    for regime in ("init", "trained"):
        loops = figures["bare_loops"][regime]
        assert loops["speedup_vs_naive"] > 0 and len(loops["naive_step_seconds"]) == 1


def test_embed_speed_benchmark_runs(tmp_path):
    from tests.world_helpers import make_random_clip

    config, _, _ = make_random_clip(tmp_path / "clip")
    out = tmp_path / "figures.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "embed_speed.py"), "--model", str(config),
         "--images", "12", "--size", "40", "--batch-size", "5", "--workers", "0",
         "--json", str(out)],
        env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert "faster than naive" in done.stdout
    figures = json.loads(out.read_text())
    assert figures["ours"]["images_per_second"] > 0 and figures["naive"]["images_per_second"] > 0
    assert figures["max_abs_difference"] < 1e-4  # batched and one-at-a-time agree


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
