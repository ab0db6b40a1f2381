"""Parts of the audit result about the classifier itself: what it is (:class:`ClassifierRecord`),
the surrogate that stands in for it when it does not act on embeddings
(:class:`SurrogateRecord`), and where its own decisions err, by concept
(:class:`SlicedErrors`). :mod:`audit.fairness.result` holds them in the audit JSON.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from audit.typedjson import doc

Interval = tuple[float, float]
ClassifierKind = Literal["linear", "probe", "torchscript", "image", "predictions"]


@dataclass(frozen=True)
class ClassifierRecord:
    """The classifier audited: what it is, whose decisions the group metrics are and what
    concept attribution ran on."""

    kind: ClassifierKind = doc(
        "linear, probe or torchscript (a classifier on the embeddings), image (the user's model "
        "on pixels) or predictions (a file of the user's model's decisions)"
    )
    input: str = doc("what it reads: raw or l2 (embeddings), image (pixels) or predictions")
    decisions: str = doc("whose decisions the group metrics, WGA, gaps and the gate are")
    attribution: str = doc("what concept attribution (ΔWGA, null, BH) ran on")
    path: str | None = doc("the file", omit_none=True)
    sha256: str | None = doc("its hash", omit_none=True)
    format: str | None = doc("TorchScript, torch.export or CSV", omit_none=True)
    scores: str | None = doc(
        "how its outputs were read: logit, probability, two-class or label", omit_none=True
    )
    image_size: tuple[int, ...] | None = doc(
        "[H, W] the images were resized and centre-cropped to (absent: as they are)",
        omit_none=True,
    )
    rows_decided: int | None = doc(
        "store rows the model decided (the audited rows and the surrogate's train rows)",
        omit_none=True,
    )


@dataclass(frozen=True)
class SurrogateRecord:
    """The logistic regression on the CLIP embeddings, fit to the model's decisions, that
    concept attribution runs on; its agreement with the model says how far its causal answers
    stand for the model."""

    model: str = doc("what the surrogate is")
    method: Literal["train split", "cross-fit"] = doc(
        "fit on the train split and judged on the audited rows, or cross-fitted on the audited "
        "rows (each row predicted by a head fit on the other folds)"
    )
    folds: int | None = doc("folds of the cross-fit (null: train split)")
    fit_rows: int = doc("rows the surrogate was fit on", minimum=0)
    c: float = doc("inverse L2 penalty of the logistic regression")
    agreement: float = doc(
        "share of audited rows where the surrogate decides like the model (held out: the "
        "train-split head, or each row's cross-fitted head)"
    )
    agreement_per_group: Mapping[str, float] = doc("the same, per target × attribute cell")
    group_sizes: Mapping[str, int] = doc("audited rows per cell")
    worst_group: str = doc("the cell with the lowest agreement")
    worst_group_agreement: float = doc("its agreement")
    fit_agreement: float = doc("agreement on the rows it was fit on (in-sample)")
    attributed_agreement: float = doc(
        "agreement on the audited rows of the head concept attribution ran on (cross-fit: the "
        "head fit on every audited row)"
    )
    worst_group_accuracy: float | None = doc(
        "the surrogate's own worst-group accuracy: the baseline of ΔWGA"
    )
    min_agreement: float = doc("the gate's threshold for agreement")
    min_group_agreement: float = doc("the gate's threshold for every group's agreement")
    passed: bool = doc("both thresholds met (otherwise no concept is attributed)")


@dataclass(frozen=True)
class ErrorSlice:
    """One target class of one concept: the model's accuracy where the concept is active
    against where it is not."""

    target: str = doc("the target value of the class")
    n_active: int = doc("rows of the class where the concept is active", minimum=0)
    n_inactive: int = doc("rows of the class where it is not", minimum=0)
    accuracy_active: float | None = doc("accuracy where active (null: no rows)")
    accuracy_inactive: float | None = doc("accuracy where not active (null: no rows)")
    difference: float | None = doc("accuracy_active − accuracy_inactive")
    ci: Interval | None = doc("bootstrap 95 % interval of the difference (null: not tested)")
    p: float | None = doc("Fisher's exact test of equal accuracy (null: a side too small)")
    q: float | None = doc("Benjamini–Hochberg q-value over every tested (concept, class) pair")
    flagged: bool = doc("q ≤ max_q and |difference| ≥ min_gap")


@dataclass(frozen=True)
class NameEvidence:
    """What the probe images said about a concept's name when the bank was built."""

    word: str = doc("the vocabulary word the concept's activation follows")
    polarity: Literal["present", "absent"] = doc(
        "present: it fires when the word is in the image; absent: when it is not (reports say "
        "'absence of <word>')"
    )
    selectivity: float = doc("how far the word stands out from the vocabulary (robust z)")
    auc: float | None = doc("held-out AUC of the activation for the word's zero-shot labels")
    auc_threshold: float | None = doc("the AUC random latents reach (a name needs more)")
    audited_auc: float | None = doc(
        "the same AUC on the audited rows, labelled with the word's direction and threshold "
        "from the bank (null: too few rows with or without the label; absent: not checked)",
        default=None,
        omit_none=True,
    )
    audited_auc_upper: float | None = doc(
        "the upper end of audited_auc's 95 % interval (Hanley–McNeil standard error)",
        default=None,
        omit_none=True,
    )
    audited_labelled: int | None = doc(
        "audited rows whose zero-shot label shows the word (absent: not checked)",
        default=None,
        omit_none=True,
    )
    audited_share: float | None = doc(
        "of the audited rows where the concept is active, the share whose label shows the word "
        "(its absence, for 'no <word>'); a name needs at least 0.5",
        default=None,
        omit_none=True,
    )
    audited_share_upper: float | None = doc(
        "the upper end of audited_share's 95 % (Wilson) interval", default=None, omit_none=True
    )
    holds: bool | None = doc(
        "the name on the audited images: true when audited_auc ≥ auc_threshold and "
        "audited_share ≥ 0.5, false when audited_auc_upper < auc_threshold or "
        "audited_share_upper < 0.5 (the concept is then never flagged), null when undecided "
        "(too few labelled rows, or in between); absent: not checked",
        default=None,
        omit_none=True,
    )

    @property
    def refuted(self) -> bool:
        """The name failed its test on the audited images: the concept is never flagged."""
        return self.holds is False


