"""The audit's settings and the gate's thresholds: every default stated once, here.

:class:`AuditSettings` is what changes the audit's numbers (the command-line options of
``audit`` and ``celeba`` take their defaults and help from it); :class:`GateConfig` is what a
gate file sets (the YAML parser starts from its defaults). Both are written into the audit JSON.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from audit.errors import InputError

ABLATIONS = ("mean", "zero")
SPLITS = ("auto", "all", "train", "valid", "test")
CLASSIFIER_INPUTS = ("raw", "l2")
#: α values of the steering curves (z := α·z): 0, 0.25, …, 3.
DOSE_ALPHAS = tuple(i / 4 for i in range(13))


def _setting(default: Any, help: str) -> Any:
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class AuditSettings:
    """Everything that changes the numbers (all of it is written to the JSON)."""

    target: str
    spurious: str
    seed: int = _setting(0, "Seed for splits, bootstrap and null draws.")
    ablation: str = _setting(
        "mean",
        "mean | zero: the value an ablated latent is set to. mean (its mean over the audited "
        "rows) finds shortcuts on a concept's presence and on its absence; zero finds only "
        "presence (docs/audit-method.md, 'Which edit').",
    )
    split: str = _setting(
        "auto", "auto | all | train | valid | test (auto: the test split when there is one)."
    )
    classifier_input: str = _setting(
        "raw", "raw | l2: whether the classifier expects L2-normalised embeddings."
    )
    device: str = _setting("auto", "auto | cpu | cuda")
    chunk_rows: int = _setting(4096, "Rows per block of every pass over the embeddings.")
    null_rows: int = _setting(
        200, "Tested concepts (largest ΔWGA > 0) given a Monte-Carlo p-value; p = 1 for the rest."
    )
    null_min_draws: int = _setting(1000, "Fewest null draws per concept.")
    null_atoms: int = _setting(
        16, "Quantile atoms of the relocation null (heads other than linear-on-raw)."
    )
    shortlist: int = _setting(
        32, "Named concepts evaluated exactly by decode-and-rerun (non-linear classifiers)."
    )
    unnamed_top: int = _setting(10, "Unnamed latents listed for discovery.")
    dose_top: int = _setting(3, "Flagged concepts given a steering curve and examples.")
    examples: int = _setting(6, "Example rows per concept.")
    integrity_rows: int = _setting(8192, "Rows sampled by the integrity check.")
    probe_c: float = _setting(1.0, "Inverse L2 penalty of the logistic-regression probe.")
    class_names: tuple[str, ...] = _setting(
        (),
        "Names the reports show for label values, COLUMN=VALUE:NAME (e.g. is_circle=1:circle); "
        "groups read 'circle, red' instead of 'is_circle=1, is_red=1'. Default: the label "
        "values as they are.",
    )

    @classmethod
    def help(cls, name: str) -> str:
        return next(f.metadata["help"] for f in fields(cls) if f.name == name)

    @classmethod
    def default(cls, name: str) -> Any:
        return next(f.default for f in fields(cls) if f.name == name)


def parse_class_names(entries: tuple[str, ...] | list[str]) -> dict[str, str]:
    """``COLUMN=VALUE:NAME`` entries (each may hold several, comma-separated) as a mapping
    ``"COLUMN=VALUE" → NAME``.

    >>> parse_class_names(["is_circle=1:circle,is_circle=0:square", "is_red=1:red"])
    {'is_circle=1': 'circle', 'is_circle=0': 'square', 'is_red=1': 'red'}
    """
    names: dict[str, str] = {}
    for entry in entries:
        for item in (part.strip() for part in entry.split(",")):
            key, sep, name = item.rpartition(":")
            column, eq, value = key.partition("=")
            if not (sep and eq and column.strip() and value.strip() and name.strip()):
                raise InputError(
                    f"--class-names entries are COLUMN=VALUE:NAME (e.g. is_circle=1:circle), "
                    f"got {item!r}"
                )
            names[f"{column.strip()}={value.strip()}"] = name.strip()
    return names


@dataclass(frozen=True)
class GateConfig:
    """A gate file: bounds per check, what counts as a flagged concept, the bootstrap, the
    smallest group a check may depend on, whether a run whose gated checks were all skipped
    may pass (``allow_skipped``) and the integrity thresholds."""

    gates: dict[str, dict[str, float]] = field(default_factory=dict)
    min_dwga: float = 0.02
    max_q: float = 0.05
    allowlist: tuple[str, ...] = ()
    bootstrap_samples: int = 1000
    bootstrap_seed: int | None = None  # None: the audit's seed
    min_group_size: int = 0
    allow_skipped: bool = False  # every gated check skipped: exit 0 (verdict still inconclusive)
    min_cosine: float = 0.9
    min_agreement: float = 0.9
    source: str | None = None
    sha256: str | None = None

    def describe(self) -> dict[str, Any]:
        return {
            "path": self.source,
            "sha256": self.sha256,
            "gates": {k: dict(sorted(v.items())) for k, v in sorted(self.gates.items())},
            "concepts": {
                "min_dwga": self.min_dwga,
                "max_q": self.max_q,
                "allowlist": list(self.allowlist),
            },
            "bootstrap": {"samples": self.bootstrap_samples, "seed": self.bootstrap_seed},
            "min_group_size": self.min_group_size,
            "allow_skipped": self.allow_skipped,
            "integrity": {"min_cosine": self.min_cosine, "min_agreement": self.min_agreement},
        }

    def bootstrap_seed_for(self, seed: int) -> int:
        return seed if self.bootstrap_seed is None else self.bootstrap_seed
