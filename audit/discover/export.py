"""``--export-head``: a linear head without the flagged concepts' decoder directions.

For a linear head or probe the head itself is edited; for your own model (an image model or a
predictions file) its surrogate — the logistic regression on the embeddings that attribution
ran on — is, and the export is a linear head on the embeddings that decides like the
surrogate without the concepts.

With ``U`` the flagged concepts' decoder directions in embedding space (``[k, d]``) and
``P = I − Uᵀ(UUᵀ)⁺U`` the projection onto their orthogonal complement:

* **projected** (default): ``w' = P w`` — the head can no longer read the concepts — and
  ``b' = b + (w − w')·m`` with ``m`` the mean of what the head reads (``x``, or ``x / ‖x‖`` for
  a head on L2-normalised embeddings) over the train rows where none of them is active, so the
  head's mean margin on rows without the concepts is unchanged;
* **re-fit** (``refit``): the audit's logistic-regression probe fit on ``P x̄`` of the train
  split (``x̄`` what the head reads), exported as ``w' = P w_fit``, which scores every row
  exactly as the fitted probe scores ``P x̄`` (its weights never see the removed directions).

For an L2 head the projection removes the directions from what the weights read, ``x / ‖x‖``;
the norm ``‖x‖`` still counts them, so the head is blind to their direction, not to their size.

Scored on every split of the labels (or all rows): accuracy and the worst of the groups target
× (any removed concept active), before and after, with paired bootstrap intervals of the changes
(:func:`audit.fairness.stats.bootstrap_delta_wga`).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from audit.concepts.activity import concept_activity
from audit.discover.result import DiscoverResult, ExportedHead, HeadScore
from audit.errors import InputError
from audit.fairness.classifiers import LinearHead, fit_probe, save_head
from audit.fairness.classifiers.own import OwnModel
from audit.fairness.stages.context import AuditContext
from audit.fairness.stats import bootstrap_delta_wga, pair_counts, percentile_interval
from audit.store import EmbeddingStore

SPLITS = ("train", "valid", "test")
#: Random stream of the export's bootstrap (the audit's: 1 bootstrap, 2 null).
EXPORT_STREAM = 5


def projector(directions: np.ndarray) -> np.ndarray:
    """``P = I − Uᵀ(UUᵀ)⁺U``: onto the orthogonal complement of the rows of ``directions``."""
    u = np.asarray(directions, dtype=np.float64)
    return np.eye(u.shape[1]) - u.T @ np.linalg.pinv(u @ u.T) @ u


def _rows_of(ctx: AuditContext) -> dict[str, np.ndarray]:
    labels = ctx.labels
    if "split" in labels.columns:
        split = labels["split"].astype(str).str.lower().to_numpy()
        found = {s: np.nonzero(split == s)[0] for s in SPLITS}
        if any(v.size for v in found.values()):
            return {s: v for s, v in found.items() if v.size}
    return {"all": np.arange(ctx.rows_total)}


def _train_rows(ctx: AuditContext, splits: dict[str, np.ndarray]) -> np.ndarray:
    if "train" in splits:
        return splits["train"]
    if ctx.selection.train is not None:
        return ctx.selection.train
    raise InputError("--refit needs train rows: a 'split' column with 'train' values")


def _target(ctx: AuditContext) -> np.ndarray:
    positive = ctx.cells.target_values[1]
    return (ctx.labels[ctx.settings.target].astype(str).to_numpy() == positive).astype(np.int8)


def export_head(
    ctx: AuditContext, store: EmbeddingStore, result: DiscoverResult, path: Path, refit: bool
) -> DiscoverResult:
    """``result`` with the exported head's record; writes the head to ``path``."""
    head, surrogate = _linear_head(ctx)
    flagged = [c for c in result.concepts if c.flagged]
    latents = sorted({j for c in flagged for j in c.latents})
    u = ctx.effect.u.detach().double().cpu().numpy()[latents] if latents else np.zeros((0, 1))
    embeddings = np.asarray(store.read(0, store.count), dtype=np.float32)
    activity = concept_activity(
        ctx.sae, embeddings, [c.latents for c in flagged], device=ctx.space.device,
        thresholds=
        [c.threshold for c in flagged],
    )  # fmt: skip
    any_active = activity.active.any(1) if flagged else np.zeros(len(embeddings), dtype=bool)
    splits, y = _rows_of(ctx), _target(ctx)
    p = projector(u) if latents else np.eye(embeddings.shape[1])
    if refit:
        train = _train_rows(ctx, splits)
        new = refit_head(head, embeddings[train], y[train], p, ctx.settings.seed)
    else:
        base = splits.get("train", np.arange(len(embeddings)))
        quiet = base[~any_active[base]] if (~any_active[base]).any() else base
        new = projected_head(head, embeddings[quiet], p)
    save_head(new, path)
    before, after = _decisions(head, embeddings), _decisions(new, embeddings)
    seed = ctx.gate.bootstrap_seed_for(ctx.settings.seed)
    scores = tuple(
        _score(name, rows, y, any_active, before, after, ctx, np.random.default_rng([seed, EXPORT_STREAM, i]))
        for i, (name, rows) in enumerate(splits.items())
    )  # fmt: skip
    method = (
        "logistic regression re-fit on the train split with the directions projected out"
        if refit
        else "weights projected off the directions; bias keeps the margins of rows without them"
    )
    if surrogate:
        method = (
            "your model's surrogate (the logistic regression on the embeddings that the "
            "attribution ran on; 'before' is the surrogate's decisions): " + method
        )
    record = ExportedHead(str(path), tuple(c.name for c in flagged), len(latents), refit,
                          method, scores)  # fmt: skip
    note = constant_note(after, splits, ctx, record.removed, refit)
    return replace(result, export=record, notes=result.notes + ((note,) if note else ()))


