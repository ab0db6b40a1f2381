"""The result of ``msae-audit discover`` as frozen, typed objects: what its JSON holds.

One writer and one reader (:mod:`audit.discover.serialize`) and the JSON Schema
(``docs/schemas/discover.schema.json``, :mod:`audit.discover.schema`) come from these classes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from audit.fairness.records import ClassifierRecord, SurrogateRecord
from audit.fairness.result import BeyondEffect, Check, Group, Integrity, Interval, NameEvidence
from audit.typedjson import doc

Verdict = Literal["pass", "fail", "error", "ungated", "inconclusive"]


@dataclass(frozen=True)
class ConceptGroupAccuracy:
    """One target class × (concept active or not): a concept-defined group."""

    name: str = doc("'<target>=<value>, <concept>=active|inactive'")
    target: str = doc("the target value")
    active: bool = doc("whether the concept is active in this group")
    n: int = doc("audited rows in the group", minimum=0)
    correct: int = doc(
        "rows the classifier gets right (your own model: its own decisions)", minimum=0
    )
    accuracy: float = doc("correct / n")
    ci: Interval = doc("95 % Wilson score interval of the accuracy")
    accuracy_after: float = doc(
        "accuracy after the concept is removed (the edit; your own model: the surrogate's)"
    )
    surrogate_accuracy: float | None = doc(
        "your own model: the surrogate's accuracy before the edit (what accuracy_after is "
        "compared with)",
        default=None,
        omit_none=True,
    )
    surrogate_agreement: float | None = doc(
        "your own model: share of the group's rows where the surrogate decides like the model "
        "(held out, as surrogate.agreement)",
        default=None,
        omit_none=True,
    )


@dataclass(frozen=True)
class DiscoveredConcept:
    """One validated concept: the groups its activity defines, and what removing it does."""

    rank: int = doc("1 = largest ΔWGA", minimum=1)
    name: str = doc("the concept's validated name")
    latents: tuple[int, ...] = doc("its latents (edited together)")
    threshold: float = doc("summed activation above which the concept is active")
    active_rate: float = doc("share of audited rows where it is active")
    groups: tuple[ConceptGroupAccuracy, ...] = doc("target × active groups with rows")
    worst_group: str = doc("the group with the lowest accuracy")
    worst_group_accuracy: float = doc(
        "its accuracy (WGA over the concept's groups; your own model: from its own decisions)"
    )
    wga_after: float = doc("WGA after removing the concept (your own model: the surrogate's)")
    delta_wga: float = doc(
        "wga_after − the WGA before the edit of the classifier the edit runs on: "
        "worst_group_accuracy, or surrogate_worst_group_accuracy for your own model"
    )
    ci: Interval = doc("paired, stratified bootstrap 95 % interval of delta_wga")
    delta_accuracy_overall: float = doc("accuracy change over all audited rows")
    flip_rate: float = doc("share of audited rows whose decision the removal flips")
    tested: bool = doc("every group has at least min_rows rows (else p = 1, never flagged)")
    exact: bool = doc("delta_wga is exact (closed form or decode-and-rerun), not screened")
    target_auc: float = doc("ROC AUC of its activation for the target, max(AUC, 1 − AUC)")
    target_concept: bool = doc("target_auc ≥ max_target_auc: the target's own concept, not flagged")
    p: float = doc("relocation-null p-value (1 when no null was drawn)")
    q: float = doc("Benjamini–Hochberg q-value over every validated concept")
    null_draws: int = doc("null draws made (0: none)", minimum=0)
    null_band: Interval | None = doc("central 95 % of the null's ΔWGA")
    allowlisted: bool = doc("the gate's allowlist names it")
    flagged: bool = doc(
        "ΔWGA ≥ min_dwga, CI above 0, q ≤ max_q, not allowlisted, and its name not refuted on "
        "the audited images (evidence.holds is not false)"
    )
    beyond: BeyondEffect | None = doc(
        "its effect beyond stronger concepts that meet the flag rule (only for such concepts)",
        omit_none=True,
    )
    recheck: str | None = doc("the `msae-audit audit` command that re-checks it as a gate")
    recheck_gate: str | None = doc(
        "the gate file its re-check uses: the run's gate with every other concept allowlisted, "
        "so it fails while this concept is flagged",
        default=None,
        omit_none=True,
    )
    surrogate_worst_group_accuracy: float | None = doc(
        "your own model: the surrogate's WGA over the concept's groups before the edit (the "
        "baseline of delta_wga)",
        default=None,
        omit_none=True,
    )
    evidence: NameEvidence | None = doc(
        "the image evidence behind the name (banks named against probe images), with its check "
        "on the audited images when the bank keeps its words",
        default=None,
        omit_none=True,
    )


@dataclass(frozen=True)
class SliceExample:
    """One audited row shown as an example of a concept-defined group."""

    row: int = doc("row of the embedding store", minimum=0)
    group: str = doc("its group")
    activation: float = doc("the concept's summed activation")
    margin: float = doc(
        "margin of the classifier the edits run on (your own model: the surrogate's)"
    )
    correct: bool = doc("whether the classifier's own decision is right")
    id: str | None = doc("the metadata id", omit_none=True)
    path: str | None = doc("the metadata path (an image)", omit_none=True)


@dataclass(frozen=True)
class ConceptExamples:
    """Example rows of each of a concept's groups (errors first, most active first)."""

    name: str = doc("the concept")
    groups: Mapping[str, tuple[SliceExample, ...]] = doc("examples per group name")


