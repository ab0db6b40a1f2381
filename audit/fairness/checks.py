"""Judging an audit against a gate: flagged concepts, the checks and the verdict.

A check without an entry in the gate is reported (status ``info``) but never fails the run; a
check that depends on a group smaller than ``min_group_size`` (or on an empty cell) is skipped,
never passed. A gate never says pass when it checked nothing:

========================  ================================================  =========
verdict                   when                                              exit code
========================  ================================================  =========
``error``                 the integrity check failed (no concept attributed)      3
``fail``                  a gated check failed                                     1
``ungated``               no check is gated (no gate file): nothing judged         0
``inconclusive``          every gated check was skipped                  1 (0 with
                                                                  ``allow_skipped``)
``pass``                  every gated check that could be judged passed            0
========================  ================================================  =========
"""

from __future__ import annotations

from dataclasses import replace

from audit.errors import EXIT_GATE_FAILED, EXIT_INTEGRITY, EXIT_OK
from audit.fairness.config import GateConfig
from audit.fairness.records import name_refuted
from audit.fairness.result import (
    AuditResult,
    Check,
    ConceptFinding,
    GroupMetrics,
    Integrity,
    Verdict,
)
from audit.fairness.rounding import meets_minimum, round_number, within_bounds

#: Checks a gate may name. Group-dependent checks are skipped when a group is too small.
GROUP_CHECKS = (
    "worst_group_accuracy",
    "accuracy_gap",
    "equalized_odds_difference",
    "demographic_parity_difference",
    "flagged_concepts",
    # ΔWGA of removing the attribute's own direction from the embeddings (no SAE involved)
    "attribute_direction_delta_wga",
)
DIRECTION_CHECK = "attribute_direction_delta_wga"
NOT_ATTRIBUTED = "not computed (integrity check failed)"
NOT_MEASURED = "not measured (an older result file, or no class has rows of two attribute values)"
CHECKS = (*GROUP_CHECKS, "accuracy")
#: Integrity checks: always enforced (exit code 3), thresholds from the gate's ``integrity:``.
INTEGRITY_CHECKS = {"sae_cosine": "min_cosine", "classifier_agreement": "min_agreement"}
#: The user's own model: its surrogate must decide like it, overall and in every group (exit 3).
SURROGATE_CHECK = "surrogate_agreement"
# Enforced whatever the gate says: the numbers mean nothing when one of these fails.
_ALWAYS_ENFORCED = {*INTEGRITY_CHECKS, SURROGATE_CHECK}


def as_published(value: float, significant: bool = False) -> float:
    """``value`` as the result files write it (6 decimals; p- and q-values 6 significant
    digits). Thresholds judge these numbers, so every flag and check agrees with the figures
    printed beside it, and ``msae-audit check`` on a saved file reproduces the run's flags and
    verdict (a ΔWGA of 0.0199997 is written 0.02; judged unrounded it missed ``min_dwga: 0.02``
    in the run but met it when re-checked)."""
    return round_number(value, significant)


def is_allowlisted(name: str | None, allowlist: tuple[str, ...]) -> bool:
    return bool(name) and name.strip().lower() in {a.strip().lower() for a in allowlist}


def meets_flag_rule(delta_wga: float, ci_low: float, q: float | None, gate: GateConfig) -> bool:
    """ΔWGA ≥ min_dwga, the interval above 0 and q ≤ max_q (the allowlist aside), on the
    numbers as published (:func:`as_published`)."""
    return (
        as_published(delta_wga) >= gate.min_dwga
        and as_published(ci_low) > 0
        and q is not None
        and as_published(q, significant=True) <= gate.max_q
    )


def flag_concepts(
    concepts: tuple[ConceptFinding, ...], gate: GateConfig
) -> tuple[ConceptFinding, ...]:
    """Set ``flagged`` / ``allowlisted``: a tested (validated-name) concept is flagged when
    ΔWGA ≥ min_dwga, its CI lower bound > 0, q ≤ max_q, it is not allowlisted and its name
    was not refuted on the audited images. Unnamed latents are never flagged."""
    out = []
    for c in concepts:
        allowed = c.tested and is_allowlisted(c.name, gate.allowlist)
        flagged = (
            c.tested
            and meets_flag_rule(c.delta_wga, c.ci[0], c.q, gate)
            and not allowed
            and not name_refuted(c.evidence)
        )
        out.append(replace(c, allowlisted=bool(allowed), flagged=bool(flagged)))
    return tuple(out)


