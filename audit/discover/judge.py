"""Judging a discover result against a gate: the checks that make sense without a labelled
attribute, and the verdict (the audit's rules and exit codes).

* ``flagged_concepts`` — the number of flagged concepts (the check a CI gate wants);
* ``accuracy`` — overall;
* ``worst_group_accuracy`` — the lowest accuracy of any tested concept's groups (the target's
  own concepts excluded);
* ``accuracy_gap``, ``equalized_odds_difference``, ``demographic_parity_difference`` need one
  labelled attribute: they are skipped with that reason (run ``msae-audit audit``).
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np

from audit.discover.result import DiscoverResult
from audit.fairness.checks import evaluate_checks, verdict_of
from audit.fairness.config import GateConfig
from audit.fairness.groups import group_report
from audit.fairness.result import Group, GroupMetrics
from audit.fairness.stages.context import AuditContext
from audit.fairness.stages.integrity import base_margins

if TYPE_CHECKING:
    from audit.discover.run import Measured

#: Checks that need a single labelled attribute.
ATTRIBUTE_CHECKS = (
    "accuracy_gap",
    "equalized_odds_difference",
    "demographic_parity_difference",
    "attribute_direction_delta_wga",
)
NEEDS_ATTRIBUTE = "needs one labelled attribute: run `msae-audit audit --spurious COLUMN`"


def class_groups(ctx: AuditContext, decisions: np.ndarray) -> tuple[tuple[Group, ...], float]:
    """Accuracy per target class (with Wilson intervals), and overall."""
    metrics = group_report(ctx.cells, decisions)
    named = tuple(
        replace(g, name=f"{ctx.cells.target_name}={g.target}", attribute="all")
        for g in metrics.groups
    )
    return named, float(metrics.accuracy or 0.0)


def judged(
    result: DiscoverResult, ctx: AuditContext, measured: Measured | None, gate: GateConfig
) -> DiscoverResult:
    """``result`` with its class metrics, checks and verdict."""
    decisions = measured.decisions if measured else ctx.decisions(base_margins(ctx))
    classes, accuracy = class_groups(ctx, decisions)
    groups = [g for c in result.concepts if c.tested and not c.target_concept for g in c.groups]
    worst = min(groups, key=lambda g: (g.accuracy, g.name)) if groups else None
    flagged = sum(1 for c in result.concepts if c.flagged)
    metrics = GroupMetrics(
        groups=classes, empty_groups=(), attribute_groups=(), accuracy=accuracy,
        worst_group=worst.name if worst else "",
        worst_group_accuracy=worst.accuracy if worst else None,
        accuracy_gap=None, equalized_odds_difference=None, demographic_parity_difference=None,
    )  # fmt: skip
    checks = evaluate_checks(
        metrics, flagged if result.concepts_computed else None, result.integrity, gate
    )
    checks = tuple(
        replace(c, reason=NEEDS_ATTRIBUTE) if c.name in ATTRIBUTE_CHECKS else c for c in checks
    )
    verdict, code = verdict_of(checks)
    return replace(
        result, classes=classes, accuracy=accuracy,
        worst_group=worst.name if worst else None,
        worst_group_accuracy=worst.accuracy if worst else None,
        flagged_concepts=flagged, checks=checks, verdict=verdict, exit_code=code,
    )  # fmt: skip
