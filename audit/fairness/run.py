"""The audit orchestrator: inputs in, one result dictionary (the audit JSON) out.

:func:`run_audit` works on loaded objects; :func:`audit_files` takes paths, runs the audit and
writes every report (JSON, HTML, JUnit, Markdown) — the one call a script or the demo needs::

    from audit.fairness import audit_files
    outcome = audit_files(
        "store/", sae="sae/", bank="concept_banks/demo.yaml", classifier="head.npz",
        labels="labels.csv", target="Male", spurious="Blond_Hair", out_dir="reports/demo",
        extra={"demo": {"planted_concept": "blond hair"}},
    )
    outcome.exit_code   # 0 pass, 1 a gate failed, 3 integrity failure
"""

from __future__ import annotations

import hashlib
import math
import os
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from audit import __version__
from audit.concepts import ConceptBank, load_bank
from audit.errors import InputError
from audit.fairness import reliance as rl
from audit.fairness.classifiers import (
    Classifier,
    file_sha256,
    fit_probe,
    load_classifier,
)
from audit.fairness.gate import GateConfig, evaluate_checks, flag_concepts, load_gate, verdict_of
from audit.fairness.groups import Cells, group_report
from audit.fairness.inputs import build_cells, select_rows, subset_cells
from audit.fairness.stats import bh_qvalues, null_draws_for_family
from audit.sae import SparseAutoencoder, load_sae, sae_fingerprint
from audit.store import EmbeddingStore, open_store

SCHEMA = "msae-audit/audit"
SCHEMA_VERSION = 1
#: Keys of the audit JSON that ``extra`` may not overwrite.
RESERVED_KEYS = frozenset(
    {
        "schema", "version", "verdict", "exit_code", "groups", "attribute_groups", "concepts",
        "checks", "worst_group_accuracy", "worst_group", "accuracy", "accuracy_gap",
        "equalized_odds_difference", "demographic_parity_difference", "integrity", "inputs",
        "settings", "tool", "seed", "family", "dose_response", "examples", "gate",
        "flagged_concepts", "concepts_computed", "data", "notes", "error", "empty_groups",
    }
)  # fmt: skip
DECIMALS = 6


@dataclass
class AuditSettings:
    """Everything that changes the numbers (all of it is written to the JSON)."""

    target: str
    spurious: str
    seed: int = 0
    ablation: str = "zero"  # zero | mean
    split: str = "auto"
    classifier_input: str = "raw"
    device: str = "auto"
    chunk_rows: int = 4096
    null_rows: int = 200  # tested concepts (largest ΔWGA > 0) given a Monte-Carlo p-value
    null_min_draws: int = 1000
    null_atoms: int = 16  # quantile atoms of the relocation null (non-linear / L2 heads)
    shortlist: int = 32  # rows evaluated exactly by decode-and-rerun (other classifiers)
    unnamed_top: int = 10  # unnamed latents listed for discovery
    dose_top: int = 3
    examples: int = 6
    integrity_rows: int = 8192
    probe_c: float = 1.0


@dataclass
class AuditOutcome:
    result: dict
    exit_code: int
    paths: dict[str, Path] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)


# ------------------------------------------------------------------------------------------
# Canonical JSON
# ------------------------------------------------------------------------------------------


