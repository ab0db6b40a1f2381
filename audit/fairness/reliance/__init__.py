"""Concept reliance: what happens to the worst group when a concept is ablated.

* :mod:`.rows` — which latents are ablated and reported together (named groups, single latents);
* :mod:`.scan` — pass 1: every latent's flips from one pass over the rows;
* :mod:`.columns` — pass 2: per-sample activations of the latents that need them;
* :mod:`.effects` — one concept's edit: pair counts, ΔWGA, its bootstrap CI, steering, examples;
* :mod:`.null` — the relocation null and its Monte-Carlo p-value;
* :mod:`.beyond` — a concept's effect with the stronger flagged concepts' edits applied first.

The edit itself and how each classifier kind responds to it: :mod:`audit.fairness.edits`.
"""

from audit.fairness.reliance.beyond import (
    Beyond,
    Given,
    beyond_record,
    given_edits,
)
from audit.fairness.reliance.columns import Columns, RowData, extract_columns
from audit.fairness.reliance.effects import (
    NULL_STREAM,
    EditSetting,
    PairSummary,
    ablation_coefficients,
    bootstrap_ci,
    cell_accuracies,
    dose_response,
    exact_pairs,
    most_activating,
    pair_summary,
    row_interval,
    row_margins,
    row_rng,
    top_examples,
)
from audit.fairness.reliance.null import (
    beyond_tests,
    class_atoms,
    relocation_null,
    relocation_success_counts,
)
from audit.fairness.reliance.rows import ConceptRow, build_concept_rows
from audit.fairness.reliance.scan import Scan, ablation_values, scan_latents

__all__ = [
    "NULL_STREAM",
    "Beyond",
    "Columns",
    "ConceptRow",
    "EditSetting",
    "Given",
    "PairSummary",
    "RowData",
    "Scan",
    "ablation_coefficients",
    "ablation_values",
    "beyond_record",
    "beyond_tests",
    "bootstrap_ci",
    "build_concept_rows",
    "cell_accuracies",
    "class_atoms",
    "dose_response",
    "exact_pairs",
    "extract_columns",
    "given_edits",
    "most_activating",
    "pair_summary",
    "relocation_null",
    "relocation_success_counts",
    "row_interval",
    "row_margins",
    "row_rng",
    "scan_latents",
    "top_examples",
]
