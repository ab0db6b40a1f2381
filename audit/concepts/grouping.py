"""Concepts from image evidence: latents that follow the same word are summed into one concept
(chosen on the probe's fitting half), the concept is validated on the held-out half, and
latents whose activations are nearly the same join one concept.

A concept for word ``w`` (or its absence) starts from the latent that predicts ``w``'s
zero-shot labels best on the fitting half and adds, best first, every other latent that chose
``w`` and raises the AUC of the summed activation by more than ``GREEDY_GAIN``: a feature split
over several latents (``large red``, ``large star`` …) is one concept, as the audit ablates it.
It is **validated** when, on held-out images, (1) its summed activation predicts the labels
better than random latents named the same way (:func:`audit.concepts.images.null_aucs`)
and (2) its word stands out from the vocabulary (selectivity ≥ ``min_selectivity``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from audit.concepts.auc import auc, auc_from_ranks, average_ranks
from audit.concepts.bank import ABSENT, PRESENT, ConceptGroup, ImageScores
from audit.concepts.images import (
    ImageNamingSettings,
    Probe,
    WordChoice,
    ZeroShotLabels,
    selectivities,
)

GREEDY_GAIN = 1e-3  # a latent joins a concept when it raises the fitting-half AUC this much


@dataclass(frozen=True)
class Candidate:
    """A concept before duplicates join, with the word it was built for."""

    group: ConceptGroup
    word: int
    absent: bool

    @property
    def validated(self) -> bool:
        return self.group.validated


@dataclass(frozen=True)
class Evidence:
    """Everything the grouping reads: the probe, each latent's word, labels and the null."""

    probe: Probe
    choice: WordChoice
    labels: ZeroShotLabels
    auc_threshold: float  # what random latents named the same way reach (null quantile)
    kin_auc: float  # what the median random latent named the same way reaches
    covariance: Tensor  # [n, d] cov(z, x̂) on the fitting half
    directions: Tensor  # [V, d] t̂_w − t̄
    entries: list[str]

    def columns(self, latents: np.ndarray) -> np.ndarray:
        return np.searchsorted(self.labels.words, self.choice.word[latents])

    def scores(
        self, word: int, absent: bool, selectivity: float, value: float | None, threshold: float
    ) -> ImageScores:
        polarity = ABSENT if absent else PRESENT
        return ImageScores(self.entries[word], polarity, selectivity, value, threshold)


def latent_aucs(
    z: Tensor, labels: Tensor, columns: np.ndarray, absent: np.ndarray, chunk: int = 1024
) -> np.ndarray:
    """Each latent's AUC for its own word's labels (for the word's absence where ``absent``)."""
    out = np.zeros(z.shape[1])
    for lo in range(0, z.shape[1], chunk):
        cols = torch.as_tensor(columns[lo : lo + chunk])
        y = labels[:, cols] ^ torch.as_tensor(absent[lo : lo + chunk])
        out[lo : lo + chunk] = auc_from_ranks(average_ranks(z[:, lo : lo + chunk]), y).numpy()
    return np.nan_to_num(out, nan=0.5)


def greedy_members(
    z_fit: Tensor, y_fit: Tensor, candidates: np.ndarray, first_auc: float | None = None
) -> list[int]:
    """Candidates (best single AUC first) kept while each raises the summed activation's AUC
    (``first_auc``: the first candidate's own AUC, when the caller has it already)."""
    members = [int(candidates[0])]
    if len(candidates) == 1:
        return members
    total = z_fit[:, members[0]].clone()
    best = auc(total, y_fit) if first_auc is None else first_auc
    for j in candidates[1:]:
        trial = total + z_fit[:, int(j)]
        value = auc(trial, y_fit)
        if value > best + GREEDY_GAIN:
            members.append(int(j))
            total, best = trial, value
    return members


