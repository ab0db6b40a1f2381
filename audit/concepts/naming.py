"""Naming every latent of an SAE and validating the names, from text alone or checked against
images; the result is a :class:`~audit.concepts.bank.ConceptBank`.

* Text (always): the cosine between the latent's decoder direction ``W_dec[j] / s`` and each
  entry's text embedding; the best entry and ``alternatives`` more are kept. Without images a
  name needs (a) a cosine ≥ the threshold (by default what 99 % of random directions stay
  below) and (b) self-consistency (the word's own text embedding activates the latent among its
  ``top_m``).
* Images (when probe image embeddings are given): the name comes from how the latent's
  activation over the images follows each word's image–text similarity, and is validated on
  held-out images (:mod:`audit.concepts.images`, :mod:`audit.concepts.grouping`); concepts may
  span latents; a latent that fires when a word is absent is named ``no <word>``.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from audit.concepts import grouping, images
from audit.concepts.bank import Concept, ConceptBank, ConceptGroup, WordCheck
from audit.concepts.matching import DEFAULT_ALTERNATIVES, DEFAULT_TOP_M, self_ranks, top_matches
from audit.concepts.thresholds import NULL_DIRECTIONS, NULL_QUANTILE, random_direction_threshold
from audit.concepts.vocabulary import Vocabulary
from audit.errors import InputError

TEXT_RULE = (
    "score >= threshold and the name's text embedding (rescaled to the SAE's typical input "
    "norm) activates the latent among its top_m latents"
)
IMAGE_RULE = (
    "on held-out probe images the concept's summed activation predicts its word's zero-shot "
    "labels (AUC) better than random latents named the same way (naming.auc_threshold), and "
    "the word's response stands out from the vocabulary's (selectivity >= min_selectivity)"
)


@dataclass
class NamingResult:
    bank: ConceptBank
    null_scores: np.ndarray
    seconds: dict[str, float]


@dataclass(frozen=True)
class TextEvidence:
    scores: np.ndarray  # [n, alternatives + 1] best cosines, best first
    indices: np.ndarray  # [n, alternatives + 1] vocabulary rows
    threshold: float
    method: str
    null_scores: np.ndarray
    ranks: np.ndarray  # [n] self-consistency rank of the best word (0: not computed / silent)

    @property
    def named(self) -> np.ndarray:
        return self.scores[:, 0] >= self.threshold


def text_evidence(
    sae: Any,
    text_embeddings: np.ndarray,
    threshold: float | None,
    alternatives: int,
    screen: str,
    progress: Callable[[int, int], None] | None,
    timings: dict[str, float],
) -> TextEvidence:
    """Decoder–text cosines, the random-direction threshold and the self-consistency ranks."""
    directions = sae.decoder_directions().detach().float().cpu().numpy()
    started = time.perf_counter()
    scores, indices = top_matches(
        directions, text_embeddings, alternatives + 1, screen=screen, progress=progress
    )
    timings["similarity"] = time.perf_counter() - started
    started = time.perf_counter()
    null_scores = np.zeros(0, dtype=np.float32)
    if threshold is None:
        threshold, null_scores = random_direction_threshold(
            text_embeddings, directions, screen=screen
        )
        method = (
            f"q{NULL_QUANTILE:g} of the best cosine of {NULL_DIRECTIONS} random unit directions "
            "(isotropic in the decoder span, seed 0) against this vocabulary"
        )
    else:
        method = "given by the user (--threshold)"
    timings["threshold"] = time.perf_counter() - started
    started = time.perf_counter()
    named = np.nonzero(scores[:, 0] >= threshold)[0]
    ranks = np.zeros(sae.n_latents, dtype=np.int64)
    ranks[named] = self_ranks(sae, text_embeddings, named, word_index=indices[named, 0])
    timings["self_consistency"] = time.perf_counter() - started
    return TextEvidence(scores, indices, float(threshold), method, null_scores, ranks)


def text_concepts(evidence: TextEvidence, vocab: Vocabulary, top_m: int) -> list[Concept]:
    """One concept per latent, named and validated by the text rules."""
    concepts = []
    for j, is_named in enumerate(evidence.named):
        entry = vocab.entries[int(evidence.indices[j, 0])]
        rank = int(evidence.ranks[j]) if is_named and evidence.ranks[j] > 0 else None
        concepts.append(
            Concept(
                latent=j,
                name=entry if is_named else None,
                score=float(evidence.scores[j, 0]),
                closest=entry,
                validated=bool(is_named and rank is not None and rank <= top_m),
                alternatives=[
                    (vocab.entries[int(i)], float(s))
                    for i, s in zip(evidence.indices[j, 1:], evidence.scores[j, 1:], strict=True)
                ],
                self_rank=rank,
            )
        )
    return concepts


def check_inputs(sae: Any, vocab: Vocabulary, text_embeddings: np.ndarray, top_m: int) -> None:
    if text_embeddings.shape != (len(vocab), sae.d_in):
        raise InputError(
            f"text embeddings have shape {list(text_embeddings.shape)}, expected "
            f"[{len(vocab)}, {sae.d_in}] (vocabulary entries × SAE input dimension)"
        )
    if top_m < 1:
        raise InputError(f"--top-m must be at least 1, got {top_m}")


def name_latents(
    sae: Any,
    vocab: Vocabulary,
    text_embeddings: np.ndarray,
    *,
    bank_name: str,
    sae_info: dict[str, Any],
    threshold: float | None = None,
    top_m: int = DEFAULT_TOP_M,
    alternatives: int = DEFAULT_ALTERNATIVES,
    embedding_model: str | None = None,
    pretrained: str | None = None,
    text_source: dict[str, Any] | None = None,
    screen: str = "auto",
    progress: Callable[[int, int], None] | None = None,
    probe_images: np.ndarray | None = None,
    probe_source: dict[str, Any] | None = None,
    image_settings: images.ImageNamingSettings | None = None,
) -> NamingResult:
    """Name every latent of ``sae`` from ``vocab`` and validate the names: by images when
    ``probe_images`` (raw image embeddings ``[N, d]``) are given, else by the text rules."""
    check_inputs(sae, vocab, text_embeddings, top_m)
    timings: dict[str, float] = {}
    evidence = text_evidence(
        sae, text_embeddings, threshold, alternatives, screen, progress, timings
    )
    concepts = text_concepts(evidence, vocab, top_m)
    extra: dict[str, Any] = {
        "similarity": "cosine(W_dec[j] / s, text embedding of the entry)",
        "validation": {"method": "text", "top_m": int(top_m), "rule": TEXT_RULE},
    }
    groups, word_checks = None, None
    if probe_images is not None:
        settings = image_settings or images.ImageNamingSettings()
        groups, extra["naming"], word_checks = image_naming(
            sae, vocab, text_embeddings, probe_images, settings, concepts, timings
        )
        extra["naming"]["probe"].update(probe_source or {})
        extra["validation"] = {"method": "image", "rule": IMAGE_RULE}
    extra["summary"] = naming_summary(concepts, groups, evidence, sae.n_latents)
    bank = ConceptBank(
        name=bank_name,
        sae=sae_info,
        concepts=concepts,
        embedding_model=embedding_model,
        pretrained=pretrained,
        vocabulary={**vocabulary_record(vocab), **(text_source or {})},
        threshold=evidence.threshold,
        threshold_method=evidence.method,
        extra=extra,
        groups=groups,
        word_checks=word_checks,
    )
    return NamingResult(bank, evidence.null_scores, timings)


def vocabulary_record(vocab: Vocabulary) -> dict[str, Any]:
    return {"sources": vocab.sources, "entries": len(vocab), "sha256": vocab.sha256}


def image_naming(
    sae: Any,
    vocab: Vocabulary,
    text_embeddings: np.ndarray,
    probe_images: np.ndarray,
    settings: images.ImageNamingSettings,
    concepts: list[Concept],
    timings: dict[str, float] | None = None,
) -> tuple[list[ConceptGroup], dict[str, Any], dict[str, WordCheck]]:
    """Image evidence for every latent, the concepts built and validated from it, and what
    checks their names again on other images; names, validity and per-latent image scores are
    written into ``concepts``."""
    lap = Stopwatch(timings if timings is not None else {})
    evidence = gather_evidence(sae, vocab, text_embeddings, probe_images, settings, lap)
    built = grouping.build_concepts(evidence, settings)
    lap("images: concepts")
    choice = evidence.choice
    latent_auc = grouping.latent_aucs(
        evidence.probe.z_hold,
        evidence.labels.hold,
        evidence.columns(np.arange(sae.n_latents)),
        choice.absent,
    )
    for c in concepts:
        c.name, c.validated = None, False
        if choice.responsive[c.latent]:
            word, absent = int(choice.word[c.latent]), bool(choice.absent[c.latent])
            c.image = evidence.scores(
                word,
                absent,
                float(choice.selectivity[c.latent]),
                float(latent_auc[c.latent]),
                evidence.auc_threshold,
            )
    text_score = {c.latent: c.score for c in concepts}
    groups = []
    for g in built:
        best = max(text_score[j] for j in g.latents)
        groups.append(dataclasses.replace(g, score=best))
        for j in g.latents:
            concepts[j].name, concepts[j].validated = g.name, g.validated
    lap("images: per-latent scores")
    return groups, naming_record(evidence, settings), word_checks(evidence, groups, settings)


def word_checks(
    evidence: grouping.Evidence, groups: list[ConceptGroup], settings: images.ImageNamingSettings
) -> dict[str, WordCheck]:
    """Each validated concept's word with its direction and label threshold θ_w, as the
    probe's fitting half set them: the audit labels its own images the same way."""
    index = {word: i for i, word in enumerate(evidence.entries)}
    wanted = sorted({index[g.image.word] for g in groups if g.validated and g.image is not None})
    if not wanted:
        return {}
    thresholds = images.zero_shot_labels(
        evidence.probe, evidence.directions, np.asarray(wanted), settings.label_quantile
    ).threshold
    return {
        evidence.entries[i]: WordCheck(
            evidence.entries[i],
            evidence.directions[i].numpy().astype(np.float32),
            float(theta),
        )
        for i, theta in zip(wanted, thresholds.tolist(), strict=True)
    }


