"""The ``msae-audit audit`` command that re-checks a discovered concept as a gate, and the gate
file it uses: the run's gate thresholds (the user's, or the defaults) with
``flagged_concepts: {max: 0}``, whatever the user's own gate gates.

The command pins the concept's threshold (``--spurious 'concept:NAME>T'``), the ablation, the
split, the seed and how the classifier is read (``--predictions``, ``--classifier-input``,
``--image-size``, ``--image-batch-size``, ``--workers``), so the audit sees the same groups, the
same decisions and the same edit that discover measured. ``--device`` is left to the machine
that re-checks.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence
from pathlib import PurePath
from typing import Any

from audit.fairness.attributes import concept_spec
from audit.fairness.config import AuditSettings, GateConfig


def recheck_gate(gate: GateConfig, others: Sequence[str] = ()) -> dict[str, Any]:
    """A gate that fails while a concept is flagged, with discover's flag thresholds. With
    ``others`` (every other concept name of the family) allowlisted, it fails while the one
    concept left is flagged, and only then: the allowlist changes flags, not the statistics
    (the audit's null, BH and beyond tests ignore it), so that concept's flag is unchanged."""
    bootstrap: dict[str, Any] = {"samples": gate.bootstrap_samples}
    if gate.bootstrap_seed is not None:
        bootstrap["seed"] = gate.bootstrap_seed
    allowlist = list(gate.allowlist)
    known = {a.strip().lower() for a in allowlist}
    allowlist += sorted({o for o in others if o.strip().lower() not in known})
    return {
        "gates": {"flagged_concepts": {"max": 0}},
        "concepts": {
            "min_dwga": gate.min_dwga,
            "max_q": gate.max_q,
            "allowlist": allowlist,
        },
        "bootstrap": bootstrap,
        "min_group_size": gate.min_group_size,
        "integrity": {
            "min_cosine": gate.min_cosine,
            "min_agreement": gate.min_agreement,
            "min_surrogate_agreement": gate.min_surrogate_agreement,
            "min_surrogate_group_agreement": gate.min_surrogate_group_agreement,
        },
    }


def concept_gate_path(gate_path: str, rank: int) -> str:
    """The re-check gate of the concept ranked ``rank``: ``<stem>-gate-<rank>.yaml`` beside
    the run's ``<stem>-gate.yaml``."""
    path = PurePath(gate_path)
    return str(path.with_name(f"{path.stem}-{rank}{path.suffix}"))


def concept_gate(gate: GateConfig, name: str, names: Sequence[str]) -> dict[str, Any]:
    """The re-check gate of concept ``name``: every other of ``names`` allowlisted."""
    own = name.strip().lower()
    return recheck_gate(gate, [n for n in names if n.strip().lower() != own])


def recheck_command(
    inputs: Mapping[str, Mapping[str, Any]],
    settings: AuditSettings,
    name: str,
    threshold: float,
    gate_path: str | None,
) -> str:
    """``msae-audit audit …`` for one concept, from the recorded inputs and settings (an input
    without a recorded path, e.g. one passed in memory, appears as ``<EMBEDDINGS>``, …)."""

    def path(key: str) -> str:
        return str(inputs.get(key, {}).get("path") or f"<{key.upper()}>")

    args = ["msae-audit", "audit", "--embeddings", path("embeddings")]
    labels = inputs.get("labels", {}).get("path")
    if labels:
        args += ["--labels", str(labels)]
    args += [
        "--target", settings.target,
        "--spurious", concept_spec(name, threshold),
        "--sae", path("sae"),
        "--bank", path("bank"),
        *classifier_args(inputs.get("classifier", {}), path("classifier"), settings),
    ]  # fmt: skip
    args += ["--ablation", settings.ablation, "--split", settings.split]
    args += ["--seed", str(settings.seed)]
    if gate_path:
        args += ["--gate", gate_path]
    return " ".join(shlex.quote(a) for a in args)


def classifier_args(classifier: Mapping[str, Any], path: str, settings: AuditSettings) -> list[str]:
    """The options that name the classifier and how it is read: ``--predictions`` for a
    predictions file, ``--classifier`` otherwise, with ``--classifier-input`` and, for an image
    model, the image size (a model built for one size fails on others), its batch size and the
    loader's workers (when not the default: a GPU's memory may need a smaller batch, a machine
    0 workers)."""
    kind = classifier.get("kind")
    if kind == "predictions":
        return ["--predictions", path]
    args = ["--classifier", "probe" if kind == "probe" else path]
    if settings.classifier_input != "raw":
        args += ["--classifier-input", settings.classifier_input]
    if settings.classifier_input == "image":
        if settings.image_size is not None:
            args += ["--image-size", str(settings.image_size)]
        for option, field in (("--image-batch-size", "image_batch_size"), ("--workers", "workers")):
            value = getattr(settings, field)
            if value != AuditSettings.default(field):
                args += [option, str(value)]
    return args
