"""Atomic file writes: every file is written to a temporary name and renamed into place.

A crash (even ``kill -9``) therefore leaves either the old file or the new one under the final
name, never a partial file. Temporary files are named ``.<final name>.<host>-<pid>.<random>.tmp``
(hidden, never matched by any reader); the next write of the same file removes those whose
process on this host no longer exists, so repeated crashes do not pile up large leftovers.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import hashlib
import json
import os
import re
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from audit.errors import InputError

_OS_ERROR_HINTS = {
    errno.ENOSPC: "no space left on device",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EDQUOT: "disk quota exceeded",
    errno.EFBIG: "file too large (file size limit reached)",
    errno.EPERM: "operation not permitted",
}


def describe_os_error(exc: OSError) -> str:
    return _OS_ERROR_HINTS.get(exc.errno or -1, exc.strerror or str(exc))


def ensure_dir(path: Path) -> Path:
    """Create ``path`` (and parents); a failure becomes an :class:`InputError`."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError as exc:
        raise InputError(f"cannot create folder {path}: a file with that name exists") from exc
    except OSError as exc:
        raise InputError(f"cannot create folder {path}: {describe_os_error(exc)}") from exc
    return path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it is renamed onto ``path``.

    Use this for writers that want a file name (``np.save``, ``safetensors``).
    """
    final = Path(path)
    ensure_dir(final.parent)
    _remove_orphans(final)
    try:
        fd, tmp_name = tempfile.mkstemp(
            prefix=f".{final.name}.{_HOST}-{os.getpid()}.", suffix=".tmp", dir=final.parent
        )
    except OSError as exc:
        raise InputError(f"cannot write {final}: {describe_os_error(exc)}") from exc
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        # mkstemp creates 0600 files; give the result the permissions a plain open() would.
        os.chmod(tmp, 0o666 & ~_current_umask())
        yield tmp
        _fsync_file(tmp)
        os.replace(tmp, final)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise InputError(f"cannot write {final}: {describe_os_error(exc)}") from exc
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        code = _wrapped_os_error(exc)
        if code is not None:
            reason = describe_os_error(OSError(code, os.strerror(code)))
            raise InputError(f"cannot write {final}: {reason}") from exc
        raise


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike[str], mode: str = "w", **kwargs: Any) -> Iterator[IO[Any]]:
    """Open a temporary file for writing; it replaces ``path`` only if the block succeeds."""
    if "b" not in mode:
        kwargs.setdefault("encoding", "utf-8")
    with atomic_path(path) as tmp:
        try:
            with open(tmp, mode, **kwargs) as handle:
                yield handle
        except OSError as exc:
            raise InputError(f"cannot write {path}: {describe_os_error(exc)}") from exc


_SURROGATES = re.compile("[\ud800-\udfff]")


def utf8_safe(text: str) -> str:
    """``text`` with lone surrogates replaced by U+FFFD. Python decodes file names that are not
    UTF-8 with ``surrogateescape`` (``caf\\xe9`` becomes ``caf\\udce9``); such a name inside a
    report would make the UTF-8 encoder fail."""
    return _SURROGATES.sub("\ufffd", text)


def write_text(path: str | os.PathLike[str], text: str) -> None:
    with atomic_open(path, "w") as handle:
        handle.write(utf8_safe(text))


def write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    with atomic_open(path, "wb") as handle:
        handle.write(data)


def write_json(path: str | os.PathLike[str], obj: Any, *, indent: int | None = 2) -> None:
    """Write JSON atomically; NaN/inf are refused so every file is standard JSON."""
    write_text(path, json.dumps(obj, indent=indent, allow_nan=False, ensure_ascii=False) + "\n")


def write_safetensors(
    path: str | os.PathLike[str], tensors: dict[str, Any], metadata: dict[str, str] | None = None
) -> None:
    """Write torch tensors as safetensors, atomically and byte-for-byte reproducibly.

    The Rust serializer keeps ``__metadata__`` in a hash map whose order changes from process to
    process, so the same model saved twice gave different bytes. The header is re-serialized with
    the metadata keys sorted; tensor entries and data are left as the library wrote them.
    """
    from safetensors.torch import save

    blob = save(tensors, metadata=metadata)
    header_len = int.from_bytes(blob[:8], "little")
    header = json.loads(blob[8 : 8 + header_len])
    if "__metadata__" in header:
        header["__metadata__"] = dict(sorted(header["__metadata__"].items()))
        header = {"__metadata__": header.pop("__metadata__"), **header}
    encoded = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    encoded += b" " * (-len(encoded) % 8)  # the format pads the header to 8-byte alignment
    with atomic_open(path, "wb") as handle:
        handle.write(len(encoded).to_bytes(8, "little"))
        handle.write(encoded)
        handle.write(memoryview(blob)[8 + header_len :])  # no copy of the tensor data


def read_user_bytes(path: str | os.PathLike[str], what: str = "file") -> bytes:
    """Read a user's file; missing, a folder or unreadable is a one-line :class:`InputError`."""
    p = Path(path)
    try:
        return p.read_bytes()
    except FileNotFoundError as exc:
        raise InputError(f"{what} not found: {p}") from exc
    except IsADirectoryError as exc:
        raise InputError(f"{what} {p} is a folder, not a file") from exc
    except OSError as exc:
        raise InputError(f"cannot read {what} {p}: {describe_os_error(exc)}") from exc


