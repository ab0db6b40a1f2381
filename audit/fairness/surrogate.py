"""A surrogate of the user's own model on CLIP embeddings, for concept attribution.

An image model or a predictions file says nothing about how its decisions would change if a
concept were removed from an image. The audit therefore attributes on a **surrogate**: a
logistic regression on the CLIP embeddings of the same images, fit to the *model's decisions*
(not to the true labels) with the library's probe fitter
(:func:`audit.fairness.classifiers.fit_probe`), so it is a linear head like a probe and every
edit of a latent has a closed-form effect on it.

* With a **train split** the surrogate is fit on the train rows and judged on the audited rows,
  which it never saw.
* Without one it is **cross-fitted** on the audited rows: they are split into ``K`` folds
  stratified by the model's decision; head ``k`` is fit on the other folds and predicts fold
  ``k``, so no row is predicted by a head that saw it. ``fold[i]`` says which head belongs to
  audited row ``i``. The agreement is these held-out predictions'; concept attribution runs on
  one more head fit on every audited row (:attr:`Surrogate.head`, whose agreement on them is
  ``attributed_agreement``) — the cross-fit estimates how well that procedure generalises.

**Agreement** — the fraction of audited rows where the surrogate's decision equals the model's,
overall and per group (target × attribute cell) — says how far the surrogate's causal answers
can stand for the model: an attribution is causal for the surrogate, and only as good as this
agreement for the model.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from audit.errors import InputError
from audit.fairness.classifiers import LinearHead, fit_probe
from audit.fairness.groups import Cells, group_report
from audit.fairness.records import SurrogateRecord
from audit.fairness.rounding import meets_minimum

MODEL = "logistic regression on the CLIP embeddings, fit to the model's decisions"

DEFAULT_FOLDS = 5
MIN_AGREEMENT = 0.9  # overall
MIN_GROUP_AGREEMENT = 0.8  # in every group


@dataclass(frozen=True)
class Surrogate:
    head: LinearHead  # what concept attribution runs on
    heads: tuple[LinearHead, ...]  # one (train split) or K (cross-fitted)
    fold: np.ndarray  # [n_audit] the head that predicts each audited row
    method: str  # "train split" | "cross-fit"
    fit_rows: int
    decisions: np.ndarray  # [n_audit] the surrogate's decisions on the audited rows
    agreement: float
    agreement_per_group: dict[str, float]
    group_sizes: dict[str, int]
    fit_agreement: float  # on the rows it was fit on (in-sample)
    c: float
    attributed_agreement: float  # ``head`` on the audited rows
    worst_group_accuracy: float | None  # ``head``'s own, on the audited rows

    def margin(self, x: Tensor, positions: np.ndarray) -> Tensor:
        """Margins of audited rows ``positions`` (indices into the audited rows) from their
        embeddings ``x [len(positions), d]``, each by its own head."""
        fold = torch.as_tensor(self.fold[positions], device=x.device)
        out = torch.empty(x.shape[0], dtype=x.dtype, device=x.device)
        for k, head in enumerate(self.heads):
            mask = fold == k
            if bool(mask.any()):
                out[mask] = head.to(x.device).margin(x[mask])
        return out

    def weights(self) -> tuple[Tensor, Tensor]:
        """``(W [K, d], b [K])``: head ``fold[i]``'s weight and bias act on audited row ``i``."""
        return (
            torch.stack([h.weight for h in self.heads]),
            torch.tensor([h.bias for h in self.heads]),
        )

    def record(
        self, min_overall: float = MIN_AGREEMENT, min_group: float = MIN_GROUP_AGREEMENT
    ) -> SurrogateRecord:
        """The surrogate block of the audit JSON, judged against the thresholds."""
        worst = min(self.agreement_per_group, key=lambda g: (self.agreement_per_group[g], g))
        return SurrogateRecord(
            model=MODEL,
            method=self.method,  # type: ignore[arg-type]
            folds=len(self.heads) if self.method == "cross-fit" else None,
            fit_rows=self.fit_rows,
            c=self.c,
            agreement=self.agreement,
            agreement_per_group=self.agreement_per_group,
            group_sizes=self.group_sizes,
            worst_group=worst,
            worst_group_agreement=self.agreement_per_group[worst],
            fit_agreement=self.fit_agreement,
            attributed_agreement=self.attributed_agreement,
            worst_group_accuracy=self.worst_group_accuracy,
            min_agreement=min_overall,
            min_group_agreement=min_group,
            passed=agreement_problem(self, min_overall, min_group) is None,
        )


