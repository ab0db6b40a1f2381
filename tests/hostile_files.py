"""Files that would run code if anything unpickled them: every loader must refuse them.

Each payload creates ``marker`` when executed, so a test can prove that nothing ran.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path


class _RunsCode:
    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):  # pickle calls os.system(f"touch {marker}") when loading
        return (os.system, (f"touch '{self.marker}'",))


def torch_pickle(path: Path, marker: Path, key: str = "model") -> Path:
    """A ``torch.save`` zip whose data.pkl calls ``os.system`` when unpickled."""
    import torch

    torch.save({key: _RunsCode(marker)}, path)
    return path


def typeerror_then_code_pickle(path: Path, marker: Path) -> Path:
    """A raw pickle that makes ``torch.load(weights_only=True)`` raise ``TypeError`` *before* the
    payload (a ``BUILD`` of an OrderedDict with a ``(None, {...})`` state, which the safe
    unpickler rejects with TypeError and plain pickle accepts), followed by ``os.system``.

    open_clip's ``load_state_dict`` retries ``torch.load`` without ``weights_only`` on
    ``TypeError``; on torch < 2.6 (or with ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1``) that retry
    runs the payload.
    """
    command = f"touch '{marker}'".encode()
    payload = (
        b"\x80\x02"  # PROTO 2
        b"ccollections\nOrderedDict\n)R"  # OrderedDict()
        b"N}X\x01\x00\x00\x00aK\x01s\x86"  # state (None, {"a": 1})
        b"b0"  # BUILD, POP
        b"cposix\nsystem\n"
        + b"X"
        + struct.pack("<I", len(command))
        + command
        + b"\x85R."  # system(command), STOP
    )
    path.write_bytes(payload)
    return path


def pickled_npy(path: Path, marker: Path) -> Path:
    """A ``.npy`` holding an object array (numpy pickles it)."""
    import numpy as np

    array = np.empty(1, dtype=object)
    array[0] = _RunsCode(marker)
    np.save(path, array, allow_pickle=True)
    return path


def pickled_npz(path: Path, marker: Path) -> Path:
    """A linear-head ``.npz`` whose weight is a pickled object array."""
    import numpy as np

    array = np.empty(1, dtype=object)
    array[0] = _RunsCode(marker)
    with open(path, "wb") as fh:
        np.savez(fh, weight=array, bias=np.zeros(1, dtype=np.float32))
    return path
