"""The demo's two audits of its probe: ``msae-audit audit`` with the spurious column and a
gate, and ``msae-audit discover`` with that column dropped. Each writes its reports under the
demo's output folder and returns the summary the demo prints."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from audit.demo import DemoContext, Progress


# The gate the demo audits against: the shortcut should fail it (the point of the demo), and
# the report says which concept did it. Same thresholds as examples/gate.yaml.
DEMO_GATE = {
    "gates": {
        "worst_group_accuracy": {"min": 0.80},
        "accuracy_gap": {"max": 0.10},
        "flagged_concepts": {"max": 0},
    },
    "concepts": {"min_dwga": 0.02, "max_q": 0.05, "allowlist": []},
    "bootstrap": {"samples": 1000, "seed": 0},
    "min_group_size": 100,
}


def audit_step(ctx: DemoContext, progress: Progress | None = None) -> dict[str, Any]:
    """Audit the probe on the test split with the demo SAE and bank; write ``audit.json``,
    ``audit.html`` and ``audit.xml`` under ``ctx.out`` (the JSON records the planted concept).
    The gate is expected to fail: that is the shortcut being caught."""
    from audit.demo import TARGET_SHAPES, _demo_fields
    from audit.fairness.gate import parse_gate
    from audit.report import audit_files

    demo_fields = _demo_fields(ctx)
    outcome = audit_files(
        ctx.store,
        sae=ctx.sae,
        bank=ctx.bank,
        classifier=ctx.head,
        target=ctx.target_column,
        spurious=ctx.spurious_column,
        out_dir=ctx.out,
        stem="audit",
        gate=parse_gate(DEMO_GATE, where="the demo gate"),
        extra={"demo": demo_fields},
        seed=ctx.settings.seed,
        split="test",
        # The shortcut hurts the circles that are *not* red (the probe reads "no red" as
        # "square"), where a zero ablation of "red" changes nothing; setting the latent to its
        # mean removes the cue in both directions.
        ablation="mean",
        class_names=(
            f"{ctx.target_column}=1:{TARGET_SHAPES[0]}",
            f"{ctx.target_column}=0:{TARGET_SHAPES[1]}",
            f"{ctx.spurious_column}=1:{ctx.planted_concept}",
            f"{ctx.spurious_column}=0:not {ctx.planted_concept}",
        ),
        device=ctx.device,
        progress=progress,
    )
    ctx.audit_result = outcome.audit
    result = outcome.result
    concepts = result.get("concepts", [])
    planted = [c for c in concepts if c.get("name") == ctx.planted_concept]
    audit_summary = {
        "verdict": result["verdict"],
        "exit_code": outcome.exit_code,
        "worst_group_accuracy": result.get("worst_group_accuracy"),
        "top_concept": concepts[0].get("name") if concepts else None,
        "planted_concept_rank": planted[0]["rank"] if planted else None,
        "planted_concept_flagged": bool(planted and planted[0].get("flagged")),
        "planted_concept_delta_wga": planted[0].get("delta_wga") if planted else None,
        # the attribute's own direction removed, no SAE: what the planted concept is measured against
        "attribute_direction_delta_wga": (result.get("attribute_direction") or {}).get("delta_wga"),
        "reports": {k: str(v) for k, v in outcome.paths.items()},
    }
    return audit_summary


def discover_step(ctx: DemoContext, progress: Progress | None = None) -> dict[str, Any]:
    """``msae-audit discover`` on the same probe and split with the spurious column dropped
    from the labels: the shortcut must be found with no one naming it."""
    from audit.demo import _demo_fields
    from audit.discover import DiscoverSettings
    from audit.fairness import AuditSettings
    from audit.report.discover import discover_files
    from audit.store import open_store

    metadata = open_store(ctx.store).metadata
    assert metadata is not None
    labels = metadata.drop(columns=[ctx.spurious_column])
    base = AuditSettings(ctx.target_column, "", seed=ctx.settings.seed, split="test",
                         ablation="mean", device=ctx.device)  # fmt: skip
    outcome = discover_files(
        ctx.store, sae=ctx.sae, bank=ctx.bank, classifier=ctx.head, target=ctx.target_column,
        labels=labels, out_dir=ctx.out, stem="discover", settings=DiscoverSettings(base),
        extra={"demo": _demo_fields(ctx)}, progress=progress,
    )  # fmt: skip
    concepts = outcome.result.concepts
    planted = [c for c in concepts if c.name == ctx.planted_concept]
    return {
        "top_concept": concepts[0].name if concepts else None,
        "flagged": [c.name for c in concepts if c.flagged],
        "planted_concept_rank": planted[0].rank if planted else None,
        "planted_concept_flagged": bool(planted and planted[0].flagged),
        "planted_concept_delta_wga": planted[0].delta_wga if planted else None,
        "reports": {f"discover_{k}": str(v) for k, v in outcome.paths.items()},
    }
