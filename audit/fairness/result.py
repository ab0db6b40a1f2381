"""The audit result as frozen, typed objects: what the JSON holds, field by field.

The stages of the audit build these once; :mod:`audit.fairness.serialize` writes them as the
audit JSON and reads them back (``msae-audit check``); every report renders them. The field
descriptions are the JSON Schema's (``docs/schemas/audit.schema.json`` is generated from here).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, Literal

from audit.fairness.config import DOSE_ALPHAS, AuditSettings, GateConfig
from audit.fairness.records import ClassifierRecord, NameEvidence, SlicedErrors, SurrogateRecord
from audit.fairness.rounding import meets_minimum
from audit.typedjson import doc

Interval = tuple[float, float]
Verdict = Literal["pass", "fail", "error", "ungated", "inconclusive"]
Status = Literal["pass", "fail", "skipped", "info"]


@dataclass(frozen=True)
class Group:
    """One target × attribute cell with at least one audited row."""

    name: str = doc("'<target>=<value>, <attribute>=<value>'")
    cell: int = doc("cell index: target index × number of attribute values + attribute index")
    target: str = doc("the target value of the cell")
    attribute: str = doc("the attribute value of the cell")
    n: int = doc("audited rows in the cell", minimum=0)
    correct: int = doc("rows the classifier gets right", minimum=0)
    accuracy: float = doc("correct / n")
    ci: Interval = doc("95 % Wilson score interval of the accuracy")
    selection_rate: float = doc("share of the cell predicted positive")
    tpr: float | None = doc("true-positive rate (positive cells only, else null)")
    fpr: float | None = doc("false-positive rate (negative cells only, else null)")


@dataclass(frozen=True)
class AttributeGroup:
    """One value of the spurious attribute, across both target classes."""

    name: str = doc("'<attribute>=<value>'")
    value: str = doc("the attribute value")
    n: int = doc("audited rows with this value", minimum=0)
    tpr: float | None = doc("P(predicted positive | positive, this value)")
    fpr: float | None = doc("P(predicted positive | negative, this value)")
    selection_rate: float | None = doc("P(predicted positive | this value)")


@dataclass(frozen=True)
class GroupMetrics:
    """The group part of the audit: cells, attribute values and the headline metrics."""

    groups: tuple[Group, ...]
    empty_groups: tuple[str, ...]
    attribute_groups: tuple[AttributeGroup, ...]
    accuracy: float | None
    worst_group: str
    worst_group_accuracy: float | None
    accuracy_gap: float | None
    equalized_odds_difference: float | None
    demographic_parity_difference: float | None


@dataclass(frozen=True)
class Check:
    """One check of the gate (or an informational one)."""

    name: str = doc("the metric checked")
    value: float | None = doc("its value (null: not computed)")
    threshold: float | Interval | None = doc("the bound, or [min, max] when both are set")
    min: float | None = doc("lower bound")
    max: float | None = doc("upper bound")
    gated: bool = doc("whether the gate file bounds it (only gated checks can fail)")
    status: Status = doc("pass, fail, skipped (cannot be measured) or info (not gated)")
    reason: str = doc("why, in words")


@dataclass(frozen=True)
class Integrity:
    """Whether the SAE and the classifier can be trusted on this data."""

    sae_cosine: float | None = doc("mean cosine(x, x̂) on the sampled rows")
    classifier_agreement: float | None = doc("share of rows where the decision on x̂ equals x's")
    rows: int = doc("rows sampled", minimum=0)
    min_cosine: float = doc("the gate's threshold for sae_cosine")
    min_agreement: float = doc("the gate's threshold for classifier_agreement")
    surrogate_agreement: float | None = doc(
        "your own model: share of audited rows where its surrogate decides like it (held out)",
        omit_none=True,
    )
    surrogate_group_agreement: float | None = doc(
        "the lowest agreement of any group", omit_none=True
    )
    surrogate_worst_group: str | None = doc("that group", omit_none=True)
    min_surrogate_agreement: float | None = doc(
        "the gate's threshold for surrogate_agreement", omit_none=True
    )
    min_surrogate_group_agreement: float | None = doc(
        "the gate's threshold for every group's agreement", omit_none=True
    )

    @property
    def cosine_passed(self) -> bool:
        """The SAE reconstructs this data (mean cosine, as written, at least the minimum)."""
        return meets_minimum(self.sae_cosine, self.min_cosine)

    @property
    def sae_passed(self) -> bool:
        """The SAE explains what the classifier (or its surrogate) uses on this data."""
        return self.cosine_passed and meets_minimum(self.classifier_agreement, self.min_agreement)

    @property
    def surrogate_passed(self) -> bool:
        """No surrogate, or one that stands for the model overall and in every group."""
        if self.surrogate_agreement is None:
            return True
        return meets_minimum(
            self.surrogate_agreement, self.min_surrogate_agreement or 0.0
        ) and meets_minimum(
            self.surrogate_group_agreement or 0.0, self.min_surrogate_group_agreement or 0.0
        )

    @property
    def passed(self) -> bool:
        return self.sae_passed and self.surrogate_passed


@dataclass(frozen=True)
class BeyondEffect:
    """A concept's effect with the edits of the stronger concepts that meet the flag rule
    applied first (its reported p is the larger of this p and its p alone)."""

    given: tuple[str, ...] = doc("the concepts removed first")
    delta_wga: float = doc("WGA after removing them and this concept − after removing them")
    wga_after: float = doc("WGA after removing them and this concept")
    p: float = doc("relocation-null p-value of this effect, drawn with them removed")


@dataclass(frozen=True)
class ConceptFinding:
    """One reported concept: a validated name (all its latents ablated together) or an
    unnamed latent listed for discovery."""

    rank: int = doc("1 = largest ΔWGA", minimum=1)
    latent: int = doc("the first latent of the row", minimum=0)
    latents: tuple[int, ...] = doc("every latent ablated together")
    name: str | None = doc("the validated name (null for unnamed, untested latents)")
    label: str = doc("how reports show the concept")
    tested: bool = doc("in the Benjamini–Hochberg family (a validated name)")
    closest: str = doc("the closest vocabulary word")
    score: float = doc("cosine of the decoder direction with that word")
    delta_wga: float = doc("worst-group accuracy after the ablation − before")
    wga_after: float = doc("worst-group accuracy after the ablation")
    delta_accuracy: Mapping[str, float] = doc("accuracy change per group")
    flip_rate_by_group: Mapping[str, float] = doc("share of each group whose decision flips")
    flip_rate: float = doc("share of all rows whose decision flips")
    delta_accuracy_overall: float = doc("accuracy change over all rows")
    collateral_damage: float | None = doc(
        "accuracy lost on rows without the spurious attribute (null: non-binary attribute)"
    )
    ci: Interval = doc("paired, stratified bootstrap 95 % interval of delta_wga")
    p: float | None = doc("relocation-null p-value (tested rows; 1 when not drawn)")
    q: float | None = doc("Benjamini–Hochberg q-value over the tested family")
    null_draws: int = doc("null draws made (0: none)", minimum=0)
    null_band: Interval | None = doc("central 95 % of the null's ΔWGA")
    mean_activation: Mapping[str, float] = doc("mean summed activation per group")
    activation_rate: Mapping[str, float] | None = doc("share of each group where it is active")
    exact: bool = doc("delta_wga is exact (closed form or decode-and-rerun)")
    allowlisted: bool = doc("the gate's allowlist names it")
    flagged: bool = doc(
        "ΔWGA ≥ min_dwga, CI above 0, q ≤ max_q, not allowlisted, and its name not refuted on "
        "the audited images (evidence.holds is not false)"
    )
    beyond: BeyondEffect | None = doc(
        "its effect beyond stronger concepts that meet the flag rule (only for such concepts)",
        omit_none=True,
    )
    evidence: NameEvidence | None = doc(
        "the image evidence behind the name (banks named against probe images)", omit_none=True
    )


@dataclass(frozen=True)
class Family:
    """The tested family and the statistics' settings."""

    size: int = doc("tested concepts (validated names)", minimum=0)
    with_null: int = doc("of them, given a Monte-Carlo p-value", minimum=0)
    null_draws_max: int = doc("the most null draws per concept", minimum=0)
    min_attainable_p: float = doc("1 / (null_draws_max + 1)")
    null: str = doc("the null hypothesis, in words")
    ablation: str = doc("zero or mean")
    bootstrap_samples: int = doc("bootstrap resamples", minimum=1)
    bootstrap_seed: int = doc("the bootstrap's seed")