@dataclass(frozen=True)
class DiscoverFamily:
    """The tested family and the statistics' settings."""

    size: int = doc("validated concepts (the Benjamini–Hochberg family)", minimum=0)
    tested: int = doc("of them, with every group of at least min_rows rows", minimum=0)
    with_null: int = doc("of them, given a Monte-Carlo p-value", minimum=0)
    exact: int = doc("of them, with an exact ΔWGA", minimum=0)
    null_draws_max: int = doc("the most null draws per concept", minimum=0)
    min_attainable_p: float = doc("1 / (null_draws_max + 1)")
    null: str = doc("the null hypothesis, in words")
    null_rule: str = doc("which concepts get a null, and why the others keep valid p-values")
    ablation: str = doc("the edit: zero or mean")
    bootstrap_samples: int = doc("bootstrap resamples", minimum=1)
    bootstrap_seed: int = doc("the bootstrap's seed")


@dataclass(frozen=True)
class DiscoverData:
    """What was examined."""

    rows_total: int = doc("rows in the store", minimum=0)
    rows_audited: int = doc("rows audited", minimum=0)
    split: str = doc("which rows, in words")
    target: str = doc("the target column")
    positive_class: str = doc("the target value predicted by a positive margin")
    classifier_kind: str = doc("how edits are evaluated: linear_raw, linear_l2 or rerun")
    attribution: Literal["classifier", "surrogate"] = doc(
        "edits are evaluated on the classifier itself, or on a surrogate fit to its decisions"
    )
    activity: str = doc("when a concept is active, in words")
    activity_rows: int = doc("rows the thresholds were chosen over", minimum=0)


@dataclass(frozen=True)
class DiscoverSettingsRecord:
    """Every setting that changed the numbers."""

    target: str = doc("the target column")
    ablation: str = doc("zero or mean")
    split: str = doc("auto, all, train, valid or test")
    classifier_input: str = doc("raw or l2")
    threshold: float | None = doc("the activity threshold for every concept (null: Otsu's)")
    min_rows: int = doc("smallest group a concept is tested with", minimum=0)
    max_target_auc: float = doc("target_auc from which a concept is the target's own")
    min_dwga: float = doc("the smallest ΔWGA that is flagged")
    max_q: float = doc("the largest q-value that is flagged")
    allowlist: tuple[str, ...] = doc("concept names never flagged")
    bootstrap_samples: int = doc("bootstrap resamples", minimum=1)
    bootstrap_seed: int = doc("the bootstrap's seed")
    null_rows: int = doc("most concepts given a Monte-Carlo p-value", minimum=0)
    null_min_draws: int = doc("fewest null draws per concept", minimum=0)
    null_atoms: int = doc("quantile atoms of the relocation null", minimum=0)
    shortlist: int = doc("concepts evaluated by decode-and-rerun", minimum=0)


