"""Atomic writes: nothing partial under the final name, normal permissions, clear errors."""

from __future__ import annotations

import errno
import os
import stat

import pytest

from audit.errors import InputError
from audit.fileio import atomic_open, read_json, write_json, write_text


def test_written_files_get_umask_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        write_text(tmp_path / "a.txt", "hello")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == 0o644


def test_failure_inside_the_block_leaves_the_old_file(tmp_path):
    target = tmp_path / "r.json"
    write_json(target, {"v": 1})
    with pytest.raises(RuntimeError), atomic_open(target) as fh:
        fh.write('{"v": 2')
        raise RuntimeError("crash while writing")
    assert read_json(target) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]


@pytest.mark.parametrize(
    "code,words", [(errno.ENOSPC, "no space left"), (errno.EROFS, "read-only")]
)
def test_os_errors_become_input_errors_and_leave_nothing(tmp_path, monkeypatch, code, words):
    write_text(tmp_path / "keep.txt", "old")

    def failing_replace(src, dst):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(InputError, match=words):
        write_text(tmp_path / "keep.txt", "new")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt"]
    assert (tmp_path / "keep.txt").read_text() == "old"


@pytest.mark.parametrize(
    "text,words",
    [
        ("a: !!python/object/apply:os.system ['touch {marker}']\n", "tag .* is not allowed"),
        ("a: !!python/name:os.system\n", "tag .* is not allowed"),
        ("a: !custom 1\n", "tag '!custom' is not allowed"),
        ("a: [1\n", r"malformed YAML \(line 2\)"),
        ("a: !!float nope\n", "malformed YAML"),
        ("? [a, b]\n: 1\n", "malformed YAML"),
    ],
)
def test_read_yaml_refuses_tags_and_bad_values_without_running_anything(tmp_path, text, words):
    from audit.fileio import read_yaml

    marker = tmp_path / "ran"
    path = tmp_path / "f.yaml"
    path.write_text(text.format(marker=marker), encoding="utf-8")
    with pytest.raises(InputError, match=words):
        read_yaml(path)
    assert not marker.exists()


def test_read_yaml_file_errors(tmp_path):
    from audit.fileio import read_yaml

    with pytest.raises(InputError, match="not found"):
        read_yaml(tmp_path / "none.yaml")
    with pytest.raises(InputError, match="is a folder"):
        read_yaml(tmp_path)
    (tmp_path / "latin.yaml").write_bytes("a: caf\xe9\n".encode("latin-1"))
    with pytest.raises(InputError, match="not UTF-8"):
        read_yaml(tmp_path / "latin.yaml")
    (tmp_path / "ok.yaml").write_text("a: [1, 2]\nb: {c: x}\n", encoding="utf-8")
    assert read_yaml(tmp_path / "ok.yaml") == {"a": [1, 2], "b": {"c": "x"}}


def test_safetensors_io_errors_become_input_errors(tmp_path):
    from safetensors import SafetensorError

    from audit.fileio import atomic_path

    write_text(tmp_path / "w.safetensors", "old")
    with (
        pytest.raises(InputError, match="no space left on device"),
        atomic_path(tmp_path / "w.safetensors"),
    ):
        raise SafetensorError(
            "Error while serializing: I/O error: No space left on device (os error 28)"
        )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.safetensors"]
    assert (tmp_path / "w.safetensors").read_text() == "old"


def test_temp_files_are_recognisable_and_orphans_of_dead_writers_are_removed(tmp_path):
    import subprocess
    import sys

    from audit.fileio import atomic_path, temp_name_owner

    target = tmp_path / "model.safetensors"
    with atomic_path(target) as tmp:
        final, _host, pid = temp_name_owner(tmp.name)
        assert (final, pid) == ("model.safetensors", os.getpid()) and tmp.name.startswith(".")
        tmp.write_bytes(b"new")
    # A writer killed mid-write leaves its temp file behind; a live writer's is kept.
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    host = temp_name_owner(tmp.name)[1]
    orphan = tmp_path / f".model.safetensors.{host}-{dead}.abcd1234.tmp"
    alive = tmp_path / f".model.safetensors.{host}-{os.getppid()}.efgh5678.tmp"
    elsewhere = tmp_path / f".model.safetensors.0badc0de-{dead}.ijkl9012.tmp"
    other_file = tmp_path / f".other.json.{host}-{dead}.mnop3456.tmp"
    for f in (orphan, alive, elsewhere, other_file):
        f.write_bytes(b"partial")
    write_text(target, "newer")
    left = sorted(p.name for p in tmp_path.iterdir())
    assert orphan.name not in left
    assert {alive.name, elsewhere.name, other_file.name, "model.safetensors"} == set(left)


def test_file_names_that_are_not_utf8_can_be_written_into_reports(tmp_path):
    """Python decodes a non-UTF-8 file name with surrogateescape; writing it must not fail."""
    name = os.fsdecode(b"caf\xe9.npy")
    assert "\udce9" in name
    write_json(tmp_path / "r.json", {"path": name})
    assert read_json(tmp_path / "r.json") == {"path": "caf\ufffd.npy"}
    write_text(tmp_path / "r.html", f"<p>{name}</p>")
    assert (tmp_path / "r.html").read_text(encoding="utf-8") == "<p>caf\ufffd.npy</p>"


def test_safetensors_files_are_byte_for_byte_reproducible(tmp_path):
    # safetensors keeps metadata in a Rust hash map: without canonicalising, saving the same
    # tensors with six metadata keys gives a different byte order nearly every time.
    import torch
    from safetensors import safe_open
    from safetensors.torch import load_file

    from audit.fileio import write_safetensors

    tensors = {"b": torch.arange(5, dtype=torch.float32), "a": torch.ones(2, 3)}
    metadata = {key: f"value of {key} ü" for key in ("state", "format", "arch", "data", "z", "m")}
    blobs = set()
    for attempt in range(20):
        path = tmp_path / f"{attempt}.safetensors"
        write_safetensors(path, tensors, metadata)
        blobs.add(path.read_bytes())
    assert len(blobs) == 1
    header_len = int.from_bytes(next(iter(blobs))[:8], "little")
    assert header_len % 8 == 0
    loaded = load_file(str(path))
    assert set(loaded) == {"a", "b"}
    assert all(torch.equal(loaded[name], tensors[name]) for name in tensors)
    with safe_open(str(path), framework="pt") as handle:
        assert handle.metadata() == metadata
