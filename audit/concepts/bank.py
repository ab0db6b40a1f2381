"""The concept bank in memory: every latent's evidence (:class:`Concept`), the concepts the
audit tests (:class:`ConceptGroup`: one name, one or several latents) and the SAE it belongs to.

A latent's ``name`` is the name of the concept it belongs to; ``validated`` says that the
concept passed validation. Banks written before concepts could span latents record no groups;
their concepts are the latents that share a validated name (:meth:`ConceptBank.concept_groups`).
"""

from __future__ import annotations

import dataclasses
import difflib
import os
from dataclasses import dataclass, field
from typing import Any

from audit.errors import InputError

PRESENT = "present"  # the latent fires when its word is in the image
ABSENT = "absent"  # the latent fires when its word is NOT in the image: named "no <word>"
ABSENCE_PREFIX = "no "


@dataclass(frozen=True)
class ImageScores:
    """What the probe images say about a latent, or about a concept's summed activation.

    ``word`` is the vocabulary entry whose image–text similarity the activation follows
    (``polarity`` ``absent``: the activation rises as the similarity falls); ``selectivity``
    how far that word stands out from the rest of the vocabulary (robust z); ``auc`` how well
    the activation predicts the word's zero-shot labels on held-out probe images, and
    ``auc_threshold`` what the best random latents reach for the same labels.
    """

    word: str
    polarity: str = PRESENT
    selectivity: float = 0.0
    auc: float | None = None
    auc_threshold: float | None = None

    @property
    def phrase(self) -> str:
        """``red`` or ``no red``: the name this evidence supports."""
        return self.word if self.polarity == PRESENT else ABSENCE_PREFIX + self.word


@dataclass(frozen=True)
class WordCheck:
    """How a name is checked again on other images: there, an image shows the word when
    ``x̂ · direction > threshold`` — the word's direction ``t̂_w − t̄`` and the threshold ``θ_w``
    its zero-shot labels had on the probe images (:mod:`audit.concepts.images`)."""

    word: str
    direction: Any  # np.ndarray [d] float32
    threshold: float


@dataclass
class Concept:
    """One latent: its name (its concept's), the text evidence and, when images were at hand,
    the image evidence."""

    latent: int
    name: str | None  # None: unnamed
    score: float  # best cosine between the decoder direction and the vocabulary's texts
    closest: str  # best vocabulary entry by that cosine (even when unnamed)
    validated: bool = False
    alternatives: list[tuple[str, float]] = field(default_factory=list)
    self_rank: int | None = None  # rank of this latent among the named word's own activations
    image: ImageScores | None = None

    @property
    def nearest(self) -> str:
        """The nearest word by the best evidence: the image evidence when there is some."""
        return self.image.phrase if self.image is not None else self.closest

    @property
    def label(self) -> str:
        """How reports show the latent: its name, or ``latent 1776 (~nearest)``."""
        return self.name if self.name else f"latent {self.latent} (~{self.nearest})"


@dataclass(frozen=True)
class ConceptGroup:
    """A concept as the audit ablates, tests and reports it: all its latents together."""

    latents: tuple[int, ...]
    name: str | None
    validated: bool
    closest: str  # the nearest word (shown for unnamed concepts)
    score: float  # the best text cosine among its latents
    image: ImageScores | None = None  # the evidence the name was validated on (the core's)
    core: tuple[int, ...] | None = None  # the latents validated on, when not all of them

    @property
    def latent(self) -> int:
        return self.latents[0]

    @property
    def label(self) -> str:
        if self.validated and self.name:
            return self.name
        which = (
            f"latent {self.latents[0]}"
            if len(self.latents) == 1
            else "latents " + "+".join(map(str, self.latents))
        )
        return f"{which} (~{self.closest})" if self.closest else which


