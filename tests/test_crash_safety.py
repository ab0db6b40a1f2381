"""``kill -9`` at random moments: training resumes to the same model, and stores, banks and
reports never leave a partial file under their final name.

Every process here is ``python -m …`` from the repository root, killed with SIGKILL (no
cleanup handlers run). What may remain besides complete files are temporary files, which are
hidden, name their writer (``.<final>.<host>-<pid>.<random>.tmp``) and are removed by the
next write of the same file.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from audit.errors import InputError
from audit.fileio import temp_name_owner

REPO = Path(__file__).resolve().parent.parent
ENV = {
    **os.environ,
    "PYTHONPATH": str(REPO),
    "OMP_NUM_THREADS": "1",  # the same arithmetic in every process (and kind to a shared box)
    "MKL_NUM_THREADS": "1",
    "PYTHONDONTWRITEBYTECODE": "1",
}

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL semantics")


def _spawn(*args: object) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", *map(str, args)], cwd=REPO, env=ENV,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def _wait_for(proc: subprocess.Popen, word: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if word in line:
            return
        if not line and proc.poll() is not None:
            raise AssertionError(f"process ended before '{word}': {proc.stderr.read()[-2000:]}")
    raise AssertionError(f"no '{word}' within {timeout} s")


def _kill(proc: subprocess.Popen) -> bool:
    """SIGKILL; False if the process had already finished on its own."""
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    proc.stdout.close()
    proc.stderr.close()
    assert proc.returncode in (0, -signal.SIGKILL), proc.returncode
    return proc.returncode == -signal.SIGKILL


def _temp_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob(".*.tmp") if p.is_file())


def _assert_temps_belong_to(folder: Path, pids: set[int]) -> list[Path]:
    temps = _temp_files(folder)
    for temp in temps:
        owner = temp_name_owner(temp.name)
        assert owner is not None and owner[2] in pids, temp.name
    return temps


# ------------------------------------------------------------------------------------------
# Training
# ------------------------------------------------------------------------------------------


def _train_args(store: Path, out: Path) -> list[object]:
    return [
        "audit", "train", "--embeddings", store, "--out", out, "--n-latents", "128",
        "--k-min", "8", "--epochs", "40", "--batch-size", "64", "--checkpoint-every", "7",
        "--seed", "3", "--device", "cpu", "--data-on-device", "yes", "-q",
    ]  # fmt: skip


def _wait_for_file(path: Path, proc: subprocess.Popen, newer_than: float = 0.0) -> None:
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if path.exists() and path.stat().st_mtime > newer_than:
            return
        if proc.poll() is not None:
            raise AssertionError(f"training ended before {path.name}: {proc.stderr.read()[-2000:]}")
        time.sleep(0.005)
    raise AssertionError(f"{path} did not appear")


def test_kill_9_during_training_then_resume_gives_the_same_model(tmp_path):
    from audit.data.planted import planted_embeddings
    from audit.store import write_store

    data = planted_embeddings(n_samples=2000, dim=32, n_atoms=40, active=3, seed=1)
    store = write_store(tmp_path / "store", data.embeddings).path
    full, resumed = tmp_path / "full", tmp_path / "resumed"
    uninterrupted = _spawn(*_train_args(store, full))

    # Kill twice: once after the first checkpoint, once after the resumed run checkpointed again.
    checkpoint = resumed / "checkpoint.safetensors"
    rng = np.random.default_rng(0)
    killed_pids = set()
    for round_ in range(2):
        proc = _spawn(*_train_args(store, resumed), *(["--resume"] if round_ else []))
        _wait_for_file(checkpoint, proc, checkpoint.stat().st_mtime if round_ else 0.0)
        time.sleep(float(rng.uniform(0.0, 0.3)))
        killed_pids.add(proc.pid)
        assert _kill(proc), "training finished before the kill"
        assert not (resumed / "sae.safetensors").exists()
        assert checkpoint.exists()
        _assert_temps_belong_to(resumed, killed_pids)

    finisher = _spawn(*_train_args(store, resumed), "--resume")
    _, err = finisher.communicate(timeout=600)
    assert finisher.returncode == 0, err
    _, err = uninterrupted.communicate(timeout=600)
    assert uninterrupted.returncode == 0, err

    assert (resumed / "sae.safetensors").read_bytes() == (full / "sae.safetensors").read_bytes()
    assert (resumed / "config.json").read_text() == (full / "config.json").read_text()
    history = json.loads((resumed / "training.json").read_text())["history"]
    assert history == json.loads((full / "training.json").read_text())["history"]
    assert not checkpoint.exists() and _temp_files(resumed) == []  # orphans cleaned on write


# ------------------------------------------------------------------------------------------
# Stores
# ------------------------------------------------------------------------------------------


def _check_store_invariants(out: Path, x: np.ndarray, meta: pd.DataFrame, pids: set[int]) -> None:
    """Whatever a kill left: complete files only, each holding exactly the rows it names."""
    from audit.store import open_store
    from tests.crash_writer import SHARD_ROWS

    if (out / "manifest.json").exists():
        store = open_store(out)  # a manifest means a complete store
        np.testing.assert_array_equal(store.read(), x)
        return
    with pytest.raises(InputError, match="interrupted write"):
        open_store(out)
    for folder in (out, out / ".partial"):
        if not folder.is_dir():
            continue
        for shard in folder.glob("embeddings-*.npy"):
            index = int(shard.stem.split("-")[1])
            rows = np.load(shard, allow_pickle=False)
            lo = index * SHARD_ROWS
            np.testing.assert_array_equal(rows, x[lo : lo + len(rows)])
            assert len(rows) == SHARD_ROWS or lo + len(rows) == len(x)
        for part in folder.glob("metadata-*.csv"):
            index = int(part.stem.split("-")[1])
            ids = pd.read_csv(part)["id"].tolist()
            lo = index * SHARD_ROWS
            assert ids == meta["id"].iloc[lo : lo + len(ids)].tolist()
    if (out / ".partial" / "progress.json").exists():
        json.loads((out / ".partial" / "progress.json").read_text())
    _assert_temps_belong_to(out, pids)


def test_kill_9_while_writing_a_store_never_leaves_a_partial_file(tmp_path):
    from audit.store import open_store
    from tests.crash_writer import store_rows

    x, meta = store_rows(0)
    out = tmp_path / "store"
    rng = np.random.default_rng(1)
    pids: set[int] = set()
    kills = 0
    for _ in range(6):
        proc = _spawn("tests.crash_writer", "store", out)
        _wait_for(proc, "ready")
        time.sleep(float(rng.uniform(0.05, 0.3)))
        pids.add(proc.pid)
        kills += _kill(proc)
        _check_store_invariants(out, x, meta, pids)
    assert kills >= 3, "the writer finished before most kills; slow it down"
    proc = _spawn("tests.crash_writer", "store", out)  # resume to the end
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    store = open_store(out)
    np.testing.assert_array_equal(store.read(), x)
    assert store.metadata["id"].tolist() == meta["id"].tolist()
    assert not (out / ".partial").exists()


# ------------------------------------------------------------------------------------------
# Banks and reports
# ------------------------------------------------------------------------------------------


def _kill_repeatedly(kind: str, out: Path, check, want: int = 1, most: int = 12) -> int:
    """Kill a looping writer at random moments until ``want`` kills interrupted a write (left a
    temporary file) or ``most`` kills were made; ``check`` inspects what is left after each.
    Returns the number of interrupted writes."""
    rng = np.random.default_rng(2)
    pids: set[int] = set()
    interrupted = 0
    for _ in range(most):
        proc = _spawn("tests.crash_writer", kind, out)
        _wait_for(proc, "ready")
        time.sleep(float(rng.uniform(0.2, 0.8)))
        pids.add(proc.pid)
        assert _kill(proc)  # the loop never ends by itself
        folder = out if out.is_dir() else out.parent
        interrupted += bool(_assert_temps_belong_to(folder, pids))
        check()
        if interrupted >= want:
            break
    assert interrupted >= 1, "no kill landed inside a write; the test proved nothing"
    return interrupted


def test_kill_9_while_writing_a_bank_never_leaves_a_partial_file(tmp_path):
    from audit.concepts import load_bank, save_bank
    from tests.crash_writer import big_bank

    out = tmp_path / "banks" / "crash.yaml"

    def check() -> None:
        if not out.exists():
            return  # killed before the first version was complete
        bank = load_bank(out)  # parses completely
        version = bank.extra["run"]
        assert len(bank.concepts) == 1000
        assert all(c.name.endswith(f" v{version}") for c in bank.concepts)

    _kill_repeatedly("bank", out, check)
    save_bank(big_bank(0, n_latents=10), out)  # the next write removes the dead writers' temps
    assert _temp_files(out.parent) == [] and load_bank(out).extra["run"] == 0


def test_kill_9_while_writing_reports_never_leaves_a_partial_file(tmp_path):
    from audit.fairness import dumps
    from audit.fileio import write_text
    from audit.report import junit, markdown
    from tests.crash_writer import report_result

    out = tmp_path / "reports"
    template = dumps(report_result(987654321))
    expected_xml = junit.render_junit(report_result(987654321))
    expected_md = markdown.render_markdown(report_result(987654321))

    def check() -> None:
        if (out / "audit.json").exists():
            text = (out / "audit.json").read_text(encoding="utf-8")
            version = json.loads(text)["run_version"]  # complete JSON
            assert text == template.replace("987654321", str(version))
        if (out / "audit.xml").exists():
            assert (out / "audit.xml").read_text(encoding="utf-8") == expected_xml
            ET.parse(out / "audit.xml")
        if (out / "audit.md").exists():
            assert (out / "audit.md").read_text(encoding="utf-8") == expected_md

    _kill_repeatedly("report", out, check)
    write_text(out / "audit.json", "{}")
    assert not [p for p in _temp_files(out) if temp_name_owner(p.name)[0] == "audit.json"]
