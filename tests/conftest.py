"""Shared fixtures: small planted data sets and a CLI runner."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

os.environ.setdefault("MSAE_AUDIT_NO_DOWNLOAD", "1")
# MSAE_TEST_THREADS=N runs the suite with N torch threads: results must not depend on it.
torch.set_num_threads(
    int(os.environ.get("MSAE_TEST_THREADS") or 0) or max(1, min(2, os.cpu_count() or 1))
)


@pytest.fixture
def planted():
    from audit.data.planted import planted_embeddings

    return planted_embeddings(n_samples=4000, dim=32, n_atoms=32, active=3, seed=0)


@pytest.fixture
def planted_store(tmp_path: Path, planted):
    from audit.store import write_store

    return write_store(tmp_path / "store", planted.embeddings, model="planted", modality="image")


class CliResult:
    def __init__(self, code: int, out: str, err: str) -> None:
        self.exit_code, self.stdout, self.stderr = code, out, err


@pytest.fixture
def cli(capsys):
    """Run ``msae-audit`` in-process; returns exit code and captured output."""
    from audit.cli import run

    def invoke(*args: str) -> CliResult:
        code = run([str(a) for a in args])
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return invoke


def assert_one_line_error(
    result: CliResult, code: int = 2, contains: str | None = None, details: bool = False
) -> None:
    """The command failed with ``code`` and said why in one ``error: …`` line, the last thing
    it printed (not a traceback, not Click's multi-line usage box); ``details``: an error's
    details (the expected CelebA folder tree) may follow the line."""
    assert result.exit_code == code, (result.exit_code, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1 and (details or lines[-1] == errors[0]), result.stderr
    if contains is not None:
        assert contains.lower() in errors[0].lower(), errors[0]


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture(scope="session")
def cnn_audit_world(tmp_path_factory):
    """The demo's circle/square world with a biased and a balanced CNN (about a minute; built
    once per session for every test that audits image models)."""
    from tests.cnn_worlds import build_cnn_audit_world

    return build_cnn_audit_world(tmp_path_factory.mktemp("cnn_world"))


@pytest.fixture(scope="session")
def marker_world(tmp_path_factory):
    """Issue 13's marker world (tests/fairness/marker_world.py), built once per session for the
    labelled audit's and discover's tests (20–30 s)."""
    from tests.fairness.marker_world import build_marker_world

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small kernels: one thread is faster on a shared 2-core machine
    yield build_marker_world(tmp_path_factory.mktemp("marker_world"))
    torch.set_num_threads(threads)