class Stopwatch:
    """``lap(stage)`` records the seconds since the previous lap under ``stage``."""

    def __init__(self, timings: dict[str, float]) -> None:
        self.timings, self.last = timings, time.perf_counter()

    def __call__(self, stage: str) -> None:
        now = time.perf_counter()
        self.timings[stage] = self.timings.get(stage, 0.0) + now - self.last
        self.last = now


def gather_evidence(
    sae: Any,
    vocab: Vocabulary,
    text_embeddings: np.ndarray,
    probe_images: np.ndarray,
    settings: images.ImageNamingSettings,
    lap: Stopwatch | None = None,
) -> grouping.Evidence:
    lap = lap or Stopwatch({})
    probe = images.make_probe(sae, probe_images, settings)
    lap("images: encode probe")
    directions = images.word_directions(text_embeddings)
    covariance = images.activation_covariance(probe.z_fit, probe.unit_fit, settings.chunk_rows)
    choice = images.choose_words(covariance, directions, settings.absence_factor)
    lap("images: responses")
    words = np.unique(choice.word)
    labels = images.zero_shot_labels(probe, directions, words, settings.label_quantile)
    lap("images: zero-shot labels")
    null = images.null_aucs(probe, sae, directions, settings)
    lap("images: random latents")
    threshold = float(np.quantile(null, settings.null_quantile))
    return grouping.Evidence(
        probe,
        choice,
        labels,
        threshold,
        float(np.quantile(null, settings.kin_quantile)),
        covariance,
        directions,
        list(vocab.entries),
    )