@dataclass(frozen=True)
class DoseResponse:
    """Steering one concept, z := α·z: accuracy as α goes from 0 to 3."""

    label: str = doc("the concept's label")
    latents: tuple[int, ...] = doc("its latents")
    name: str | None = doc("its validated name")
    flagged: bool = doc("whether it is flagged")
    alphas: tuple[float, ...] = doc("the α values")
    worst_group_accuracy: tuple[float, ...] = doc("WGA at each α")
    accuracy: tuple[float, ...] = doc("overall accuracy at each α")
    accuracy_by_group: Mapping[str, tuple[float, ...]] = doc("each group's accuracy at each α")


@dataclass(frozen=True)
class ExampleRow:
    """One audited row shown as an example."""

    row: int = doc("row of the embedding store", minimum=0)
    group: str = doc("its group")
    activation: float = doc("the concept's summed activation")
    margin_before: float = doc("classifier margin before the ablation")
    margin_after: float = doc("classifier margin after the ablation")
    id: str | None = doc("the metadata id", omit_none=True)
    path: str | None = doc("the metadata path (an image)", omit_none=True)


@dataclass(frozen=True)
class Examples:
    """Example rows for one concept."""

    label: str = doc("the concept's label")
    latents: tuple[int, ...] = doc("its latents")
    top_activating: tuple[ExampleRow, ...] = doc("rows where it is most active")
    flipped: tuple[ExampleRow, ...] = doc("rows whose decision its ablation flips")
    attribute_share: Mapping[str, float] | None = doc(
        "share of the concept's most-activating rows (the top 2 %, at least 20) with each "
        "attribute value ('<attribute>=<value>'): a concept whose strongest rows nearly all "
        "carry one value rides on the attribute",
        default=None,
        omit_none=True,
    )


