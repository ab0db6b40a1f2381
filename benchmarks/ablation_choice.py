"""Which edit should the audit use by default? Zero, mean, resampling, or the larger of zero
and mean — measured on worlds where the right answer is known.

    PYTHONPATH=. python benchmarks/ablation_choice.py [--seeds 0,1,2,3,4] [--null-seeds 20]
                                                     [--demo DIR ...] [--json FILE]

Edits of a concept's latents ``S`` (``x' = x + Σ_j (v_ij − z_ij) u_j``, reconstruction error kept):

* ``zero``: ``v = 0`` — removes the concept where it is present;
* ``mean``: ``v = E[z_j]`` over the audited rows — every row gets the concept's typical value;
* ``resample``: ``v_i = z_{π(i)}`` for one seeded random permutation ``π`` of the audited rows
  (every concept of a run uses the same donors) — every row gets another row's value;
* ``max``: per concept the larger ΔWGA of ``zero`` and ``mean``, with that edit's interval and
  p-value (the p-value is valid for the maximum: both edits' null draws share the relocations,
  so the maximum's null statistic is the larger ``WGA(x')`` minus the same ``WGA(x^π)``).

Worlds (``tests/fairness/planted.py``; 4 000 samples each; the gate of ``examples/gate.yaml``):
``presence`` — the classifier reads "blond hair" as evidence for the other class, so its
presence hurts the worst group; ``absence`` — the classifier reads the concept's *absence* as
evidence for the other class, so the worst group is the one without it; ``null`` — the same data
with a classifier that ignores the concept and leans on many group-independent ones (20 seeds,
2 000 samples: small groups, so chance effects ≥ min_dwga are common). ``--demo DIR`` adds the
output of ``msae-audit demo --out DIR`` (planted concept "red"; the audit's own test split).

Per world and edit: how often the planted concept is ranked first and flagged, how often any
other concept is flagged, and the planted concept's mean ΔWGA.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from audit.fairness import AuditSettings, GateConfig, run_audit
from audit.fairness.gate import load_gate
from audit.fairness.reliance import (
    NULL_STREAM,
    Columns,
    pair_summary,
    relocation_null,
    row_interval,
    row_margins,
    row_rng,
)
from audit.fairness.stages.context import prepare
from audit.fairness.stages.scan import scan_stage
from audit.fairness.stats import bh_qvalues, null_draws_for_family, pair_counts
from audit.store import EmbeddingStore

ROOT = Path(__file__).resolve().parents[1]
EDITS = ("zero", "mean", "resample", "max")


@dataclass(frozen=True)
class Row:
    """One listed concept under one edit."""

    latents: tuple[int, ...]
    name: str | None
    tested: bool
    delta_wga: float
    ci: tuple[float, float]
    p: float
    q: float | None = None
    flagged: bool = False


@dataclass(frozen=True)
class Inputs:
    store: Any
    labels: Any
    sae: Any
    bank: Any
    head: Any
    target: str
    spurious: str
    planted: str
    seed: int


def _memory_store(x: np.ndarray) -> EmbeddingStore:
    return EmbeddingStore(Path("planted.npy"), {"dim": x.shape[1]}, [x])


def planted_inputs(kind: str, seed: int) -> Inputs:
    sys.path.insert(0, str(ROOT))
    from tests.fairness.planted import ROLE_NAMES, planted_bias_world

    if kind == "null":
        world = planted_bias_world(
            n_samples=2000, seed=100 + seed, bias=False, background_scale=1.0
        )
    else:
        world = planted_bias_world(n_samples=4000, seed=seed, shortcut=kind)
    return Inputs(
        _memory_store(world.embeddings), world.labels, world.sae, world.bank, world.head,
        "Male", "Blond_Hair", ROLE_NAMES["spurious"], seed,
    )  # fmt: skip


def demo_inputs(folder: Path) -> Inputs:
    from audit.fairness.inputs import load_inputs

    store, labels, sae, bank, head, _ = load_inputs(
        folder / "store", None, folder / "sae", folder / "concept_banks" / "demo.yaml",
        folder / "head.npz", "raw",
    )  # fmt: skip
    seed = int(json.loads((folder / "audit.json").read_text())["seed"])  # the demo's seed
    return Inputs(store, labels, sae, bank, head, "is_circle", "is_red", "red", seed)


# ------------------------------------------------------------------------------------------
# The edits
# ------------------------------------------------------------------------------------------


def audit_rows(inp: Inputs, ablation: str, gate: GateConfig) -> list[Row]:
    """zero and mean: the audit itself."""
    settings = AuditSettings(inp.target, inp.spurious, seed=inp.seed, ablation=ablation,
                             split="test" if "split" in inp.labels.columns else "auto")  # fmt: skip
    result, _ = run_audit(inp.store, inp.labels, inp.sae, inp.bank, inp.head, settings, gate)
    return [
        Row(c.latents, c.name, c.tested, c.delta_wga, c.ci, 1.0 if c.p is None else c.p, c.q,
            c.flagged)
        for c in result.concepts
    ]  # fmt: skip


def resample_rows(inp: Inputs, gate: GateConfig) -> list[Row]:
    """Every row's concept replaced by a random other row's, pair counts, CI, null, BH."""
    settings = AuditSettings(inp.target, inp.spurious, seed=inp.seed,
                             split="test" if "split" in inp.labels.columns else "auto")  # fmt: skip
    ctx = prepare(inp.store, inp.labels, inp.sae, inp.bank, inp.head, settings, gate)
    sc = scan_stage(ctx)
    cells, s = ctx.cells, sc.setting
    n = ctx.space.rows.count
    donor = np.random.default_rng(np.random.SeedSequence([inp.seed, 7])).permutation(n)
    columns = Columns().with_latents(
        ctx.space, ctx.sae, set(range(ctx.sae.n_latents)), ctx.effect.projections
    )
    before_ok = (s.base.margin > 0) == (cells.y == 1)
    tested = [r for r in sc.rows if r.tested]
    max_draws = null_draws_for_family(len(tested), gate.max_q, settings.null_min_draws)
    found = []
    for r in sc.rows:
        data = columns.of(r)
        after = row_margins(s, r, data, data.z[donor] - data.z)
        pairs = pair_counts(before_ok, (after > 0) == (cells.y == 1), cells.cell, cells.n_cells)
        summary = pair_summary(pairs, cells)
        p = 1.0
        if r.tested and summary.delta_wga > 0:
            p, _, _ = relocation_null(
                s, r, data, summary.delta_wga, summary.wga_after, max_draws,
                row_rng(inp.seed, NULL_STREAM, r), settings.null_atoms,
            )  # fmt: skip
        ci = row_interval(pairs, gate.bootstrap_samples, inp.seed, r)
        found.append(Row(r.latents, r.name, r.tested, summary.delta_wga, ci, p))
    return _judged(found, gate, settings.unnamed_top)


def max_rows(zero: list[Row], mean: list[Row], gate: GateConfig) -> list[Row]:
    by_key = {r.latents: r for r in zero}
    for r in mean:
        if r.latents not in by_key or r.delta_wga > by_key[r.latents].delta_wga:
            by_key[r.latents] = r
    return _judged(list(by_key.values()), gate, 10)


def _judged(rows: list[Row], gate: GateConfig, unnamed_top: int) -> list[Row]:
    """BH over the tested rows, the flag rule, the audit's listing and ranking."""
    tested = [r for r in rows if r.tested]
    q = bh_qvalues(np.array([r.p for r in tested])) if tested else []
    qs = {r.latents: float(v) for r, v in zip(tested, q, strict=True)}
    untested = sorted((r for r in rows if not r.tested and r.delta_wga > 0),
                      key=lambda r: (-r.delta_wga, r.latents[0]))[:unnamed_top]  # fmt: skip
    out = []
    for r in [*tested, *untested]:
        rq = qs.get(r.latents)
        flag = (r.tested and r.delta_wga >= gate.min_dwga and r.ci[0] > 0 and rq is not None
                and rq <= gate.max_q)  # fmt: skip
        out.append(Row(r.latents, r.name, r.tested, r.delta_wga, r.ci, r.p, rq, bool(flag)))
    key = lambda r: (-round(r.delta_wga, 9), -round(r.ci[0], 9), 1.0 if r.q is None else r.q,  # noqa: E731
                     r.latents[0])  # fmt: skip
    return sorted(out, key=key)


