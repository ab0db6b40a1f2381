"""Concept rows: what is ablated and reported together.

A validated concept is one row with all its latents (ablated jointly, tested in the BH family);
every other latent is a row of its own, listed for discovery but never flagged.

Where the bank's image evidence says a concept fires when its word is ABSENT (a ``no red``
concept), reports call it ``absence of red``: what the classifier reads there is that red is
missing.
"""

from __future__ import annotations

from dataclasses import dataclass

from audit.concepts import ABSENT, ConceptBank, ConceptGroup, ImageScores

ABSENCE_LABEL = "absence of {}"


@dataclass(frozen=True)
class ConceptRow:
    """One reported row: a validated name (all its latents together) or a single latent."""

    latents: tuple[int, ...]
    name: str | None  # the validated name (tested rows) or the bank's name if not validated
    label: str  # how reports show it
    tested: bool  # in the BH family (validated name)
    closest: str
    score: float
    image: ImageScores | None = None  # the image evidence behind the name (banks named on images)

    @property
    def latent(self) -> int:
        return self.latents[0]


def build_concept_rows(bank: ConceptBank, n_latents: int) -> list[ConceptRow]:
    """One row per concept of the bank (its latents ablated together): validated concepts
    first, by name, then the others by latent (see ``ConceptBank.concept_groups``)."""
    return [
        ConceptRow(g.latents, g.name, _label(g), g.validated, g.closest, g.score, g.image)
        for g in bank.concept_groups(n_latents)
    ]


def _label(group: ConceptGroup) -> str:
    """The group's label, with an absence concept said as ``absence of <word>``."""
    image = group.image
    if image is None or image.polarity != ABSENT:
        return group.label
    absence = ABSENCE_LABEL.format(image.word)
    if group.validated and group.name:
        return absence
    return group.label.replace(f"(~{image.phrase})", f"(~{absence})")
