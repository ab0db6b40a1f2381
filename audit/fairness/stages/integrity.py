"""Stage 1: can the SAE and the classifier be trusted on this data?

Mean cosine(x, x̂) and the share of decisions that stay the same on x̂, on a seeded sample of
the audited rows. Below the gate's thresholds no concept is attributed (exit code 3): the SAE
does not explain what this classifier uses on this data. For the user's own model, also the
surrogate's agreement with the model (overall and in every group): below its thresholds the
surrogate's causal answers cannot stand for the model, and no concept is attributed either.
"""

from __future__ import annotations

import numpy as np
import torch

from audit.fairness.result import Integrity
from audit.fairness.stages.context import AuditContext


def check_integrity(ctx: AuditContext) -> Integrity:
    n, limit = ctx.space.rows.count, ctx.settings.integrity_rows
    rng = np.random.default_rng(np.random.SeedSequence([ctx.settings.seed, 3]))
    positions = np.arange(n) if n <= limit else np.sort(rng.choice(n, limit, replace=False))
    cos_sum, agree = 0.0, 0
    sae, clf = ctx.sae, ctx.classifier
    for lo in range(0, positions.size, ctx.space.chunk):
        x = ctx.space.x(positions[lo : lo + ctx.space.chunk])
        with torch.no_grad():
            x_hat = sae.decode(sae.encode(x))
            cos = torch.nn.functional.cosine_similarity(x, x_hat, dim=1)
            cos_sum += float(cos.double().sum())
            agree += int((clf.decisions(x) == clf.decisions(x_hat)).sum())
    rows = max(1, positions.size)
    surrogate = ctx.stand_in.record if ctx.stand_in is not None else None
    return Integrity(
        sae_cosine=cos_sum / rows,
        classifier_agreement=agree / rows,
        rows=int(positions.size),
        min_cosine=ctx.gate.min_cosine,
        min_agreement=ctx.gate.min_agreement,
        surrogate_agreement=surrogate.agreement if surrogate else None,
        surrogate_group_agreement=surrogate.worst_group_agreement if surrogate else None,
        surrogate_worst_group=surrogate.worst_group if surrogate else None,
        min_surrogate_agreement=ctx.gate.min_surrogate_agreement if surrogate else None,
        min_surrogate_group_agreement=(
            ctx.gate.min_surrogate_group_agreement if surrogate else None
        ),
    )


def refusal(integrity: Integrity) -> str:
    """Why no concept is attributed, in one sentence (the surrogate first: when it cannot stand
    for the model, nothing measured on it matters)."""
    sae = (
        f"mean cosine(x, x̂) = {integrity.sae_cosine:.3f} (min {integrity.min_cosine}), "
        f"classifier agreement on x̂ = {integrity.classifier_agreement:.3f} "
        f"(min {integrity.min_agreement})"
    )
    if integrity.surrogate_passed:
        return (
            f"integrity check failed: {sae}; the SAE does not explain what this classifier uses "
            "on this data, so no concept is attributed"
        )
    also = "" if integrity.sae_passed else f"; also {sae}"
    return (
        f"integrity check failed: {surrogate_shortfall(integrity)}{also}; the surrogate's causal "
        "answers cannot stand for the model, so no concept is attributed (the model's group "
        "metrics and concept-sliced errors are its own and still reported)"
    )


def surrogate_shortfall(integrity: Integrity) -> str:
    """How the surrogate's agreement falls short of the gate's thresholds."""
    overall, group = integrity.surrogate_agreement or 0.0, integrity.surrogate_group_agreement
    low_overall = overall < (integrity.min_surrogate_agreement or 0.0)
    if low_overall:
        return (
            f"the surrogate decides like the model on {overall:.1%} of the audited rows "
            f"(min {integrity.min_surrogate_agreement:.0%}): the CLIP embeddings do not carry "
            "what the model decides on"
        )
    return (
        f"the surrogate decides like the model on only {group or 0.0:.1%} of group "
        f"'{integrity.surrogate_worst_group}' (min {integrity.min_surrogate_group_agreement:.0%}; "
        f"{overall:.1%} overall)"
    )


def base_margins(ctx: AuditContext) -> np.ndarray:
    """The classifier's margins on the audited rows (the scan computes them otherwise)."""
    out = np.empty(ctx.space.rows.count)
    for lo, block in ctx.space.rows.chunks(ctx.space.chunk):
        with torch.no_grad():
            out[lo : lo + len(block)] = ctx.classifier.margin(ctx.space.tensor(block)).cpu().numpy()
    return out