@dataclass(frozen=True)
class Members:
    """A candidate concept: the latents that validate it and all the latents it spans."""

    core: tuple[int, ...]  # greedy on the fitting half: what the name is validated on
    kin: tuple[int, ...]  # the core and every latent of the word that predicts it on its own
    word: int
    absent: bool


def concept_members(
    z_fit: Tensor, labels: ZeroShotLabels, choice: WordChoice, kin_auc: float
) -> list[Members]:
    """One candidate concept per (word, polarity) chosen by some responsive latent.

    Its **core** is grown greedily from the latent that predicts the word's labels best (on the
    fitting half): a latent joins when it raises the AUC of the summed activation. Its **kin**
    add every other latent that chose the word and predicts it on its own with AUC ≥
    ``kin_auc`` (better than the median random latent): a concept is ablated whole, and a
    latent redundant for detecting the word (so not in the core) still carries it."""
    latents = np.nonzero(choice.responsive)[0]
    if not len(latents):
        return []
    columns = np.searchsorted(labels.words, choice.word[latents])
    single = latent_aucs(z_fit[:, latents], labels.fit, columns, choice.absent[latents])
    buckets: dict[tuple[int, bool], list[int]] = {}
    for i, j in enumerate(latents):
        buckets.setdefault((int(choice.word[j]), bool(choice.absent[j])), []).append(i)
    out = []
    for (word, absent), rows in sorted(buckets.items()):
        ordered = np.array(rows)[np.argsort(-single[rows], kind="stable")]
        y_fit = labels.fit[:, labels.column(word)] ^ absent
        core = greedy_members(z_fit, y_fit, latents[ordered], float(single[ordered[0]]))
        kin = [int(latents[i]) for i in ordered if single[i] >= kin_auc]
        out.append(Members(tuple(sorted(core)), tuple(sorted(set(core) | set(kin))), word, absent))
    return out


def build_concepts(evidence: Evidence, settings: ImageNamingSettings) -> list[ConceptGroup]:
    """The candidate concepts of :func:`concept_members`, validated on their core on held-out
    images; a validated concept then spans its kin and near-duplicates
    (:func:`merge_duplicates`)."""
    members = concept_members(
        evidence.probe.z_fit, evidence.labels, evidence.choice, evidence.kin_auc
    )
    candidates = []
    for m, verdict in zip(members, evaluate(evidence, members, settings), strict=True):
        if verdict.validated and m.kin != m.core:
            verdict = dataclasses.replace(
                verdict, group=dataclasses.replace(verdict.group, latents=m.kin, core=m.core)
            )
        candidates.append(verdict)
    return merge_duplicates(evidence, candidates, settings)


def evaluate(
    evidence: Evidence, members: list[Members], settings: ImageNamingSettings, chunk: int = 512
) -> list[Candidate]:
    """Each candidate's verdict from the summed activation of its core: its held-out AUC (one
    rank pass per chunk of candidates) and its selectivity (one product per chunk)."""
    if not members:
        return []
    words = np.array([m.word for m in members])
    absent = np.array([m.absent for m in members])
    covariance = torch.stack([evidence.covariance[list(m.core)].sum(0) for m in members])
    selectivity = selectivities(covariance, evidence.directions, words, absent, chunk)
    value = np.empty(len(members))
    z_hold, labels = evidence.probe.z_hold, evidence.labels
    for lo in range(0, len(members), chunk):
        part = members[lo : lo + chunk]
        sums = torch.stack([z_hold[:, list(m.core)].sum(1) for m in part], dim=1)
        columns = torch.as_tensor(np.searchsorted(labels.words, words[lo : lo + chunk]))
        y = labels.hold[:, columns] ^ torch.as_tensor(absent[lo : lo + chunk])
        value[lo : lo + chunk] = auc_from_ranks(average_ranks(sums), y).numpy()
    threshold = evidence.auc_threshold
    out = []
    for m, auc_value, word_z in zip(members, value.tolist(), selectivity.tolist(), strict=True):
        valid = bool(auc_value > threshold and word_z >= settings.min_selectivity)
        scores = evidence.scores(m.word, m.absent, word_z, auc_value, threshold)
        name = scores.phrase if valid else None
        group = ConceptGroup(m.core, name, valid, scores.phrase, 0.0, scores)
        out.append(Candidate(group, m.word, m.absent))
    return out