@dataclass(frozen=True)
class HeadScore:
    """A head's accuracy and WGA on one split, before and after the export."""

    split: str = doc("train, valid, test or all")
    rows: int = doc("rows scored", minimum=0)
    accuracy_before: float = doc("accuracy of the classifier")
    accuracy_after: float = doc("accuracy of the exported head")
    delta_accuracy_ci: Interval = doc("paired bootstrap 95 % interval of the accuracy change")
    worst_group_before: str = doc("the worst of the removed concepts' groups, before")
    worst_group_accuracy_before: float = doc("its accuracy (WGA), before")
    worst_group_after: str = doc("the worst of those groups for the exported head")
    worst_group_accuracy_after: float = doc("its accuracy (WGA), after")
    delta_wga_ci: Interval = doc("paired, stratified bootstrap 95 % interval of the WGA change")


@dataclass(frozen=True)
class ExportedHead:
    """A linear head without the flagged concepts' directions (``--export-head``)."""

    path: str = doc("where it was written (.npz: weight [1, d], bias [1])")
    removed: tuple[str, ...] = doc("the concepts whose decoder directions were projected out")
    directions: int = doc("decoder directions removed", minimum=0)
    refit: bool = doc("re-fit on the train split with those directions removed")
    method: str = doc("how the head was made, in words")
    scores: tuple[HeadScore, ...] = doc("before and after, per split")


@dataclass(frozen=True)
class DiscoverResult:
    """The result of ``msae-audit discover`` (its JSON)."""

    schema: str = doc("'msae-audit/discover'")
    version: int = doc("version of this format")
    verdict: Verdict = doc("pass, fail, error (integrity), ungated or inconclusive")
    exit_code: int = doc("the command's exit code: 0 pass, 1 fail, 3 error")
    tool: Mapping[str, str] = doc("versions of msae-audit and its main dependencies")
    seed: int = doc("the run's seed")
    inputs: Mapping[str, Mapping[str, Any]] = doc("provenance of every input")
    settings: DiscoverSettingsRecord = doc("every setting that changed the numbers")
    gate: Mapping[str, Any] = doc("the gate file as read")
    data: DiscoverData = doc("what was examined")
    notes: tuple[str, ...] = doc("remarks about how the run was made")
    integrity: Integrity = doc("the integrity check")
    classes: tuple[Group, ...] = doc("accuracy per target class")
    accuracy: float = doc("overall accuracy")
    worst_group: str | None = doc(
        "the lowest-accuracy group of any tested concept (the target's own excluded)"
    )
    worst_group_accuracy: float | None = doc("its accuracy")
    concepts_computed: bool = doc("false when the integrity check refused attribution")
    concepts: tuple[DiscoveredConcept, ...] = doc("every validated concept, by rank")
    family: DiscoverFamily | None = doc("the tested family (null when not computed)")
    examples: tuple[ConceptExamples, ...] = doc("example rows of the top concepts' groups")
    flagged_concepts: int = doc("number of flagged concepts", minimum=0)
    checks: tuple[Check, ...] = doc("every check, gated or informational, and integrity")
    gate_file: str | None = doc(
        "the gate written beside the JSON: the run's thresholds with flagged_concepts max 0 "
        "(fails while any concept is flagged; each concept's re-check uses its own, "
        "concepts[].recheck_gate; null: not written)"
    )
    export: ExportedHead | None = doc("the exported head, when asked", omit_none=True)
    error: str | None = doc("why attribution was refused", omit_none=True)
    extra: Mapping[str, Any] = doc("other top-level fields (e.g. 'demo')", rest=True)
    classifier: ClassifierRecord | None = doc(
        "the classifier audited: its kind, whose decisions the metrics are, what attribution "
        "ran on (absent only in files written before it was added)",
        default=None,
        omit_none=True,
    )
    surrogate: SurrogateRecord | None = doc(
        "your own model (image, predictions): the surrogate the edits ran on, and its "
        "agreement with the model overall and per target class (per concept group: "
        "concepts[].groups[].surrogate_agreement)",
        default=None,
        omit_none=True,
    )