def name_refuted(evidence: NameEvidence | None) -> bool:
    """A concept's name failed its test on the audited images (no evidence: it was not
    checked, so it did not fail): the one rule every flag (audit, discover, sliced errors)
    applies."""
    return evidence is not None and evidence.refuted


@dataclass(frozen=True)
class ConceptErrors:
    """A named concept's slices of the model's errors."""

    rank: int = doc("1 = first: flagged concepts first, then by |shift|", minimum=1)
    name: str = doc("the validated concept name")
    latents: tuple[int, ...] = doc("its latents")
    threshold: float = doc("summed activation above which it counts as active")
    active_rate: float = doc("share of the audited rows where it is active")
    shift: float | None = doc(
        "(difference in the positive class − difference in the negative class) / 2: how much "
        "more often the model decides positive where the concept is active"
    )
    shift_ci: Interval | None = doc("bootstrap 95 % interval of the shift")
    flagged: bool = doc("one of its slices is flagged (never when its name does not hold)")
    slices: tuple[ErrorSlice, ...] = doc("the positive class, then the negative class")
    evidence: NameEvidence | None = doc(
        "the image evidence behind its name, with its check on the audited images (a concept "
        "whose name does not hold there is never flagged)",
        default=None,
        omit_none=True,
    )


@dataclass(frozen=True)
class SlicedErrors:
    """Where the classifier's own decisions err, by named concept: associations, not causes."""

    relation: str = doc("what these numbers are: associations, not causes")
    decisions: str = doc("whose decisions are sliced")
    active: str = doc("when a concept counts as active")
    tested: int = doc("(concept, class) pairs in the Benjamini–Hochberg family", minimum=0)
    bootstrap_samples: int = doc("bootstrap resamples", minimum=1)
    seed: int = doc("seed of the bootstrap")
    min_rows: int = doc("fewest rows on each side of a tested slice", minimum=0)
    max_q: float = doc("largest q-value flagged")
    min_gap: float = doc("smallest |difference| flagged")
    concepts: tuple[ConceptErrors, ...] = doc("every validated concept, by rank")
