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
    inputs: tuple[str, ...] = ("raw", "l2")  # the --classifier-input values it is read with


_FORMATS: list[ClassifierFormat] = []


def register(fmt: ClassifierFormat) -> None:
    _FORMATS.append(fmt)


def check_input(input: str, allowed: tuple[str, ...] = CLASSIFIER_INPUTS) -> str:
    if input not in allowed:
        raise InputError(f"--classifier-input must be {', '.join(allowed)}; got {input!r}")
    return input


def _article(name: str) -> str:
    return "an" if name[:1].lower() in "aeiou" else "a"


def _formats(formats: list[ClassifierFormat]) -> str:
    return " or ".join(f"{_article(f.name)} {f.name} ({', '.join(f.suffixes)})" for f in formats)


def load_classifier(path: str | os.PathLike[str], dim: int, input: str = "raw") -> Classifier:
    """The classifier in a file, by its suffix and ``input``: a linear head or a TorchScript
    module on embeddings (raw, l2), an image model (image) or a predictions file (.csv)."""
    input = check_input(input)
    p = Path(path)
    if not p.exists():
        raise InputError(f"classifier not found: {p}")
    suffix = p.suffix.lower()
    matches = [f for f in _FORMATS if suffix in f.suffixes]
    for fmt in matches:
        if input in fmt.inputs:
            return fmt.load(p, dim, input)
    if matches:
        fmt = matches[0]
        wanted = [f for f in _FORMATS if input in f.inputs]
        # Say which --classifier-input the file needs: a .pt2 given without `image` is the
        # usual slip, and the list of what `raw` takes alone does not say how to fix it.
        raise InputError(
            f"{p}: {_article(fmt.name)} {fmt.name} cannot be read with --classifier-input "
            f"{input}; it needs --classifier-input {' or '.join(fmt.inputs)} ({input} takes "
            f"{_formats(wanted)})"
        )
    raise InputError(f"{p}: unknown classifier format; use 'probe', {_formats(_FORMATS)}")


def _register_builtin() -> None:
    from audit.fairness.classifiers import image, linear, predictions, torchscript

    register(ClassifierFormat("linear head", linear.SUFFIXES, linear.load_linear_head))
    register(
        ClassifierFormat("TorchScript file", torchscript.SUFFIXES, torchscript.load_torchscript)
    )
    register(
        ClassifierFormat("image model", image.SUFFIXES, image.load_image_classifier, ("image",))
    )
    predictions_file = ClassifierFormat(
        "predictions file", predictions.SUFFIXES, predictions.load_predictions_classifier, ("raw",)
    )
    register(predictions_file)


_register_builtin()
