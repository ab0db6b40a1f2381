"""The relocation null: is a concept's ΔWGA about *where* it is active?

A concept can raise WGA for reasons unrelated to where it is active: a concept present in
everyone shifts every margin alike (a threshold change), and one the classifier reads as noise
hurts borderline samples everywhere. The matched null keeps everything but the placement: the
concept's own activation values (the same frequency and magnitudes), its own direction and the
same classifier, moved to random members of the same target class (with replacement). A null
draw is ΔWGA_null = WGA(x') − WGA(x^π), with ``x^π = x + (z_π − z) u`` the embeddings with the
relocated concept — ablating the relocated concept from ``x^π`` gives back ``x'``. Under "the
concept's effect does not depend on the spurious attribute", the real placement and a relocated
one are exchangeable, so ``p = P(ΔWGA_null ≥ ΔWGA)`` is a valid p-value.

Each sample's probability of being correct in ``x^π`` is a count over its class's activation
values: exact for linear heads on raw embeddings (the effect's shortcut), otherwise over the
class's activation vectors reduced to atoms (:func:`class_atoms`). Draws of each cell's
number of correct predictions are then sums of independent Bernoullis.

With ``given`` edits (:mod:`.beyond`) everything above is drawn on ``x + e_F``.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch

from audit.fairness.reliance.beyond import Beyond, Given, given_edits, pairs_beyond, with_given
from audit.fairness.reliance.columns import RowData
from audit.fairness.reliance.effects import BEYOND_STREAM, EditSetting, pair_summary, row_rng
from audit.fairness.reliance.rows import ConceptRow
from audit.fairness.stats import CountSampler, percentile_interval, sequential_mc_pvalue


def class_atoms(values: np.ndarray, n_atoms: int) -> tuple[np.ndarray, np.ndarray]:
    """A class's activation vectors reduced to atoms: the zero vector (inactive samples) and up to
    ``n_atoms`` equal-count bins of the active ones ordered by total activation (bin means).
    Returns ``(atoms [K, |S|], counts [K])``."""
    total = values.sum(1)
    active = np.nonzero(total > 0)[0]
    atoms = [np.zeros(values.shape[1])]
    counts = [values.shape[0] - active.size]
    if active.size:
        order = active[np.argsort(total[active], kind="stable")]
        for part in np.array_split(order, min(n_atoms, active.size)):
            atoms.append(values[part].mean(0))
            counts.append(part.size)
    return np.array(atoms), np.array(counts, dtype=np.int64)


def relocation_success_counts(
    s: EditSetting, row: ConceptRow, data: RowData, n_atoms: int = 16, given: Given | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """For every sample, how many of its class's ``n_t`` activation values — placed on it instead
    of its own, on top of the ``given`` edits if any — leave it correctly classified. Returns
    ``(successes [N], n_t [N])``."""
    y = s.cells.y
    base = s.base if given is None else replace(s.base, margin=given.margin)
    # The exact shortcut reads margins only, so a given edit enters as its margins.
    exact = s.effect.relocated_successes(base, data.z, row.latents, y)
    if exact is not None:
        return exact
    latents, xu_all = row.latents, data.x_dot_u
    if given is not None:
        joint, joint_data = with_given(given, row, data)
        latents, xu_all = joint.latents, joint_data.x_dot_u
    successes = np.zeros(len(y), dtype=np.int64)
    class_n = np.zeros(len(y), dtype=np.int64)
    for t in (0, 1):
        idx = np.nonzero(y == t)[0]
        if idx.size == 0:
            continue
        atoms, counts = class_atoms(data.z[idx].astype(np.float64), n_atoms)
        class_n[idx] = idx.size
        xu = None if xu_all is None else s.space.from_numpy(xu_all[idx])
        for atom, count in zip(atoms, counts, strict=True):
            coeff = atom[None, :] - data.z[idx]
            if given is not None:
                coeff = np.concatenate([given.coeff[idx], coeff], axis=1)
            with torch.no_grad():
                m = s.effect.margins(
                    s.space, s.base, idx, latents, s.space.from_numpy(np.array(coeff)), xu
                )
            ok = (m.cpu().numpy() > 0) == (t == 1)
            successes[idx] += ok.astype(np.int64) * int(count)
    return successes, class_n


def relocation_null(
    s: EditSetting,
    row: ConceptRow,
    data: RowData,
    delta_wga: float,
    wga_after: float,
    max_draws: int,
    rng: np.random.Generator,
    n_atoms: int = 16,
    given: Given | None = None,
) -> tuple[float, int, tuple[float, float]]:
    """Sequential Monte-Carlo p-value of ΔWGA against the relocation null (on top of the
    ``given`` edits, with ``delta_wga``/``wga_after`` measured there); also the null's central
    95 % band. Returns ``(p, draws, (lo, hi))``."""
    successes, class_n = relocation_success_counts(s, row, data, n_atoms, given)
    cell = s.cells.cell
    plans = []
    for c in range(s.cells.n_cells):
        idx = np.nonzero(cell == c)[0]
        if idx.size == 0:
            continue
        succ, nt = successes[idx], class_n[idx]
        random_part = (succ > 0) & (succ < nt)
        probs = succ[random_part] / nt[random_part]
        plans.append((idx.size, CountSampler(probs, int(np.count_nonzero(succ == nt)))))

    def draw(k: int) -> np.ndarray:
        acc = np.stack([sampler.draw(k, rng) / n for n, sampler in plans], 1)
        return wga_after - acc.min(1)

    p, used, stats = sequential_mc_pvalue(draw, lambda st: st >= delta_wga - 1e-12, max_draws)
    band = percentile_interval(stats) if stats.size else (0.0, 0.0)
    return p, used, band


def beyond_tests(
    ordered: list[tuple[ConceptRow, EditSetting, RowData]],
    max_draws: int,
    seed: int,
    n_atoms: int = 16,
) -> dict[tuple[int, ...], Beyond]:
    """Each concept of ``ordered`` (those that meet the flag rule alone, strongest first; with
    the edit setting of its own groups and its activations) after the first, tested with the
    edits of all those before it applied first (:mod:`.beyond`), by the relocation null drawn
    on that base."""
    out: dict[tuple[int, ...], Beyond] = {}
    for i, (row, s, data) in enumerate(ordered[1:], start=1):
        above = ordered[:i]
        given = given_edits(s, [a[0] for a in above], [a[2] for a in above])
        pairs = pairs_beyond(s, given, row, data)
        summary = pair_summary(pairs, s.cells)
        rng = row_rng(seed, BEYOND_STREAM, row)
        p, _, _ = relocation_null(
            s, row, data, summary.delta_wga, summary.wga_after, max_draws, rng, n_atoms, given
        )
        out[row.latents] = Beyond(given.names, summary.delta_wga, summary.wga_after, p)
    return out
