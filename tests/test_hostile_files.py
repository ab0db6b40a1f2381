"""The hostile payloads of tests/hostile_files.py really run code when unpickled.

Every "refused and never run" test asserts that the payload's marker file is absent. That proves
nothing unless the payload would have created it: these positive controls load each file the
unsafe way and check the marker appears, so a broken payload fails here instead of turning the
refusal tests into tests that cannot fail.
"""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from tests.hostile_files import pickled_npy, pickled_npz, torch_pickle, typeerror_then_code_pickle


@pytest.mark.parametrize(
    "make,name,unsafe_load",
    [
        (torch_pickle, "evil.pt", lambda p: torch.load(p, weights_only=False)),
        (typeerror_then_code_pickle, "evil.bin", lambda p: pickle.loads(p.read_bytes())),
        (pickled_npy, "evil.npy", lambda p: np.load(p, allow_pickle=True)),
        (pickled_npz, "evil.npz", lambda p: np.load(p, allow_pickle=True)["weight"]),
    ],
    ids=["torch_pickle", "typeerror_then_code_pickle", "pickled_npy", "pickled_npz"],
)
def test_each_payload_runs_code_when_unpickled(tmp_path, make, name, unsafe_load):
    marker = tmp_path / "ran"
    path = make(tmp_path / name, marker)
    assert not marker.exists()
    unsafe_load(path)
    assert marker.exists(), f"{make.__name__} no longer runs code: refusal tests prove nothing"


def test_the_typeerror_payload_fails_the_safe_loader_with_typeerror_before_running(tmp_path):
    """open_clip retries ``torch.load`` without ``weights_only`` only on ``TypeError``: the
    payload must raise exactly that in the safe unpickler, and before its code runs."""
    marker = tmp_path / "ran"
    path = typeerror_then_code_pickle(tmp_path / "payload.bin", marker)
    with pytest.raises(TypeError):
        torch.load(path, weights_only=True)
    assert not marker.exists()
