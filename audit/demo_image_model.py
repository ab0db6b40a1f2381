"""The demo's last step: auditing *your own* model, one that takes images.

A small CNN (:mod:`audit.data.cnn_world`) is trained briefly on the task world's train split,
where red leaks the label, exported to TorchScript (``cnn_image_model.pt``) and audited on the
images with ``--classifier-input image``: its own decisions give the group metrics, a surrogate
on the CLIP embeddings gives ΔWGA, and the concept-sliced errors describe the model itself.
Reports: ``audit-image-model.{json,html,xml}``. A few seconds of training and one audit.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

if TYPE_CHECKING:
    from audit.demo import DemoContext, Progress

STEM = "audit-image-model"
MODEL_FILE = "cnn_image_model.pt"


def train_demo_cnn(ctx: DemoContext) -> Path:
    """The biased CNN of :mod:`audit.data.cnn_world`, on the world's train split."""
    from audit.data.cnn_world import (
        CNNWorldSettings,
        export_torchscript,
        read_images,
        train_shape_cnn,
    )

    metadata = pd.read_csv(ctx.store / "metadata.csv")
    train = metadata[metadata["split"] == "train"]
    settings = CNNWorldSettings(seed=ctx.settings.seed)
    cnn = train_shape_cnn(
        read_images(train["path"].tolist()),
        train[ctx.target_column].to_numpy(),
        replace(settings.biased, seed=settings.seed),
    )
    return export_torchscript(cnn, ctx.out / MODEL_FILE)


def image_model_step(ctx: DemoContext, progress: Progress | None = None) -> dict[str, Any]:
    """Train and export the CNN, audit it on the test split's images; a summary for demo.json."""
    from audit.demo import _demo_fields
    from audit.demo_audits import DEMO_GATE
    from audit.fairness.gate import parse_gate
    from audit.report import audit_files

    model = train_demo_cnn(ctx)
    outcome = audit_files(
        ctx.store, sae=ctx.sae, bank=ctx.bank, classifier=model, target=ctx.target_column,
        spurious=ctx.spurious_column, out_dir=ctx.out, stem=STEM,
        gate=parse_gate(DEMO_GATE, where="the demo gate"), extra={"demo": _demo_fields(ctx)},
        seed=ctx.settings.seed, split="test", ablation="mean", classifier_input="image",
        workers=ctx.settings.workers, device=ctx.device, progress=progress,
    )  # fmt: skip
    result = outcome.audit
    named = [c for c in result.concepts if c.name]
    errors = result.concept_errors.concepts if result.concept_errors else ()
    surrogate = result.surrogate
    return {
        "model": str(model),
        "verdict": result.verdict,
        "exit_code": outcome.exit_code,
        "worst_group_accuracy": result.worst_group_accuracy,
        "surrogate_agreement": surrogate.agreement if surrogate else None,
        "surrogate_worst_group_agreement": surrogate.worst_group_agreement if surrogate else None,
        "top_concept": named[0].name if named else None,
        "top_concept_flagged": bool(named and named[0].flagged),
        "top_sliced_error": errors[0].name if errors else None,
        "reports": {k: str(v) for k, v in outcome.paths.items()},
    }