def constant_note(
    after: np.ndarray, splits: dict[str, np.ndarray], ctx: AuditContext,
    removed: tuple[str, ...], refit: bool,
) -> str | None:  # fmt: skip
    """Say so when the exported head decides one class on every row of a split: its scores
    (a better worst group, say) would otherwise hide that it is no classifier at all. A head
    that decided almost by the removed concepts alone is left with (nearly) only its bias."""
    constant = [
        (name, int(after[rows][0])) for name, rows in splits.items()
        if rows.size and np.unique(after[rows]).size == 1
    ]  # fmt: skip
    if not constant:
        return None
    values = ctx.cells.target_values
    which = "; ".join(
        f"{ctx.settings.target}={values[c]} on every "
        f"{' and '.join(name for name, k in constant if k == c)} row"
        for c in sorted({c for _, c in constant})
    )
    advice = "" if refit else "; --refit learns the task without the directions instead"
    return (
        f"the exported head decides {which}: without {', '.join(removed)} it has nothing left "
        f"to decide by{advice}"
    )


def _linear_head(ctx: AuditContext) -> tuple[LinearHead, bool]:
    """The linear head the export starts from, and whether it is an own model's surrogate
    (an image model or a predictions file cannot be edited; its surrogate head can)."""
    head = ctx.classifier
    if isinstance(head, OwnModel) and head.head is not None:
        return head.head, True
    if not isinstance(head, LinearHead):
        raise InputError(
            "--export-head needs a linear head, 'probe', or your own model (its surrogate) "
            "as --classifier"
        )
    return head, False


def head_reads(head: LinearHead, x: np.ndarray) -> np.ndarray:
    """``[N, d]``: what ``head``'s weights multiply — ``x``, or ``x / ‖x‖`` for an L2 head."""
    if not head.l2:
        return x
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), np.finfo(x.dtype).tiny)


def projected_head(head: LinearHead, quiet: np.ndarray, p: np.ndarray) -> LinearHead:
    """``w' = P w``, ``b' = b + (w − w')·m`` with ``m`` the mean of what the head reads over
    ``quiet`` (rows where no removed concept is active): their mean margin stays the same."""
    w = head.weight.detach().double().cpu().numpy()
    w_new = p @ w
    read_mean = head_reads(head, quiet).mean(0, dtype=np.float64)
    b_new = float(head.bias) + float((w - w_new) @ read_mean)
    return LinearHead(torch.from_numpy(w_new.astype(np.float32)), b_new, head.input, "linear")


def refit_head(
    head: LinearHead, train: np.ndarray, y: np.ndarray, p: np.ndarray, seed: int
) -> LinearHead:
    """The probe fit on ``P x̄`` (``x̄`` what ``head`` reads), as a head of ``head``'s input
    kind: ``(P w_fit)·x̄ = w_fit·(P x̄)``, so it scores every row as the fitted probe does."""
    fitted = fit_probe(head_reads(head, train) @ p, y, "raw", seed)
    w_new = p @ fitted.weight.double().numpy()
    return LinearHead(
        torch.from_numpy(w_new.astype(np.float32)), float(fitted.bias), head.input, "linear"
    )


def _decisions(head: LinearHead, x: np.ndarray, chunk: int = 65536) -> np.ndarray:
    head = head.to("cpu", torch.float64)
    out = np.empty(len(x), dtype=np.int8)
    with torch.no_grad():
        for lo in range(0, len(x), chunk):
            block = torch.from_numpy(x[lo : lo + chunk].astype(np.float64))
            out[lo : lo + chunk] = (head.margin(block) > 0).numpy()
    return out


def _score(
    split: str, rows: np.ndarray, y: np.ndarray, active: np.ndarray, before: np.ndarray,
    after: np.ndarray, ctx: AuditContext, rng: np.random.Generator,
) -> HeadScore:  # fmt: skip
    ok_b, ok_a = before[rows] == y[rows], after[rows] == y[rows]
    cell = 2 * y[rows].astype(np.int64) + active[rows]
    pairs = pair_counts(ok_b, ok_a, cell, 4)
    n = pairs.sum(1)
    keep = np.nonzero(n)[0]
    acc_b = (pairs[keep, 0] + pairs[keep, 1]) / n[keep]
    acc_a = (pairs[keep, 0] + pairs[keep, 2]) / n[keep]
    samples = ctx.gate.bootstrap_samples
    overall = pairs.sum(0, keepdims=True)
    values = ctx.cells.target_values
    name = [f"{ctx.settings.target}={values[c // 2]}, removed={'active' if c % 2 else 'inactive'}"
            for c in keep]  # fmt: skip
    return HeadScore(
        split=split, rows=int(rows.size), accuracy_before=float(ok_b.mean()),
        accuracy_after=float(ok_a.mean()),
        delta_accuracy_ci=percentile_interval(bootstrap_delta_wga(overall, samples, rng)),
        worst_group_before=name[int(np.argmin(acc_b))],
        worst_group_accuracy_before=float(acc_b.min()),
        worst_group_after=name[int(np.argmin(acc_a))],
        worst_group_accuracy_after=float(acc_a.min()),
        delta_wga_ci=percentile_interval(bootstrap_delta_wga(pairs, samples, rng)),
    )  # fmt: skip
