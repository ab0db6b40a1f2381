"""Stage 4b: the bank's image-validated names checked again on the audited images
(:mod:`audit.concepts.namecheck`): a name that does not hold there is reported, not flagged.
``discover`` runs the same check on its concepts."""

from __future__ import annotations

from collections.abc import Sequence

from audit.concepts.activity import ConceptActivity
from audit.concepts.bank import ImageScores
from audit.concepts.namecheck import NameCheck, check_name, word_scores
from audit.fairness.result import NameEvidence
from audit.fairness.stages.context import AuditContext

Key = tuple[int, ...]  # a concept's latents


def name_check_stage(
    ctx: AuditContext,
    concepts: Sequence[tuple[Key, ImageScores | None]],
    activity: ConceptActivity,
) -> dict[Key, NameCheck]:
    """Per concept (its latents and the image evidence of its name) whose word the bank
    keeps, its name's test on the audited rows; ``activity`` holds each concept's summed
    activation there and where it is active."""
    checks = ctx.bank.word_checks or {}
    todo = [(key, image) for key, image in concepts if image is not None and image.word in checks]
    if not todo:
        return {}
    column_of = {word: i for i, word in enumerate(sorted({image.word for _, image in todo}))}
    blocks = (block for _, block in ctx.space.rows.chunks(ctx.space.chunk))
    scores = word_scores(blocks, [checks[w] for w in column_of])
    out = {}
    for key, image in todo:
        column = column_of[image.word]
        i = activity.index(key)
        summed = activity.activation[:, i]
        active = summed > activity.thresholds[i]
        found = check_name(summed, scores[:, column], checks[image.word], image, active)
        if found is not None:
            out[key] = found
    return out


def name_evidence(image: ImageScores | None, check: NameCheck | None) -> NameEvidence | None:
    """The evidence a report shows for a name: the bank's, and its check on the audited rows."""
    if image is None:
        return None
    return NameEvidence(
        image.word, image.polarity, image.selectivity, image.auc, image.auc_threshold,  # type: ignore[arg-type]
        audited_auc=None if check is None else check.auc,
        audited_auc_upper=None if check is None else check.auc_upper,
        audited_share=None if check is None else check.share,
        audited_share_upper=None if check is None else check.share_upper,
        audited_labelled=None if check is None else check.labelled,
        holds=None if check is None else check.holds,
    )  # fmt: skip
