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