def canonical(obj: Any) -> Any:
    """Plain JSON types, floats rounded to 6 decimals (−0 → 0, NaN/inf → null)."""
    if isinstance(obj, dict):
        return {str(k): canonical(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [canonical(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return [canonical(v) for v in obj.tolist()]
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        value = float(obj)
        if not math.isfinite(value):
            return None
        value = round(value, DECIMALS)
        return 0.0 if value == 0 else value
    if obj is None or isinstance(obj, str):
        return obj
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot write {type(obj).__name__} to the audit JSON")


def dumps(result: dict) -> str:
    import json

    return (
        json.dumps(canonical(result), indent=2, sort_keys=True, ensure_ascii=False, allow_nan=False)
        + "\n"
    )


# ------------------------------------------------------------------------------------------
# Provenance
# ------------------------------------------------------------------------------------------


def store_sha256(store: EmbeddingStore) -> str:
    """sha256 of the embedding file (a store: of its shard files' hashes, in order)."""
    p = Path(store.path)
    if p.is_file():
        return file_sha256(p)
    files = [s.filename for s in store.shards if getattr(s, "filename", None)]
    digest = hashlib.sha256()
    for f in files:
        digest.update(file_sha256(f).encode())
    return "sha256:" + digest.hexdigest()


def tool_versions() -> dict[str, str]:
    import sklearn

    return {
        "msae_audit": __version__,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "torch": torch.__version__.split("+")[0],
        "scikit_learn": sklearn.__version__,
    }


# ------------------------------------------------------------------------------------------
# The audit
# ------------------------------------------------------------------------------------------


def _rows_view(store: EmbeddingStore, audit: np.ndarray) -> rl.Rows:
    contiguous = audit.size > 0 and audit[-1] - audit[0] + 1 == audit.size
    first = int(audit[0]) if audit.size else 0

    def read_block(lo: int, hi: int) -> np.ndarray:
        if contiguous:
            return store.read(first + lo, first + hi)
        return store.take(audit[lo:hi])

    def take(positions: np.ndarray) -> np.ndarray:
        return store.take(audit[np.asarray(positions, dtype=np.int64)])

    return rl.Rows(read_block, take, int(audit.size))


def _integrity(eng: rl.Engine, settings: AuditSettings) -> dict:
    """Mean cosine(x, x̂) and prediction agreement on x̂ vs x, on a seeded sample of rows."""
    n = eng.rows.count
    rng = np.random.default_rng(np.random.SeedSequence([settings.seed, 3]))
    positions = (
        np.arange(n)
        if n <= settings.integrity_rows
        else np.sort(rng.choice(n, settings.integrity_rows, replace=False))
    )
    cos_sum, agree = 0.0, 0
    for lo in range(0, positions.size, eng.chunk):
        x = eng.x(positions[lo : lo + eng.chunk])
        with torch.no_grad():
            x_hat = eng.sae.decode(eng.sae.encode(x))
            cos = torch.nn.functional.cosine_similarity(x, x_hat, dim=1)
            cos_sum += float(cos.double().sum())
            agree += int(
                ((eng.classifier.margin(x) > 0) == (eng.classifier.margin(x_hat) > 0)).sum()
            )
    rows = max(1, positions.size)
    return {
        "sae_cosine": cos_sum / rows,
        "classifier_agreement": agree / rows,
        "rows": int(positions.size),
    }


def _base_margins(eng: rl.Engine) -> np.ndarray:
    out = np.empty(eng.rows.count)
    for lo, block in eng.rows.chunks(eng.chunk):
        with torch.no_grad():
            out[lo : lo + len(block)] = eng.classifier.margin(eng.tensor(block)).cpu().numpy()
    return out


class _Activations:
    """Per-sample activations of the latents that need them (a column cache over pass 2)."""

    def __init__(self, eng: rl.Engine) -> None:
        self.eng = eng
        self.where: dict[int, int] = {}
        self.z = np.zeros((eng.rows.count, 0), dtype=np.float32)
        self.xu: np.ndarray | None = None

    def ensure(self, latents: set[int], tick: Callable[[int], None] | None = None) -> None:
        missing = sorted(set(latents) - set(self.where))
        if not missing and self.where:
            return
        z, xu = rl.extract_columns(self.eng, missing, tick)
        offset = self.z.shape[1]
        self.where.update({j: offset + i for i, j in enumerate(missing)})
        self.z = np.concatenate([self.z, z], axis=1)
        if xu is not None:
            self.xu = xu if self.xu is None else np.concatenate([self.xu, xu], axis=1)

    def of(self, row: rl.ConceptRow) -> rl.RowData:
        idx = [self.where[j] for j in row.latents]
        return rl.RowData(self.z[:, idx], None if self.xu is None else self.xu[:, idx])


class _AuditRun:
    """One audit, step by step; each method fills part of ``self.result``."""

    def __init__(
        self,
        store: EmbeddingStore,
        labels: pd.DataFrame,
        sae: SparseAutoencoder,
        bank: ConceptBank,
        settings: AuditSettings,
        gate: GateConfig,
        progress: Callable[[str, int, int], None] | None,
    ) -> None:
        self.store, self.labels, self.sae, self.bank = store, labels, sae, bank
        self.settings, self.gate, self.progress = settings, gate, progress
        self.timings: dict[str, float] = {}
        self._clock = time.perf_counter()
        self.result: dict[str, Any] = {}
        self.pairs: dict[tuple[int, ...], np.ndarray] = {}
        self.summaries: dict[tuple[int, ...], dict] = {}
        self.afters: dict[tuple[int, ...], np.ndarray] = {}
        self.pvalues: dict[tuple[int, ...], float] = {}
        self.nulls: dict[tuple[int, ...], tuple[int, tuple[float, float]]] = {}

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.timings[name] = self.timings.get(name, 0.0) + now - self._clock
        self._clock = now

    def tick(self, stage: str, total: int) -> Callable[[int], None] | None:
        return _tick(self.progress, stage, total)

    # -- inputs ------------------------------------------------------------------------------
    def prepare(self, classifier: Classifier | str) -> None:
        """Validate inputs, choose the rows, fit the probe if asked, build the engine."""
        from audit.device import resolve_device

        settings, store = self.settings, self.store
        if settings.ablation not in rl.ABLATIONS:
            raise InputError(f"--ablation must be zero or mean, got {settings.ablation!r}")
        if len(self.labels) != store.count:
            raise InputError(
                f"labels have {len(self.labels)} rows but the embeddings have {store.count}"
            )
        if self.sae.d_in != store.dim:
            raise InputError(
                f"the SAE expects {self.sae.d_in}-dimensional embeddings, the store has {store.dim}"
            )
        self.bank.check_sae(sae_fingerprint(self.sae), n_latents=self.sae.n_latents)
        device = resolve_device(settings.device)
        cells_all = build_cells(self.labels, settings.target, settings.spurious)
        probe = isinstance(classifier, str)
        if probe and classifier != "probe":
            raise InputError(f"--classifier must be a file or 'probe', got {classifier!r}")
        self.selection = select_rows(self.labels, cells_all, settings.split, probe, settings.seed)
        if self.selection.audit.size == 0:
            raise InputError("no rows to audit")
        if isinstance(classifier, str):
            train = self.selection.train
            assert train is not None
            classifier = fit_probe(
                store.take(train), cells_all.y[train], settings.classifier_input,
                settings.seed, settings.probe_c,
            )  # fmt: skip
            self.classifier_info: dict[str, Any] = {
                "kind": "probe",
                "input": settings.classifier_input,
                "train_rows": int(train.size),
                "c": settings.probe_c,
                "weight_norm": float(classifier.weight.norm()),
            }
        else:
            self.classifier_info = classifier.describe()
        self.cells = subset_cells(cells_all, self.selection.audit)
        self.eng = rl.Engine(
            self.sae.to(device).eval(), classifier.to(device),
            _rows_view(store, self.selection.audit), self.cells, device, settings.chunk_rows,
        )  # fmt: skip
        self.activations = _Activations(self.eng)
        self.lap("inputs")

    def header(self, provenance: dict | None, extra: dict | None) -> None:
        settings, cells = self.settings, self.cells
        provenance = provenance or {}
        self.result = {
            "schema": SCHEMA,
            "version": SCHEMA_VERSION,
            "tool": tool_versions(),
            "seed": settings.seed,
            "inputs": {
                **provenance,
                "classifier": {**provenance.get("classifier", {}), **self.classifier_info},
            },
            "settings": _settings_json(settings, self.gate),
            "gate": self.gate.describe(),
            "data": {
                "rows_total": int(self.store.count),
                "rows_audited": int(self.selection.audit.size),
                "split": self.selection.source,
                "target": settings.target,
                "spurious": settings.spurious,
                "positive_class": cells.target_values[1],
                "classifier_kind": self.eng.kind,
            },
            "notes": [],
            **(extra or {}),
        }

    # -- integrity ---------------------------------------------------------------------------
    def integrity_ok(self) -> bool:
        """Measure the integrity check; on failure fill the groups and the error, refuse the rest."""
        gate = self.gate
        integrity = _integrity(self.eng, self.settings)
        self.result["integrity"] = {
            **integrity,
            "min_cosine": gate.min_cosine,
            "min_agreement": gate.min_agreement,
        }
        self.lap("integrity")
        if (
            integrity["sae_cosine"] >= gate.min_cosine
            and integrity["classifier_agreement"] >= gate.min_agreement
        ):
            return True
        self.eng.margin = _base_margins(self.eng)
        self.result.update(group_report(self.cells, (self.eng.margin > 0).astype(np.int8)))
        self.result.update(
            concepts=[], concepts_computed=False, family=None, dose_response=[], examples=[]
        )
        self.result["error"] = (
            f"integrity check failed: mean cosine(x, x̂) = {integrity['sae_cosine']:.3f} "
            f"(min {gate.min_cosine}), classifier agreement on x̂ = "
            f"{integrity['classifier_agreement']:.3f} (min {gate.min_agreement}); the SAE does not "
            "explain what this classifier uses on this data, so no concept is attributed"
        )
        return False

    # -- pass 1 ------------------------------------------------------------------------------
    def scan(self) -> None:
        """Ablate every latent and name group; group metrics from the base predictions."""
        eng, n = self.eng, self.sae.n_latents
        if self.settings.ablation == "mean":
            eng.values = rl.mean_activations(eng, self.tick("mean activations", eng.rows.count))
            self.lap("mean activations")
        self.rows = rl.build_concept_rows(self.bank, n)
        groups = [r.latents for r in self.rows if len(r.latents) > 1]
        column = {g: n + i for i, g in enumerate(groups)}
        self.scan_result = rl.scan_latents(
            eng, groups, self.tick("ablate every latent", eng.rows.count)
        )
        self.lap("scan")
        self.result.update(group_report(self.cells, (eng.margin > 0).astype(np.int8)))
        for r in self.rows:
            self.set_pairs(r, self.scan_result.pairs(column.get(r.latents, r.latent)))
        self.tested = [r for r in self.rows if r.tested]

    def set_pairs(self, row: rl.ConceptRow, pairs: np.ndarray) -> None:
        self.pairs[row.latents] = pairs
        self.summaries[row.latents] = rl.pair_summary(pairs, self.cells)

    def delta(self, row: rl.ConceptRow) -> float:
        return self.summaries[row.latents]["delta_wga"]

    def by_delta(self, rows: list[rl.ConceptRow]) -> list[rl.ConceptRow]:
        return sorted(rows, key=lambda r: (-self.delta(r), r.latent))

    # -- which rows are reported, with exact numbers -----------------------------------------
    def choose_rows(self) -> None:
        """Every named concept (linear heads) or a screened shortlist (other classifiers),
        plus the unnamed latents with the largest ΔWGA > 0."""
        settings = self.settings
        untested = [r for r in self.rows if not r.tested]
        if self.eng.exact_all:
            self.listed_tested = self.tested
            self.listed_untested = [r for r in self.by_delta(untested) if self.delta(r) > 0][
                : settings.unnamed_top
            ]
        else:
            self.listed_tested = self.by_delta(self.tested)[: settings.shortlist]
            self.listed_untested = self.by_delta(untested)[: settings.unnamed_top]
            self.result["notes"].append(
                f"non-linear classifier: {len(self.listed_tested)} of {len(self.tested)} named "
                "concepts shortlisted by a first-order screen and evaluated exactly by "
                "decode-and-rerun; the others count in the BH family with p = 1"
            )
        # Per-sample activations: exact reruns, the null's candidates, name groups, the top row.
        listed = self.listed_tested + self.listed_untested
        needs = set(listed) if not self.eng.exact_all else set()
        needs |= {r for r in listed if len(r.latents) > 1}
        if self.tested:
            needs.add(self.by_delta(self.tested)[0])
        if self.eng.exact_all:
            needs |= set(self.null_candidates())
        self.activations.ensure(
            {j for r in needs for j in r.latents}, self.tick("activations", self.eng.rows.count)
        )
        self.lap("activations")
        if not self.eng.exact_all:
            for r in listed:
                pairs, self.afters[r.latents] = rl.exact_pairs(self.eng, r, self.activations.of(r))
                self.set_pairs(r, pairs)
            self.listed_tested = self.by_delta(self.listed_tested)
            self.listed_untested = [
                r for r in self.by_delta(self.listed_untested) if self.delta(r) > 0
            ]
            self.lap("rerun shortlist")

    def null_candidates(self) -> list[rl.ConceptRow]:
        pool = self.listed_tested
        return [r for r in self.by_delta(pool) if self.delta(r) > 0][: self.settings.null_rows]

    # -- statistics --------------------------------------------------------------------------
    def null_pvalues(self) -> None:
        """The relocation null for the top named concepts with ΔWGA > 0 (p = 1 for the rest, a
        valid and conservative choice); BH over every validated name."""
        self.family = len(self.tested)
        self.max_draws = null_draws_for_family(
            self.family, self.gate.max_q, self.settings.null_min_draws
        )
        candidates = self.null_candidates()
        tick = self.tick("null", len(candidates))
        for r in candidates:
            s = self.summaries[r.latents]
            p, used, band = rl.relocation_null(
                self.eng, r, self.activations.of(r), s["delta_wga"], s["wga_after"],
                self.max_draws, rl.row_rng(self.settings.seed, 2, r), self.settings.null_atoms,
            )  # fmt: skip
            self.pvalues[r.latents] = p
            self.nulls[r.latents] = (used, band)
            if tick:
                tick(1)
        self.with_null = len(candidates)
        all_p = np.array([self.pvalues.get(r.latents, 1.0) for r in self.tested])
        self.qvalues = dict(zip([r.latents for r in self.tested], bh_qvalues(all_p), strict=True))
        self.lap("null")

    def concept_entries(self) -> None:
        """One JSON row per reported concept: ΔWGA with its bootstrap CI, p, q, per-group
        effects and activations; then flags and ranks."""
        gate, cells = self.gate, self.cells
        boot_seed = self.settings.seed if gate.bootstrap_seed is None else gate.bootstrap_seed
        counts = np.bincount(cells.cell, minlength=cells.n_cells)
        present = [c for c in range(cells.n_cells) if counts[c]]
        concepts = []
        for r in self.listed_tested + self.listed_untested:
            ci = rl.bootstrap_ci(
                self.pairs[r.latents], gate.bootstrap_samples, rl.row_rng(boot_seed, 1, r)
            )
            act_sum = self.scan_result.act_sum[:, list(r.latents)].sum(1)
            rate = self._activation_rate(r, counts)
            used, band = self.nulls.get(r.latents, (0, None))
            concepts.append(
                {
                    "latent": r.latent,
                    "latents": list(r.latents),
                    "name": r.name if r.tested else None,
                    "label": r.label,
                    "tested": r.tested,
                    "closest": r.closest,
                    "score": r.score,
                    **self.summaries[r.latents],
                    "ci": list(ci),
                    "p": self.pvalues.get(r.latents, 1.0) if r.tested else None,
                    "q": float(self.qvalues[r.latents]) if r.tested else None,
                    "null_draws": used,
                    "null_band": list(band) if band is not None else None,
                    "mean_activation": {
                        cells.cell_name(c): act_sum[c] / counts[c] for c in present
                    },
                    "activation_rate": None
                    if rate is None
                    else {cells.cell_name(c): rate[c] for c in present},
                    "exact": True,
                }
            )
        self.lap("bootstrap")
        flag_concepts(concepts, gate)
        concepts.sort(
            key=lambda c: (
                -round(c["delta_wga"], 9),
                -round(c["ci"][0], 9),
                1.0 if c["q"] is None else c["q"],
                c["latent"],
            )
        )
        for i, c in enumerate(concepts, 1):
            c["rank"] = i
        self.result["concepts"] = concepts
        self.result["concepts_computed"] = True
        self.result["family"] = {
            "size": self.family,
            "with_null": self.with_null,
            "null_draws_max": self.max_draws,
            "min_attainable_p": 1.0 / (self.max_draws + 1),
            "null": "relocation within target class (see README)",
            "ablation": self.settings.ablation,
            "bootstrap_samples": gate.bootstrap_samples,
            "bootstrap_seed": boot_seed,
        }

    def _activation_rate(self, row: rl.ConceptRow, counts: np.ndarray) -> np.ndarray | None:
        if len(row.latents) == 1:
            return self.scan_result.act_count[:, row.latent] / np.maximum(counts, 1)
        if not set(row.latents) <= set(self.activations.where):
            return None
        active = (self.activations.of(row).z > 0).any(1).astype(float)
        n_cells = self.cells.n_cells
        return np.bincount(self.cells.cell, weights=active, minlength=n_cells) / np.maximum(
            counts, 1
        )

    # -- dose-response and examples ----------------------------------------------------------
    def focus(self) -> None:
        """Steering curves and example rows for the top flagged concepts (else the top named)."""
        concepts = self.result["concepts"]
        flagged = [c for c in concepts if c["flagged"]][: self.settings.dose_top]
        focus = flagged or [c for c in concepts if c["tested"]][:1]
        self.activations.ensure({j for c in focus for j in c["latents"]})
        by_key = {r.latents: r for r in self.rows}
        worst_cell = _worst_cell(self.result, self.cells)
        doses, examples = [], []
        for c in focus:
            r = by_key[tuple(c["latents"])]
            data = self.activations.of(r)
            head = {"label": c["label"], "latents": c["latents"]}
            curve = rl.dose_response(self.eng, r, data)
            doses.append({**head, "name": c["name"], "flagged": c["flagged"], **curve})
            after = self.afters.get(r.latents)
            if after is None:
                after = rl.row_margins(
                    self.eng, r, data, rl.ablation_coefficients(self.eng, r, data)
                )
            top, flips = rl.top_examples(self.eng, data, after, worst_cell, self.settings.examples)
            examples.append(
                {
                    **head,
                    "top_activating": [self._example(i, data, after) for i in top],
                    "flipped": [self._example(i, data, after) for i in flips],
                }
            )
        self.result["dose_response"] = doses
        self.result["examples"] = examples
        self.lap("dose-response")

    def _example(self, pos: int, data: rl.RowData, after: np.ndarray) -> dict:
        row = int(self.selection.audit[pos])
        out: dict[str, Any] = {
            "row": row,
            "group": self.cells.cell_name(int(self.cells.cell[pos])),
            "activation": float(data.z[pos].sum()),
            "margin_before": float(self.eng.margin[pos]),
            "margin_after": float(after[pos]),
        }
        for col in ("id", "path"):
            if col in self.labels.columns:
                out[col] = str(self.labels[col].iloc[row])
        return out


def run_audit(
    store: EmbeddingStore,
    labels: pd.DataFrame,
    sae: SparseAutoencoder,
    bank: ConceptBank,
    classifier: Classifier | str,
    settings: AuditSettings,
    gate: GateConfig | None = None,
    *,
    provenance: dict | None = None,
    extra: dict | None = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> tuple[dict, dict[str, float]]:
    """Run the audit; returns the result dictionary (the audit JSON) and stage timings.

    ``classifier`` is a loaded classifier or ``"probe"``; ``extra`` adds top-level JSON fields
    (e.g. ``{"demo": {"planted_concept": "blond hair"}}``).
    """
    gate = gate or GateConfig()
    _check_extra(extra)
    run = _AuditRun(store, labels, sae, bank, settings, gate, progress)
    run.prepare(classifier)
    run.header(provenance, extra)
    if run.integrity_ok():
        run.scan()
        run.choose_rows()
        run.null_pvalues()
        run.concept_entries()
        run.focus()
    return _finish(run.result, gate), run.timings


def _worst_cell(result: dict, cells: Cells) -> int:
    for c in range(cells.n_cells):
        if cells.cell_name(c) == result["worst_group"]:
            return c
    return 0


def _finish(result: dict, gate: GateConfig) -> dict:
    result["flagged_concepts"] = sum(1 for c in result.get("concepts", []) if c.get("flagged"))
    result["checks"] = evaluate_checks(result, gate)
    result["verdict"], result["exit_code"] = verdict_of(result["checks"])
    return canonical(result)


def _settings_json(settings: AuditSettings, gate: GateConfig) -> dict:
    return {
        "target": settings.target,
        "spurious": settings.spurious,
        "ablation": settings.ablation,
        "split": settings.split,
        "classifier_input": settings.classifier_input,
        "min_dwga": gate.min_dwga,
        "max_q": gate.max_q,
        "allowlist": list(gate.allowlist),
        "min_group_size": gate.min_group_size,
        "bootstrap": {
            "samples": gate.bootstrap_samples,
            "seed": settings.seed if gate.bootstrap_seed is None else gate.bootstrap_seed,
        },
        "null_rows": settings.null_rows,
        "null_min_draws": settings.null_min_draws,
        "null_atoms": settings.null_atoms,
        "shortlist": settings.shortlist,
        "integrity_rows": settings.integrity_rows,
        "dose_alphas": list(rl.DOSE_ALPHAS),
    }


def _check_extra(extra: dict | None) -> None:
    if not extra:
        return
    if not isinstance(extra, dict):
        raise InputError("extra must be a mapping of additional top-level JSON fields")
    clash = sorted(set(extra) & RESERVED_KEYS)
    if clash:
        raise InputError(f"extra fields may not replace audit fields: {', '.join(clash)}")
    canonical(extra)  # raises for values JSON cannot hold


def _tick(
    progress: Callable[[str, int, int], None] | None, stage: str, total: int
) -> Callable[[int], None] | None:
    if progress is None:
        return None
    progress(stage, 0, total)
    done = 0

    def tick(k: int) -> None:
        nonlocal done
        done += k
        progress(stage, done, total)

    return tick


# ------------------------------------------------------------------------------------------
# Paths in, reports out
# ------------------------------------------------------------------------------------------


def load_inputs(
    embeddings: str | os.PathLike[str],
    labels: str | os.PathLike[str] | pd.DataFrame | None,
    sae: str | os.PathLike[str],
    bank: str | os.PathLike[str],
    classifier: str | os.PathLike[str],
    classifier_input: str = "raw",
) -> tuple[EmbeddingStore, pd.DataFrame, SparseAutoencoder, ConceptBank, Classifier | str, dict]:
    """Open every input (one-line :class:`InputError` for anything wrong) and record provenance."""
    if isinstance(labels, pd.DataFrame):
        store = open_store(embeddings)
        if len(labels) != store.count:
            raise InputError(
                f"labels have {len(labels)} rows but the embeddings have {store.count}"
            )
        store.metadata = labels.reset_index(drop=True)
    else:
        store = open_store(embeddings, labels)
    if store.metadata is None:
        raise InputError(f"{embeddings} has no metadata.csv; pass --labels FILE.csv")
    store.check_finite()  # a NaN row is bad input (exit 2), not an integrity failure (exit 3)
    model = load_sae(sae)
    bank_obj = load_bank(bank)
    clf: Classifier | str
    if str(classifier) == "probe":
        clf = "probe"
    else:
        clf = load_classifier(classifier, store.dim, classifier_input)
    if isinstance(labels, pd.DataFrame):
        digest = hashlib.sha256(
            pd.util.hash_pandas_object(store.metadata, index=False).to_numpy().tobytes()
        )
        source = str(labels.attrs.get("source", "a labels table"))
        labels_info = {"path": None, "sha256": "sha256:" + digest.hexdigest(), "source": source}
    else:
        labels_path = Path(labels) if labels is not None else Path(embeddings) / "metadata.csv"
        labels_info = {"path": str(labels_path), "sha256": file_sha256(labels_path)}
    from audit.concepts import resolve_bank

    bank_path = resolve_bank(bank)
    provenance = {
        "embeddings": {
            "path": str(embeddings),
            "sha256": store_sha256(store),
            "rows": store.count,
            "dim": store.dim,
            "model": store.model,
            "pretrained": store.pretrained,
        },
        "labels": labels_info,
        "sae": {
            "path": str(sae),
            "fingerprint": sae_fingerprint(model),
            "arch": model.cfg.arch,
            "d_in": model.d_in,
            "n_latents": model.n_latents,
            "embedding_model": model.cfg.embedding_model,
        },
        "bank": {
            "name": bank_obj.name,
            "path": str(bank_path),
            "sha256": file_sha256(bank_path),
            "latents": len(bank_obj.concepts),
            "validated": len(bank_obj.named(validated_only=True)),
        },
        "classifier": {"kind": "probe"} if clf == "probe" else {},
    }
    return store, store.metadata, model, bank_obj, clf, provenance


def write_reports(result: dict, paths: dict[str, Path | None]) -> dict[str, Path]:
    """Write the JSON (the source of truth) and every report rendered from it."""
    from audit.fileio import write_text
    from audit.report import html, junit, markdown

    written: dict[str, Path] = {}
    if paths.get("json"):
        write_text(paths["json"], dumps(result))
        written["json"] = Path(paths["json"])
    if paths.get("html"):
        write_text(paths["html"], html.render_html(result))
        written["html"] = Path(paths["html"])
    if paths.get("junit"):
        write_text(paths["junit"], junit.render_junit(result))
        written["junit"] = Path(paths["junit"])
    md = None
    if paths.get("markdown"):
        md = markdown.render_markdown(result)
        write_text(paths["markdown"], md)
        written["markdown"] = Path(paths["markdown"])
    summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if summary:
        md = md or markdown.render_markdown(result)
        try:
            with open(summary, "a", encoding="utf-8") as fh:
                fh.write(md + "\n")
            written["step_summary"] = Path(summary)
        except OSError as exc:
            raise InputError(
                f"cannot append to $GITHUB_STEP_SUMMARY ({summary}): {exc.strerror}"
            ) from exc
    return written


def audit_files(
    embeddings: str | os.PathLike[str],
    *,
    sae: str | os.PathLike[str],
    bank: str | os.PathLike[str],
    classifier: str | os.PathLike[str],
    target: str,
    spurious: str,
    labels: str | os.PathLike[str] | pd.DataFrame | None = None,
    out_dir: str | os.PathLike[str] = "reports",
    stem: str = "audit",
    json_path: str | os.PathLike[str] | None = None,
    html_path: str | os.PathLike[str] | None = None,
    junit_path: str | os.PathLike[str] | None = None,
    markdown_path: str | os.PathLike[str] | None = None,
    gate: str | os.PathLike[str] | GateConfig | None = None,
    settings: AuditSettings | None = None,
    extra: dict | None = None,
    progress: Callable[[str, int, int], None] | None = None,
    **overrides: Any,
) -> AuditOutcome:
    """Run an audit from files and write ``<out_dir>/<stem>.json``, ``.html`` and ``.xml``
    (and Markdown when ``markdown_path`` is given or ``$GITHUB_STEP_SUMMARY`` is set).

    ``overrides`` are :class:`AuditSettings` fields (``seed=1``, ``ablation="mean"``, …);
    ``extra`` adds top-level JSON fields, e.g. ``{"demo": {"planted_concept": "blond hair"}}``.
    """
    from audit.concepts import validate_file_name

    validate_file_name(stem, "report name")  # reports stay inside out_dir
    base = settings or AuditSettings(target=target, spurious=spurious)
    settings = replace(base, target=target, spurious=spurious, **overrides)
    gate_cfg = gate if isinstance(gate, GateConfig) else (load_gate(gate) if gate else GateConfig())
    start = time.perf_counter()
    store, frame, model, bank_obj, clf, provenance = load_inputs(
        embeddings, labels, sae, bank, classifier, settings.classifier_input
    )
    load_time = time.perf_counter() - start
    result, timings = run_audit(
        store, frame, model, bank_obj, clf, settings, gate_cfg,
        provenance=provenance, extra=extra, progress=progress,
    )  # fmt: skip
    timings = {"load": load_time, **timings}
    out = Path(out_dir)
    paths = {
        "json": Path(json_path) if json_path else out / f"{stem}.json",
        "html": Path(html_path) if html_path else out / f"{stem}.html",
        "junit": Path(junit_path) if junit_path else out / f"{stem}.xml",
        "markdown": Path(markdown_path) if markdown_path else None,
    }
    start = time.perf_counter()
    written = write_reports(result, paths)
    timings["reports"] = time.perf_counter() - start
    return AuditOutcome(result, int(result["exit_code"]), written, timings)