def near_duplicates(
    z: Tensor, threshold: float, chunk: int = 2048, max_rows: int = 8192
) -> list[tuple[int, int]]:
    """Pairs ``(a, b)``, ``a < b``, of latents whose activations over the probe (at most
    ``max_rows`` images, evenly spaced) correlate at least ``threshold``; a latent that never
    varies correlates with nothing."""
    z = z[:: max(1, -(-z.shape[0] // max_rows))]
    centred = z - z.mean(0)
    norm = centred.norm(dim=0)
    alive = norm > 0
    unit = centred / norm.clamp_min(1e-12)
    pairs: list[tuple[int, int]] = []
    for lo in range(0, z.shape[1], chunk):
        # Only the block's own columns and those after it: the matrix is symmetric, so the
        # lower triangle would repeat every pair (half the work of the whole matrix).
        corr = unit[:, lo : lo + chunk].T @ unit[:, lo:]
        hit = (corr >= threshold) & alive[lo : lo + chunk, None] & alive[None, lo:]
        rows, cols = torch.nonzero(hit, as_tuple=True)
        above = rows < cols
        pairs += zip((rows[above] + lo).tolist(), (cols[above] + lo).tolist(), strict=True)
    return pairs


def merge_duplicates(
    evidence: Evidence, candidates: list[Candidate], settings: ImageNamingSettings
) -> list[ConceptGroup]:
    """Validated concepts absorb the latents nearly identical to one of their latents (the
    same feature twice); the remaining near-identical latents form unnamed concepts. Two
    validated concepts never merge: different names are different claims."""
    validated = [c.group for c in candidates if c.validated]
    owner = {j: i for i, g in enumerate(validated) for j in g.latents}
    parent = list(range(evidence.probe.z_fit.shape[1]))

    def find(j: int) -> int:
        while parent[j] != j:
            parent[j] = parent[parent[j]]
            j = parent[j]
        return j

    joins: dict[int, set[int]] = {}
    for a, b in near_duplicates(evidence.probe.z_fit, settings.duplicate_correlation):
        if (a in owner) != (b in owner):
            inside, outside = (a, b) if a in owner else (b, a)
            joins.setdefault(outside, set()).add(owner[inside])
        elif a not in owner:
            parent[find(a)] = find(b)
    grown = [set(g.latents) for g in validated]
    for latent, concepts in joins.items():
        if len(concepts) == 1:  # nearly identical to two named concepts: stays on its own
            grown[concepts.pop()].add(latent)
    out = [
        dataclasses.replace(g, latents=tuple(sorted(grown[i])), core=g.core or g.latents)
        if len(grown[i]) > len(g.latents)
        else g
        for i, g in enumerate(validated)
    ]
    taken = {j for g in out for j in g.latents}
    components: dict[int, list[int]] = {}
    for j in range(len(parent)):
        if j not in taken:
            components.setdefault(find(j), []).append(j)
    out += [unnamed(evidence, tuple(c)) for c in components.values() if len(c) > 1]
    return out


def unnamed(evidence: Evidence, members: tuple[int, ...]) -> ConceptGroup:
    """Near-identical latents without a validated name: one concept, shown by the nearest word
    of its most selective latent, never tested."""
    choice = evidence.choice
    lead = max(members, key=lambda j: choice.selectivity[j])
    phrase = evidence.scores(int(choice.word[lead]), bool(choice.absent[lead]), 0.0, None, 0.0)
    return ConceptGroup(members, None, False, phrase.phrase, 0.0, None)