@dataclass
class ConceptBank:
    name: str
    sae: dict[str, Any]
    concepts: list[Concept]
    embedding_model: str | None = None
    pretrained: str | None = None
    vocabulary: dict[str, Any] = field(default_factory=dict)
    threshold: float = 0.0
    threshold_method: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    groups: list[ConceptGroup] | None = None  # None: concepts are latents sharing a name
    # The words of the image-validated names, to check them again on the audited images
    # (None: a text-only bank, or one written before banks kept them).
    word_checks: dict[str, WordCheck] | None = None
    missing_word_file: str | None = None  # the bank names a word file that is not there

    @property
    def fingerprint(self) -> str:
        return str(self.sae.get("fingerprint", ""))

    @property
    def validation_method(self) -> str:
        """``image`` when the names were chosen and validated against probe images, else
        ``text`` (the decoder–text cosine and self-consistency alone; version 1 banks)."""
        validation = self.extra.get("validation")
        method = validation.get("method") if isinstance(validation, dict) else None
        return "image" if method == "image" else "text"

    def notes(self) -> tuple[str, ...]:
        """The caveats every report of an audit with this bank carries: one when the names
        were never checked against images, or cannot be checked again on the audited ones;
        else none."""
        if self.validation_method == "image":
            if self.missing_word_file:
                return (
                    f"the bank '{self.name}' names its word file {self.missing_word_file}, "
                    "which is not beside it: its names were checked on its probe images but "
                    "not again on the audited ones (copy the file next to the bank)",
                )
            if self.word_checks is None and any(g.validated for g in self.concept_groups()):
                return (
                    f"the bank '{self.name}' keeps no word file (it was built before banks "
                    "kept one): its names were checked on its probe images but not again on "
                    "the audited ones; rebuild it with `msae-audit concepts … --probe-images "
                    "STORE` to have them checked here",
                )
            return ()
        return (
            f"the bank '{self.name}' was named from text alone (built without --probe-images): "
            "its names were never checked against images, and a decoder direction close to a "
            "word is often not a detector of it (8 of 20 such names were wrong on the demo "
            "world, docs/naming.md); rebuild it with `msae-audit concepts … --probe-images "
            "STORE` (this store, or a broad sample of the domain) before acting on a flag",
        )

    def by_latent(self) -> dict[int, Concept]:
        return {c.latent: c for c in self.concepts}

    def named(self, validated_only: bool = True) -> list[Concept]:
        return [c for c in self.concepts if c.name and (c.validated or not validated_only)]

    def latents_named(self, name: str) -> list[int]:
        """All latents carrying ``name`` (names are matched case-insensitively)."""
        key = name.strip().lower()
        return [c.latent for c in self.concepts if c.name and c.name.lower() == key]

    def resolve(self, name: str) -> list[int]:
        """Latents for a concept name; an unknown name is an input error listing close matches."""
        latents = self.latents_named(name)
        if latents:
            return latents
        if name.strip().isdigit():
            latent = int(name)
            if any(c.latent == latent for c in self.concepts):
                return [latent]
        names = sorted({c.name for c in self.concepts if c.name})
        close = difflib.get_close_matches(
            name.strip().lower(), [n.lower() for n in names], n=5, cutoff=0.5
        )
        hint = f"; did you mean: {', '.join(close)}" if close else ""
        raise InputError(f"concept '{name}' is not in bank '{self.name}'{hint}")

    def concept_groups(self, n_latents: int | None = None) -> list[ConceptGroup]:
        """Every latent in exactly one concept, in the order the audit lists them: validated
        concepts by name, then the others by their first latent.

        With ``n_latents`` the partition covers latents ``0 … n_latents − 1`` (latents the bank
        does not list are unnamed singletons; latents beyond it are dropped).
        """
        limit = (
            n_latents
            if n_latents is not None
            else 1 + max((c.latent for c in self.concepts), default=-1)
        )
        # A name's group is built from the latents the SAE has: a dropped latent's score and
        # nearest word are not the group's.
        recorded = (
            self.groups
            if self.groups is not None
            else name_groups([c for c in self.concepts if 0 <= c.latent < limit])
        )
        groups = []
        for g in recorded:
            inside = tuple(j for j in g.latents if 0 <= j < limit)
            if inside:
                groups.append(g if inside == g.latents else _restricted(g, inside))
        covered = {j for g in groups for j in g.latents}
        by_latent = self.by_latent()
        groups += [single_group(by_latent.get(j), j) for j in range(limit) if j not in covered]
        tested = sorted(
            (g for g in groups if g.validated),
            key=lambda g: (str(g.name).strip().lower(), g.latent),
        )
        others = sorted((g for g in groups if not g.validated), key=lambda g: g.latent)
        return tested + others

    def check_sae(
        self,
        fingerprint: str,
        sae_path: str | os.PathLike[str] | None = None,
        n_latents: int | None = None,
    ) -> None:
        """Refuse a bank built for another SAE (and, given ``n_latents``, one that names
        latents the SAE does not have)."""
        if self.fingerprint != fingerprint:
            where = f" ({sae_path})" if sae_path else ""
            raise InputError(
                f"concept bank '{self.name}' was built for another SAE "
                f"({self.sae.get('path', 'unknown path')}, {self.fingerprint}), not this one{where}; "
                "rebuild it with `msae-audit concepts`"
            )
        if n_latents is not None:
            beyond = [c.latent for c in self.concepts if c.latent >= n_latents]
            if beyond:
                raise InputError(
                    f"concept bank '{self.name}' names latent {beyond[0]}, but the SAE has "
                    f"{n_latents} latents"
                )


def name_groups(concepts: list[Concept]) -> list[ConceptGroup]:
    """Concepts of a bank that records none: one per validated name (its latents together),
    one per latent with a name that was not validated."""
    members: dict[str, list[Concept]] = {}
    groups = []
    for c in sorted(concepts, key=lambda c: c.latent):
        if c.name and c.validated:
            members.setdefault(c.name.strip().lower(), []).append(c)
        elif c.name:
            groups.append(single_group(c, c.latent))
    for same in members.values():
        best = max(same, key=lambda c: (c.score, -c.latent))
        image = best.image
        groups.append(
            ConceptGroup(
                tuple(c.latent for c in same),
                same[0].name,
                True,
                best.closest,
                float(best.score),
                image,
            )
        )
    return groups


def single_group(concept: Concept | None, latent: int) -> ConceptGroup:
    """A latent on its own (``concept`` None: a latent the bank does not list)."""
    if concept is None:
        return ConceptGroup((latent,), None, False, "", 0.0)
    closest = concept.nearest or concept.name or ""
    return ConceptGroup(
        (latent,),
        concept.name,
        concept.validated and bool(concept.name),
        closest,
        float(concept.score),
        concept.image,
    )


def _restricted(group: ConceptGroup, latents: tuple[int, ...]) -> ConceptGroup:
    core = None if group.core is None else tuple(j for j in group.core if j in latents)
    return dataclasses.replace(group, latents=latents, core=core or None)
