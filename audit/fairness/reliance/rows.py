"""Concept rows: what is ablated and reported together.

A validated name is one row with all its latents (ablated jointly, tested in the BH family);
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
    """One row per validated name (its latents ablated together), one per other latent."""
    by_latent = bank.by_latent()
    groups: dict[str, list[int]] = {}
    display: dict[str, str] = {}
    for c in sorted(bank.concepts, key=lambda c: c.latent):
        if c.name and c.validated and 0 <= c.latent < n_latents:
            key = c.name.strip().lower()
            groups.setdefault(key, []).append(c.latent)
            display.setdefault(key, c.name)
    rows: list[ConceptRow] = []
    grouped = {j for latents in groups.values() for j in latents}
    for key in sorted(groups):
        latents = tuple(sorted(groups[key]))
        best = max((by_latent[j] for j in latents), key=lambda c: (c.score, -c.latent))
        rows.append(
            ConceptRow(latents, display[key], display[key], True, best.closest, float(best.score))
        )
    for j in range(n_latents):
        if j in grouped:
            continue
        c = by_latent.get(j)
        closest = (c.closest or c.name or "") if c is not None else ""
        label = f"latent {j} (~{closest})" if closest else f"latent {j}"
        rows.append(
            ConceptRow(
                (j,), c.name if c else None, label, False, closest, float(c.score) if c else 0.0
            )
        )
    return rows