def _metric_value(
    metrics: GroupMetrics, flagged: int | None, direction: float | None, name: str
) -> float | None:
    if name == "flagged_concepts":
        return flagged
    if name == DIRECTION_CHECK:
        return direction
    return getattr(metrics, name)


def _skip_reason(metrics: GroupMetrics, name: str, min_group_size: int) -> str | None:
    """Why a group-dependent check cannot be judged (None: it can)."""
    if name not in GROUP_CHECKS:
        return None
    if metrics.empty_groups:
        return f"group '{metrics.empty_groups[0]}' has no rows: cannot be measured"
    small = [g for g in metrics.groups if g.n < min_group_size]
    if small:
        worst = min(small, key=lambda g: g.n)
        return f"group '{worst.name}' has n={worst.n} < min_group_size={min_group_size}"
    return None


def _judge(
    name: str, value: float | None, bounds: dict[str, float], skip: str | None, attributed: bool
) -> Check:
    threshold = _threshold(bounds)
    head = (name, value, threshold, bounds.get("min"), bounds.get("max"), bool(bounds))
    if value is None:
        # Only the direction can be missing from an attributed result (an older file, or no
        # class with rows of two attribute values); anything else means attribution was refused.
        why = NOT_MEASURED if attributed and name == DIRECTION_CHECK else NOT_ATTRIBUTED
        return Check(*head, "skipped", why)
    if skip:
        return Check(*head, "skipped", skip)
    if not bounds:
        return Check(*head, "info", "no gate entry: never fails")
    ok = within_bounds(value, bounds.get("min"), bounds.get("max"))
    return Check(*head, "pass" if ok else "fail", _reason(value, bounds, ok))


def evaluate_checks(
    metrics: GroupMetrics,
    flagged: int | None,
    integrity: Integrity | None,
    gate: GateConfig,
    direction: float | None = None,
) -> tuple[Check, ...]:
    """Every known check, gated or informational, then the integrity checks. ``flagged`` is
    None when concepts were not attributed; ``direction`` (the attribute direction's ΔWGA)
    None when it was not measured."""
    checks = [
        _judge(
            name,
            _metric_value(metrics, flagged, direction, name),
            gate.gates.get(name, {}),
            _skip_reason(metrics, name, gate.min_group_size),
            attributed=flagged is not None,
        )
        for name in CHECKS
    ]
    for name, key in INTEGRITY_CHECKS.items():
        threshold = getattr(gate, key)
        value = None if integrity is None else getattr(integrity, name)
        ok = meets_minimum(value, threshold)
        reason = _reason(value, {"min": threshold}, ok)
        if not ok:
            reason += " (integrity: concept attributions refused)"
        checks.append(
            Check(name, value, threshold, threshold, None, True, "pass" if ok else "fail", reason)
        )
    if integrity is not None and integrity.surrogate_agreement is not None:
        checks.append(_surrogate_check(integrity, gate))
    return tuple(checks)


def _surrogate_check(integrity: Integrity, gate: GateConfig) -> Check:
    """``surrogate_agreement``: overall ≥ min_surrogate_agreement and every group ≥
    min_surrogate_group_agreement (the value and threshold shown are the overall ones)."""
    overall, group = integrity.surrogate_agreement, integrity.surrogate_group_agreement
    low, low_group = gate.min_surrogate_agreement, gate.min_surrogate_group_agreement
    ok_overall = meets_minimum(overall, low)
    ok_group = meets_minimum(group, low_group)
    ok = ok_overall and ok_group
    reason = (
        f"{_reason(overall, {'min': low}, ok_overall)} overall; worst group "
        f"'{integrity.surrogate_worst_group}' {_reason(group, {'min': low_group}, ok_group)}"
    )
    if not ok:
        reason += " (integrity: concept attributions refused)"
    return Check(SURROGATE_CHECK, overall, low, low, None, True, "pass" if ok else "fail", reason)