def fit_surrogate(
    x_audit: np.ndarray,
    decisions_audit: np.ndarray,
    cells: Cells,
    x_train: np.ndarray | None = None,
    decisions_train: np.ndarray | None = None,
    *,
    folds: int = DEFAULT_FOLDS,
    input: str = "raw",
    c: float = 1.0,
    seed: int = 0,
) -> Surrogate:
    """Fit the surrogate on the train rows when given, else cross-fit it on the audited rows;
    ``cells`` are the audited rows' groups."""
    decisions_audit = np.asarray(decisions_audit).astype(np.int8)
    if len(x_audit) != decisions_audit.size or cells.y.size != decisions_audit.size:
        raise InputError("the audited embeddings, decisions and groups differ in length")
    if (x_train is None) != (decisions_train is None):
        raise InputError("the surrogate's train rows need both embeddings and decisions")
    if x_train is not None and decisions_train is not None:
        train_decisions = np.asarray(decisions_train).astype(np.int8)
        _check_fit_set(train_decisions, 2, "train-split rows")
        head = fit_probe(x_train, train_decisions, input, seed, c)
        heads: tuple[LinearHead, ...] = (head,)
        fold = np.zeros(decisions_audit.size, dtype=np.int64)
        fit_agree = _agreement(_decide(head, x_train), train_decisions)
        method, fit_rows = "train split", int(train_decisions.size)
    else:
        heads, fold, fit_agree = _cross_fit(x_audit, decisions_audit, folds, input, c, seed)
        head = fit_probe(x_audit, decisions_audit, input, seed, c)
        method, fit_rows = "cross-fit", int(decisions_audit.size)
    predicted = np.empty(decisions_audit.size, dtype=np.int8)
    for k, fold_head in enumerate(heads):
        rows = np.nonzero(fold == k)[0]
        predicted[rows] = _decide(fold_head, x_audit[rows])
    per_group, sizes = _per_group(predicted == decisions_audit, cells)
    attributed = predicted if method == "train split" else _decide(head, x_audit)
    return Surrogate(
        head=head,
        heads=heads,
        fold=fold,
        method=method,
        fit_rows=fit_rows,
        decisions=predicted,
        agreement=_agreement(predicted, decisions_audit),
        agreement_per_group=per_group,
        group_sizes=sizes,
        fit_agreement=fit_agree,
        c=c,
        attributed_agreement=_agreement(attributed, decisions_audit),
        worst_group_accuracy=group_report(cells, attributed).worst_group_accuracy,
    )


def agreement_problem(
    surrogate: Surrogate,
    min_overall: float = MIN_AGREEMENT,
    min_group: float = MIN_GROUP_AGREEMENT,
) -> str | None:
    """Why the surrogate cannot stand for the model (None when it can): its agreement with the
    model is below ``min_overall``, or below ``min_group`` in some group."""
    if not meets_minimum(surrogate.agreement, min_overall):
        return (
            f"the surrogate agrees with the model on {surrogate.agreement:.1%} of the audited "
            f"rows (< {min_overall:.0%}): CLIP embeddings do not carry what the model decides on"
        )
    low = {
        g: a for g, a in surrogate.agreement_per_group.items() if not meets_minimum(a, min_group)
    }
    if low:
        group, value = min(low.items(), key=lambda item: item[1])
        return (
            f"the surrogate agrees with the model on only {value:.1%} of group {group} "
            f"(< {min_group:.0%}; {len(low)} group(s) below)"
        )
    return None


def _cross_fit(
    x: np.ndarray, decisions: np.ndarray, folds: int, input: str, c: float, seed: int
) -> tuple[tuple[LinearHead, ...], np.ndarray, float]:
    from sklearn.model_selection import StratifiedKFold

    if folds < 2:
        raise InputError(f"cross-fitting needs at least 2 folds, got {folds}")
    _check_fit_set(decisions, folds, "audited rows")
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    fold = np.empty(decisions.size, dtype=np.int64)
    heads = []
    in_sample = []
    for k, (fit, held_out) in enumerate(splitter.split(np.zeros(decisions.size), decisions)):
        head = fit_probe(x[fit], decisions[fit], input, seed, c)
        heads.append(head)
        fold[held_out] = k
        in_sample.append(_agreement(_decide(head, x[fit]), decisions[fit]))
    return tuple(heads), fold, float(np.mean(in_sample))


def _check_fit_set(decisions: np.ndarray, minimum: int, where: str) -> None:
    counts = np.bincount(decisions, minlength=2)
    if counts.min() < minimum:
        cls = int(counts.argmin())
        raise InputError(
            f"the model predicts class {cls} for only {int(counts[cls])} of the {where}: too few "
            f"to fit a surrogate (at least {minimum} are needed)"
        )


def _decide(head: LinearHead, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        margins = head.margin(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)))
    return (margins > 0).numpy().astype(np.int8)


def _agreement(a: np.ndarray, b: np.ndarray) -> float:
    return float((a == b).mean()) if a.size else 0.0


def _per_group(agree: np.ndarray, cells: Cells) -> tuple[dict[str, float], dict[str, int]]:
    n = np.bincount(cells.cell, minlength=cells.n_cells)
    k = np.bincount(cells.cell, weights=agree.astype(np.float64), minlength=cells.n_cells)
    names = [cells.cell_name(c) for c in range(cells.n_cells)]
    present = [c for c in range(cells.n_cells) if n[c] > 0]
    return (
        {names[c]: float(k[c] / n[c]) for c in present},
        {names[c]: int(n[c]) for c in present},
    )
