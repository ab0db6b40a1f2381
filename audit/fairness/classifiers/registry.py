"""Which file format is which classifier kind: a small registry of loaders.

Adding a kind: a module with its :class:`~audit.fairness.classifiers.base.Classifier` subclass
and a loader, one :func:`register` call below, and its bad inputs in ``tests/test_bad_inputs.py``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from audit.errors import InputError
from audit.fairness.classifiers.base import Classifier
from audit.fairness.config import CLASSIFIER_INPUTS


@dataclass(frozen=True)
class ClassifierFormat:
    name: str  # how errors name it
    suffixes: tuple[str, ...]
    load: Callable[[Path, int, str], Classifier]  # (path, embedding dim, input) -> classifier


_FORMATS: list[ClassifierFormat] = []


def register(fmt: ClassifierFormat) -> None:
    _FORMATS.append(fmt)


def check_input(input: str) -> str:
    if input not in CLASSIFIER_INPUTS:
        raise InputError(f"--classifier-input must be raw or l2, got {input!r}")
    return input


def load_classifier(path: str | os.PathLike[str], dim: int, input: str = "raw") -> Classifier:
    """The classifier in a file, by its suffix (a linear head or a TorchScript module)."""
    input = check_input(input)
    p = Path(path)
    if not p.exists():
        raise InputError(f"classifier not found: {p}")
    for fmt in _FORMATS:
        if p.suffix.lower() in fmt.suffixes:
            return fmt.load(p, dim, input)
    known = " or ".join(f"a {f.name} ({', '.join(f.suffixes)})" for f in _FORMATS)
    raise InputError(f"{p}: unknown classifier format; use 'probe', {known}")


def _register_builtin() -> None:
    from audit.fairness.classifiers import linear, torchscript

    register(ClassifierFormat("linear head", linear.SUFFIXES, linear.load_linear_head))
    register(
        ClassifierFormat("TorchScript file", torchscript.SUFFIXES, torchscript.load_torchscript)
    )


_register_builtin()