@dataclass(frozen=True)
class BootstrapSettings:
    """The bootstrap of the ΔWGA intervals."""

    samples: int = doc("resamples", minimum=1)
    seed: int = doc("its seed")


@dataclass(frozen=True)
class SettingsRecord:
    """Every setting that changed the numbers: the run's and the gate's."""

    target: str = doc("the target column")
    spurious: str = doc("the attribute that splits the groups")
    ablation: str = doc("zero or mean: the value an ablated latent is set to")
    split: str = doc("which rows were asked for: auto, all, train, valid or test")
    classifier_input: str = doc("raw or l2: what the classifier reads")
    min_dwga: float = doc("the smallest ΔWGA that is flagged")
    max_q: float = doc("the largest q-value that is flagged")
    allowlist: tuple[str, ...] = doc("concept names never flagged")
    min_group_size: int = doc("checks depending on a smaller group are skipped", minimum=0)
    bootstrap: BootstrapSettings = doc("the bootstrap")
    null_rows: int = doc("concepts given a Monte-Carlo p-value", minimum=0)
    null_min_draws: int = doc("fewest null draws per concept", minimum=0)
    null_atoms: int = doc("quantile atoms of the relocation null", minimum=0)
    shortlist: int = doc("concepts evaluated by decode-and-rerun", minimum=0)
    integrity_rows: int = doc("rows sampled by the integrity check", minimum=0)
    dose_alphas: tuple[float, ...] = doc("α values of the steering curves")

    @classmethod
    def of(cls, settings: AuditSettings, gate: GateConfig) -> SettingsRecord:
        return cls(
            settings.target, settings.spurious, settings.ablation, settings.split,
            settings.classifier_input, gate.min_dwga, gate.max_q, gate.allowlist,
            gate.min_group_size,
            BootstrapSettings(gate.bootstrap_samples, gate.bootstrap_seed_for(settings.seed)),
            settings.null_rows, settings.null_min_draws, settings.null_atoms, settings.shortlist,
            settings.integrity_rows, DOSE_ALPHAS,
        )  # fmt: skip


@dataclass(frozen=True)
class AuditData:
    """What was audited."""

    rows_total: int = doc("rows in the store", minimum=0)
    rows_audited: int = doc("rows audited", minimum=0)
    split: str = doc("which rows, in words")
    target: str = doc("the target column")
    spurious: str = doc("the attribute that splits the groups")
    positive_class: str = doc("the target value predicted by a positive margin")
    classifier_kind: str = doc("how edits are evaluated: linear_raw, linear_l2 or rerun")
    class_names: Mapping[str, str] | None = doc(
        "names the reports show for label values, 'COLUMN=VALUE' → name (--class-names); group "
        "names in this file stay COLUMN=VALUE",
        default=None,
        omit_none=True,
    )


@dataclass(frozen=True)
class AttributeDirection:
    """The attribute itself, without the SAE: the worst group's change when each embedding's
    component along the attribute's within-class mean differences is set to its mean (the
    directions estimated on the other half of the rows) and the classifier reruns. Concepts
    that carry the shortcut recover part of it; a large value and no flagged concept mean the
    bank names nothing that carries it."""

    directions: int = doc("directions removed: one per attribute value after the first", minimum=0)
    delta_wga: float = doc("WGA after − WGA before")
    ci: tuple[float, float] = doc("paired-bootstrap interval of delta_wga (the gate's samples)")
    wga_after: float = doc("WGA after the edit")
    delta_accuracy_overall: float = doc("accuracy after − before over the audited rows")
    method: str = doc("how the directions are estimated and removed")


