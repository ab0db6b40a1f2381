"""Concept rows: what is ablated and reported together.

A validated concept is one row with all its latents (ablated jointly, tested in the BH family);
every other latent is a row of its own, listed for discovery but never flagged.
"""

from __future__ import annotations

from dataclasses import dataclass

from audit.concepts import ConceptBank


@dataclass(frozen=True)
class ConceptRow:
    """One reported row: a validated name (all its latents together) or a single latent."""

    latents: tuple[int, ...]
    name: str | None  # the validated name (tested rows) or the bank's name if not validated
    label: str  # how reports show it
    tested: bool  # in the BH family (validated name)
    closest: str
    score: float

    @property
    def latent(self) -> int:
        return self.latents[0]


def build_concept_rows(bank: ConceptBank, n_latents: int) -> list[ConceptRow]:
    """One row per concept of the bank (its latents ablated together): validated concepts
    first, by name, then the others by latent (see ``ConceptBank.concept_groups``)."""
    return [
        ConceptRow(g.latents, g.name, g.label, g.validated, g.closest, g.score)
        for g in bank.concept_groups(n_latents)
    ]