def read_user_text(path: str | os.PathLike[str], what: str = "file") -> str:
    """:func:`read_user_bytes` decoded as UTF-8 (anything else is an :class:`InputError`)."""
    data = read_user_bytes(path, what)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"{what} {path} is not UTF-8 text") from exc


def file_sha256(path: str | os.PathLike[str], chunk: int = 1 << 22) -> str:
    """``sha256:<hex>`` of a file's bytes (provenance in reports)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return "sha256:" + digest.hexdigest()


def read_json(path: str | os.PathLike[str], what: str = "JSON file") -> Any:
    """Read a JSON file; missing or malformed files become one-line :class:`InputError`s."""
    p = Path(path)
    text = read_user_text(p, what)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"{what} {p} is not valid JSON (line {exc.lineno}: {exc.msg})") from exc


def read_yaml(path: str | os.PathLike[str], what: str = "YAML file") -> Any:
    """Parse a YAML file safely: plain data only (``CSafeLoader``, the C parser when PyYAML has
    it, else ``SafeLoader``). Tags such as ``!!python/object`` are refused, never constructed;
    every problem (missing, a folder, not UTF-8, malformed) is a one-line :class:`InputError`."""
    import yaml

    p = Path(path)
    text = read_user_text(p, what)
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        return yaml.load(text, Loader=loader)  # a safe loader: plain data only
    except yaml.constructor.ConstructorError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        problem = str(getattr(exc, "problem", "") or "")
        if "constructor for the tag" in problem:
            tag = problem.split("tag", 1)[1].strip().strip("'")
            raise InputError(
                f"{p}: YAML tag {tag!r} is not allowed{where}; only plain data is read "
                "(no Python objects)"
            ) from exc
        raise InputError(f"{p}: malformed YAML{where} ({problem or 'unsupported value'})") from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise InputError(f"{p}: malformed YAML{where}") from exc
    except (ValueError, TypeError, OverflowError, RecursionError) as exc:
        # Explicit scalar tags with bad values (``!!float nope``, ``!!int x``) fail here.
        raise InputError(f"{p}: malformed YAML ({type(exc).__name__}: {exc})") from exc


#: The files a reader takes from a folder given as an input (a store, an SAE).
_FOLDER_INPUTS = ("manifest.json", "metadata.csv", "config.json", "*.npy", "*.safetensors")


def refuse_overwriting(
    outputs: dict[str, str | os.PathLike[str] | None],
    inputs: list[str | os.PathLike[str] | None],
) -> None:
    """Before any work: no two outputs name the same file (the last would replace the
    first, often the JSON, the source of truth) and no output is one of the run's input files
    (``--json labels.csv`` replaced the labels). ``outputs`` maps option names to paths; an
    input folder stands for the files readers take from it."""
    seen: dict[Path, str] = {}
    for name, path in outputs.items():
        if path is None:
            continue
        key = Path(path).resolve()
        if key in seen:
            raise InputError(f"{seen[key]} and {name} both name {path}; give each its own file")
        seen[key] = name
    for source in inputs:
        if source is None:
            continue
        src = Path(source)
        files = [src] if src.is_file() else []
        if src.is_dir():
            files = [f for pattern in _FOLDER_INPUTS for f in src.glob(pattern)]
        for f in files:
            name = seen.get(f.resolve())
            if name is not None:
                raise InputError(
                    f"{name} {outputs[name]} is an input of this run ({f}); writing it would "
                    "replace it: give another path"
                )


_HOST = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]
_TEMP_NAME = re.compile(r"\.(?P<final>.+)\.(?P<host>[0-9a-f]{8})-(?P<pid>\d+)\.[^.]+\.tmp")


def temp_name_owner(name: str) -> tuple[str, str, int] | None:
    """``(final name, host, pid)`` of a temporary file written by :func:`atomic_path`."""
    match = _TEMP_NAME.fullmatch(name)
    if match is None:
        return None
    return match["final"], match["host"], int(match["pid"])


def _remove_orphans(final: Path) -> None:
    """Delete temporary files of ``final`` left by writers on this host that no longer run."""
    try:
        candidates = list(final.parent.glob(glob.escape(f".{final.name}.") + "*.tmp"))
    except OSError:
        return
    for candidate in candidates:
        owner = temp_name_owner(candidate.name)
        if owner is None or owner[0] != final.name or owner[1] != _HOST:
            continue
        if owner[2] == os.getpid() or _process_alive(owner[2]):
            continue
        with contextlib.suppress(OSError):
            candidate.unlink()


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return True  # exists but is not ours, or an impossible pid: leave the file alone
    return True


def _wrapped_os_error(exc: BaseException) -> int | None:
    """The errno inside a writer's own error type: safetensors reports a full disk as
    ``SafetensorError: Error while serializing: I/O error: ... (os error 28)``."""
    if type(exc).__name__ != "SafetensorError":
        return None
    match = re.search(r"os error (\d+)", str(exc))
    return int(match.group(1)) if match else None


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_file(path: Path) -> None:
    # Durability matters for checkpoints: rename must not reach disk before the data does.
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


CACHE_ENV = "MSAE_AUDIT_CACHE"


def cache_root() -> Path:
    """Where reusable artefacts live (the tiny CLIP, embedded CelebA):
    ``$MSAE_AUDIT_CACHE`` or ``~/.cache/msae-audit``."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "msae-audit"