@dataclass(frozen=True)
class AuditResult:
    """The result of one audit (the audit JSON)."""

    schema: str = doc("'msae-audit/audit'")
    version: int = doc("version of this format")
    verdict: Verdict = doc(
        "pass (every gated check that could be judged passed), fail (a gated check failed), "
        "error (integrity check failed), ungated (no check gated, e.g. no gate file: nothing "
        "was judged) or inconclusive (every gated check was skipped)"
    )
    exit_code: int = doc(
        "the command's exit code: 0 pass or ungated, 1 fail or inconclusive (0 when the gate "
        "allows skipped checks), 3 error"
    )
    tool: Mapping[str, str] = doc("versions of msae-audit and its main dependencies")
    seed: int = doc("the run's seed")
    inputs: Mapping[str, Mapping[str, Any]] = doc(
        "provenance of every input: paths, sha256 hashes, shapes, the SAE's fingerprint"
    )
    settings: SettingsRecord = doc("every setting that changed the numbers")
    gate: Mapping[str, Any] = doc("the gate file as read (path, hash, bounds)")
    data: AuditData = doc("what was audited")
    notes: tuple[str, ...] = doc("remarks about how the audit was run")
    integrity: Integrity = doc("the integrity check")
    groups: tuple[Group, ...] = doc("target × attribute cells with rows")
    empty_groups: tuple[str, ...] = doc("cells without rows (their checks are skipped)")
    attribute_groups: tuple[AttributeGroup, ...] = doc("per attribute value")
    accuracy: float | None = doc("overall accuracy")
    worst_group: str = doc("the cell with the lowest accuracy")
    worst_group_accuracy: float | None = doc("WGA: the lowest cell accuracy")
    accuracy_gap: float | None = doc("highest − lowest cell accuracy")
    equalized_odds_difference: float | None = doc(
        "max of the TPR and FPR gaps across the attribute's values"
    )
    demographic_parity_difference: float | None = doc(
        "largest − smallest selection rate across the attribute's values (informational)"
    )
    concepts_computed: bool = doc("false when the integrity check refused attribution")
    concepts: tuple[ConceptFinding, ...] = doc("concepts by rank")
    family: Family | None = doc("the tested family (null when not computed)")
    dose_response: tuple[DoseResponse, ...] = doc("steering curves of the top concepts")
    examples: tuple[Examples, ...] = doc("example rows of the top concepts")
    flagged_concepts: int = doc("number of flagged concepts", minimum=0)
    checks: tuple[Check, ...] = doc("every check, gated or informational, and integrity")
    classifier: ClassifierRecord | None = doc(
        "the classifier audited: its kind, whose decisions the metrics are, what attribution "
        "ran on (absent only in files written before it was added)",
        omit_none=True,
    )
    surrogate: SurrogateRecord | None = doc(
        "your own model (image, predictions): the surrogate concept attribution ran on",
        omit_none=True,
    )
    concept_errors: SlicedErrors | None = doc(
        "concept-sliced errors of the classifier's own decisions (associations, not causes; "
        "absent when the SAE failed its integrity check)",
        omit_none=True,
    )
    error: str | None = doc("why attribution was refused", omit_none=True)
    extra: Mapping[str, Any] = doc("other top-level fields (e.g. 'demo')", rest=True)
    skipped_checks: tuple[str, ...] = doc(
        "gated checks that were skipped (could not be judged): the verdict does not rest on them",
        default=(),
    )
    attribute_direction: AttributeDirection | None = doc(
        "how much the worst group gains when the attribute's direction is removed from the "
        "embeddings, without the SAE (absent when attribution was refused)",
        default=None,
        omit_none=True,
    )

    @property
    def metrics(self) -> GroupMetrics:
        return GroupMetrics(
            self.groups, self.empty_groups, self.attribute_groups, self.accuracy,
            self.worst_group, self.worst_group_accuracy, self.accuracy_gap,
            self.equalized_odds_difference, self.demographic_parity_difference,
        )  # fmt: skip

    def with_judgement(
        self,
        concepts: tuple[ConceptFinding, ...],
        checks: tuple[Check, ...],
        verdict: Verdict,
        exit_code: int,
        gate: Mapping[str, Any],
    ) -> AuditResult:
        flagged = sum(1 for c in concepts if c.flagged)
        skipped = tuple(c.name for c in checks if c.gated and c.status == "skipped")
        return replace(
            self, concepts=concepts, checks=checks, verdict=verdict, exit_code=exit_code,
            gate=gate, flagged_concepts=flagged, skipped_checks=skipped,
        )  # fmt: skip