def _threshold(bounds: dict[str, float]) -> float | tuple[float, float] | None:
    if "min" in bounds and "max" in bounds:
        return (bounds["min"], bounds["max"])
    return bounds.get("min", bounds.get("max"))


def _reason(value: float | None, bounds: dict[str, float], ok: bool) -> str:
    if value is None:
        return "not measured"
    parts = []
    if "min" in bounds:
        parts.append(f"≥ {bounds['min']:g}")
    if "max" in bounds:
        parts.append(f"≤ {bounds['max']:g}")
    return f"{value:.4g} {'meets' if ok else 'violates'} {' and '.join(parts)}"


def gated_checks(checks: tuple[Check, ...]) -> list[Check]:
    """The checks the gate file bounds (the integrity checks, always enforced, aside)."""
    return [c for c in checks if c.gated and c.name not in _ALWAYS_ENFORCED]


def verdict_of(checks: tuple[Check, ...], allow_skipped: bool = False) -> tuple[Verdict, int]:
    """The verdict and exit code (see the module doc): ``error`` (3) on integrity failure
    (the SAE, the classifier, or a surrogate that does not copy the user's model),
    ``fail`` (1) if a gated check failed, ``ungated`` (0) when nothing is gated,
    ``inconclusive`` (1, or 0 with ``allow_skipped``) when every gated check was skipped,
    else ``pass`` (0)."""
    if any(c.name in _ALWAYS_ENFORCED and c.status == "fail" for c in checks):
        return "error", EXIT_INTEGRITY
    if any(c.status == "fail" for c in checks):
        return "fail", EXIT_GATE_FAILED
    gated = gated_checks(checks)
    if not gated:
        return "ungated", EXIT_OK
    if all(c.status == "skipped" for c in gated):
        return "inconclusive", EXIT_OK if allow_skipped else EXIT_GATE_FAILED
    return "pass", EXIT_OK


def judge(
    result: AuditResult, concepts: tuple[ConceptFinding, ...], gate: GateConfig
) -> AuditResult:
    """``result`` with ``concepts`` flagged under ``gate`` and its checks and verdict."""
    concepts = flag_concepts(concepts, gate)
    flagged = sum(1 for c in concepts if c.flagged) if result.concepts_computed else None
    direction = result.attribute_direction
    checks = evaluate_checks(
        result.metrics, flagged, result.integrity, gate,
        direction.delta_wga if direction is not None else None,
    )  # fmt: skip
    verdict, code = verdict_of(checks, gate.allow_skipped)
    return result.with_judgement(concepts, checks, verdict, code, gate.describe())


def rejudge(result: AuditResult, gate: GateConfig) -> tuple[AuditResult, list[str]]:
    """Re-apply a gate to saved results (``msae-audit check``). Returns the re-judged result and
    notes about settings that cannot be changed after the fact."""
    notes = []
    stored = result.settings.bootstrap
    if stored.samples != gate.bootstrap_samples or (
        gate.bootstrap_seed is not None and stored.seed != gate.bootstrap_seed
    ):
        notes.append(
            "bootstrap settings differ from the saved run; its confidence intervals are kept "
            "(rerun the audit to recompute them)"
        )
    out = judge(result, result.concepts, gate)
    if not result.concepts_computed:
        # The integrity check refused attribution when the audit ran; a gate cannot undo that,
        # so the integrity checks and thresholds stay the ones that decided the run (re-judged
        # under a laxer gate they would read "pass" beside a verdict of "error").
        saved = {c.name: c for c in result.checks if c.name in _ALWAYS_ENFORCED}
        checks = tuple(saved.get(c.name, c) for c in out.checks)
        record = {**out.gate, "integrity": result.gate.get("integrity", out.gate["integrity"])}
        out = replace(out, checks=checks, gate=record, verdict="error", exit_code=EXIT_INTEGRITY)
        notes.append(
            "the saved audit failed its integrity check (its thresholds are kept); rerun the "
            "audit to attribute concepts"
        )
    return out, notes
