"""The gate file: YAML in, a validated :class:`GateConfig` out.

Gate file (YAML, read with a safe loader: plain data, no tags)::

    gates:                       # each check: min and/or max; unknown names are an error (exit 2)
      worst_group_accuracy: {min: 0.80}
      accuracy_gap: {max: 0.10}
      equalized_odds_difference: {max: 0.10}
      flagged_concepts: {max: 0}
    concepts:                    # what counts as a flagged concept
      min_dwga: 0.02
      max_q: 0.05
      allowlist: [beard, man, woman]
    bootstrap: {samples: 1000, seed: 0}
    min_group_size: 100          # a check that depends on a smaller group is skipped, not passed
                                 # (so is one that depends on an empty target × attribute cell)
    allow_skipped: false         # every gated check skipped: verdict inconclusive, exit 1
                                 # (true: exit 0; the verdict stays inconclusive)
    integrity: {min_cosine: 0.9, min_agreement: 0.9}   # optional (these are the defaults)

Anything left out keeps :class:`GateConfig`'s default. How the checks are judged:
:mod:`audit.fairness.checks`.
"""

from __future__ import annotations

import math
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

from audit.errors import InputError
from audit.fairness.checks import (
    CHECKS,
    GROUP_CHECKS,
    INTEGRITY_CHECKS,
    evaluate_checks,
    flag_concepts,
    rejudge,
    verdict_of,
)
from audit.fairness.config import GateConfig
from audit.fileio import read_yaml

__all__ = [
    "CHECKS",
    "GROUP_CHECKS",
    "INTEGRITY_CHECKS",
    "GateConfig",
    "evaluate_checks",
    "flag_concepts",
    "load_gate",
    "parse_gate",
    "rejudge",
    "verdict_of",
]

_TOP_KEYS = ("gates", "concepts", "bootstrap", "min_group_size", "allow_skipped", "integrity")
_SECTION_KEYS = {
    "concepts": ("min_dwga", "max_q", "allowlist"),
    "bootstrap": ("samples", "seed"),
    "integrity": ("min_cosine", "min_agreement"),
}


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InputError(f"{where} must be a number, got {value!r}")
    return float(value)


def _integer(value: Any, where: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InputError(f"{where} must be an integer ≥ {minimum}, got {value!r}")
    return int(value)


def _mapping(value: Any, where: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InputError(f"{where} must be a mapping")
    return value


def _section(data: dict, name: str, where: str) -> dict:
    section = _mapping(data.get(name), f"{where}: '{name}'")
    valid = _SECTION_KEYS[name]
    for key in section:
        if key not in valid:
            raise InputError(f"{where}: unknown key {name}.{key} (valid: {', '.join(valid)})")
    return section


def _bounds(data: dict, where: str) -> dict[str, dict[str, float]]:
    gates = {}
    for name, bounds in _mapping(data.get("gates"), f"{where}: 'gates'").items():
        if name not in CHECKS:
            raise InputError(
                f"{where}: unknown check '{name}' in gates (valid: {', '.join(CHECKS)})"
            )
        bounds = _mapping(bounds, f"{where}: gates.{name}")
        bad = [k for k in bounds if k not in ("min", "max")]
        if bad or not bounds:
            raise InputError(
                f"{where}: gates.{name} needs 'min' and/or 'max' (got {bad or 'nothing'})"
            )
        gates[str(name)] = {k: _number(v, f"{where}: gates.{name}.{k}") for k, v in bounds.items()}
    return gates


def _concept_rules(data: dict, where: str) -> dict[str, Any]:
    concepts = _section(data, "concepts", where)
    values: dict[str, Any] = {}
    if "min_dwga" in concepts:
        values["min_dwga"] = _number(concepts["min_dwga"], f"{where}: concepts.min_dwga")
    if "max_q" in concepts:
        values["max_q"] = _number(concepts["max_q"], f"{where}: concepts.max_q")
        if not 0 < values["max_q"] <= 1:
            raise InputError(f"{where}: concepts.max_q must be in (0, 1]")
    allow = concepts.get("allowlist") or []
    if not isinstance(allow, list) or not all(isinstance(a, (str, int, float)) for a in allow):
        raise InputError(f"{where}: concepts.allowlist must be a list of concept names")
    values["allowlist"] = tuple(str(a) for a in allow)
    return values


def parse_gate(data: Any, where: str = "gate file") -> GateConfig:
    """Validate a parsed gate file; every problem is an :class:`InputError` (exit code 2)."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise InputError(f"{where}: expected a mapping with 'gates', 'concepts', ...")
    unknown = [str(k) for k in data if k not in _TOP_KEYS]
    if unknown:
        raise InputError(f"{where}: unknown key '{unknown[0]}' (valid: {', '.join(_TOP_KEYS)})")
    values: dict[str, Any] = {"gates": _bounds(data, where), **_concept_rules(data, where)}
    boot = _section(data, "bootstrap", where)
    if "samples" in boot:
        values["bootstrap_samples"] = _integer(boot["samples"], f"{where}: bootstrap.samples", 1)
    if "seed" in boot:
        values["bootstrap_seed"] = _integer(boot["seed"], f"{where}: bootstrap.seed", 0)
    if "min_group_size" in data:
        values["min_group_size"] = _integer(data["min_group_size"], f"{where}: min_group_size", 0)
    if "allow_skipped" in data:
        if not isinstance(data["allow_skipped"], bool):
            raise InputError(
                f"{where}: allow_skipped must be true or false, got {data['allow_skipped']!r}"
            )
        values["allow_skipped"] = data["allow_skipped"]
    integrity = _section(data, "integrity", where)
    for key in ("min_cosine", "min_agreement"):
        if key in integrity:
            values[key] = _number(integrity[key], f"{where}: integrity.{key}")
    return GateConfig(**values)


def load_gate(path: str | os.PathLike[str]) -> GateConfig:
    """Read and validate a gate file (safe YAML: no tags, no code)."""
    from audit.fileio import file_sha256

    p = Path(path)
    cfg = parse_gate(read_yaml(p, "gate file"), str(p))
    return replace(cfg, source=str(p), sha256=file_sha256(p))