def all_edits(inp: Inputs, gate: GateConfig) -> dict[str, list[Row]]:
    zero, mean = audit_rows(inp, "zero", gate), audit_rows(inp, "mean", gate)
    return {
        "zero": zero,
        "mean": mean,
        "resample": resample_rows(inp, gate),
        "max": max_rows(zero, mean, gate),
    }


# ------------------------------------------------------------------------------------------
# Scoring
# ------------------------------------------------------------------------------------------


def score(rows: list[Row], planted: str) -> dict[str, Any]:
    names = [r.name for r in rows]
    hit = next((r for r in rows if r.name == planted), None)
    return {
        "rank": names.index(planted) + 1 if hit else None,
        "flagged": bool(hit and hit.flagged),
        "delta_wga": hit.delta_wga if hit else None,
        "others_flagged": [r.name for r in rows if r.flagged and r.name != planted],
    }


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    deltas = [r["delta_wga"] for r in runs if r["delta_wga"] is not None]
    return {
        "runs": len(runs),
        "first_and_flagged": sum(r["rank"] == 1 and r["flagged"] for r in runs),
        "flagged": sum(r["flagged"] for r in runs),
        "runs_with_other_flags": sum(bool(r["others_flagged"]) for r in runs),
        "runs_with_any_flag": sum(r["flagged"] or bool(r["others_flagged"]) for r in runs),
        "mean_delta_wga": round(float(np.mean(deltas)), 4) if deltas else None,
        "ranks": [r["rank"] for r in runs],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", default="0,1,2,3,4")
    ap.add_argument("--null-seeds", type=int, default=20)
    ap.add_argument("--demo", type=Path, nargs="*", default=[])
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    gate = load_gate(ROOT / "examples" / "gate.yaml")
    seeds = [int(s) for s in args.seeds.split(",")]
    worlds: dict[str, list[Inputs]] = {
        "presence": [planted_inputs("presence", s) for s in seeds],
        "absence": [planted_inputs("absence", s) for s in seeds],
        "null": [planted_inputs("null", s) for s in range(args.null_seeds)],
    }
    if args.demo:
        worlds["demo"] = [demo_inputs(d) for d in args.demo]
    table: dict[str, dict[str, Any]] = {}
    for world, inputs in worlds.items():
        runs: dict[str, list[dict[str, Any]]] = {e: [] for e in EDITS}
        for inp in inputs:
            for edit, rows in all_edits(inp, gate).items():
                runs[edit].append(score(rows, inp.planted))
        table[world] = {e: summarise(r) for e, r in runs.items()}
        for e, s in table[world].items():
            print(f"{world:9s} {e:9s} {json.dumps(s)}", flush=True)
    if args.json:
        args.json.write_text(json.dumps(table, indent=2) + "\n")


if __name__ == "__main__":
    main()