def naming_record(evidence: grouping.Evidence, settings: images.ImageNamingSettings) -> dict:
    """How the names were chosen and validated, for the bank file."""
    probe = evidence.probe
    return {
        "method": "image",
        "probe": {
            "rows": probe.rows,
            "fit_rows": int(probe.x_fit.shape[0]),
            "held_out_rows": int(probe.x_hold.shape[0]),
        },
        "response": "cov(activation, x̂·(t̂_w − t̄)) over the fitting half",
        "labels": f"x̂·(t̂_w − t̄) > (median + q{settings.label_quantile:g}) / 2 (fitting half)",
        "null": f"q{settings.null_quantile:g} of the held-out AUC of {settings.random_latents} "
        "random latents, each named like the real ones",
        "auc_threshold": round(evidence.auc_threshold, 6),
        **{
            k: v
            for k, v in dataclasses.asdict(settings).items()
            if k not in ("chunk_rows", "max_probe")
        },
    }


def naming_summary(
    concepts: list[Concept],
    groups: list[ConceptGroup] | None,
    evidence: TextEvidence,
    n_latents: int,
) -> dict[str, Any]:
    validated_names = {c.name for c in concepts if c.validated}
    summary = {
        "latents": int(n_latents),
        "named": sum(c.name is not None for c in concepts),
        "validated": sum(c.validated for c in concepts),
        "unique_validated_names": len(validated_names),
    }
    if groups is not None:
        summary["concepts"] = sum(g.validated for g in groups)
        summary["absence_concepts"] = sum(
            g.validated and g.image is not None and g.image.polarity == "absent" for g in groups
        )
        summary["text_named"] = int(evidence.named.sum())
    return summary
