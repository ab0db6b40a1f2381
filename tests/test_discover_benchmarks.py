"""The discover benchmarks run at tiny sizes and print what docs/discover.md quotes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _run(script: str, tmp: Path, *args: str) -> str:
    """Run a benchmark with its own temporary folder, and check it leaves nothing there."""
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), *args],
        env={**os.environ, "PYTHONPATH": str(ROOT), "TMPDIR": str(tmp)},
        capture_output=True, text=True, check=True, timeout=300,
    )  # fmt: skip
    assert not any(tmp.iterdir()), f"{script} left {sorted(p.name for p in tmp.iterdir())}"
    return done.stdout


def test_discover_speed_benchmark_runs_and_agrees_with_the_naive_loop(tmp_path):
    out = _run("discover_speed.py", tmp_path, "--rows", "3000", "--dim", "256", "--latents", "512",
               "--named", "40", "--naive-concepts", "2", "--threads", "1")  # fmt: skip
    assert "discover:" in out and "faster" in out and "equal" in out


def test_discover_baselines_benchmark_runs(tmp_path):
    out = _run("discover_baselines.py", tmp_path, "--seeds", "2", "--rows", "1500")
    assert "| discover |" in out and "| slice clustering |" in out
