"""The CI fairness gate: the gate file, the checks and the verdict (SPEC §8).

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
    integrity: {min_cosine: 0.9, min_agreement: 0.9}   # optional (these are the defaults)

A check without an entry in ``gates`` is reported (status ``info``) but never fails the run.
Exit codes: 0 every gate passes, 1 a gate failed, 3 the integrity check failed (the SAE or the
classifier cannot be trusted on this data, so no concept is attributed).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from audit.errors import EXIT_GATE_FAILED, EXIT_INTEGRITY, EXIT_OK, InputError
from audit.fileio import read_yaml

#: Checks a gate may name. Group-dependent checks are skipped when a group is too small.
GROUP_CHECKS = (
    "worst_group_accuracy",
    "accuracy_gap",
    "equalized_odds_difference",
    "demographic_parity_difference",
    "flagged_concepts",
)
CHECKS = (*GROUP_CHECKS, "accuracy")
#: Integrity checks: always enforced (exit code 3), thresholds from ``integrity:``.
INTEGRITY_CHECKS = {"sae_cosine": "min_cosine", "classifier_agreement": "min_agreement"}
DEFAULT_MIN_COSINE = 0.9
DEFAULT_MIN_AGREEMENT = 0.9
DEFAULT_MIN_DWGA = 0.02
DEFAULT_MAX_Q = 0.05
DEFAULT_BOOTSTRAP = 1000
_TOP_KEYS = ("gates", "concepts", "bootstrap", "min_group_size", "integrity")


@dataclass
class GateConfig:
    gates: dict[str, dict[str, float]] = field(default_factory=dict)
    min_dwga: float = DEFAULT_MIN_DWGA
    max_q: float = DEFAULT_MAX_Q
    allowlist: tuple[str, ...] = ()
    bootstrap_samples: int = DEFAULT_BOOTSTRAP
    bootstrap_seed: int | None = None
    min_group_size: int = 0
    min_cosine: float = DEFAULT_MIN_COSINE
    min_agreement: float = DEFAULT_MIN_AGREEMENT
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
            "integrity": {"min_cosine": self.min_cosine, "min_agreement": self.min_agreement},
        }


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InputError(f"{where} must be a number, got {value!r}")
    return float(value)


def _mapping(value: Any, where: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InputError(f"{where} must be a mapping")
    return value


def parse_gate(data: Any, where: str = "gate file") -> GateConfig:
    """Validate a parsed gate file; every problem is an :class:`InputError` (exit code 2)."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise InputError(f"{where}: expected a mapping with 'gates', 'concepts', ...")
    unknown = [str(k) for k in data if k not in _TOP_KEYS]
    if unknown:
        raise InputError(f"{where}: unknown key '{unknown[0]}' (valid: {', '.join(_TOP_KEYS)})")
    cfg = GateConfig()
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
        cfg.gates[str(name)] = {
            k: _number(v, f"{where}: gates.{name}.{k}") for k, v in bounds.items()
        }
    concepts = _mapping(data.get("concepts"), f"{where}: 'concepts'")
    for key in concepts:
        if key not in ("min_dwga", "max_q", "allowlist"):
            raise InputError(
                f"{where}: unknown key concepts.{key} (valid: min_dwga, max_q, allowlist)"
            )
    if "min_dwga" in concepts:
        cfg.min_dwga = _number(concepts["min_dwga"], f"{where}: concepts.min_dwga")
    if "max_q" in concepts:
        cfg.max_q = _number(concepts["max_q"], f"{where}: concepts.max_q")
        if not 0 < cfg.max_q <= 1:
            raise InputError(f"{where}: concepts.max_q must be in (0, 1]")
    allow = concepts.get("allowlist") or []
    if not isinstance(allow, list) or not all(isinstance(a, (str, int, float)) for a in allow):
        raise InputError(f"{where}: concepts.allowlist must be a list of concept names")
    cfg.allowlist = tuple(str(a) for a in allow)
    boot = _mapping(data.get("bootstrap"), f"{where}: 'bootstrap'")
    for key in boot:
        if key not in ("samples", "seed"):
            raise InputError(f"{where}: unknown key bootstrap.{key} (valid: samples, seed)")
    if "samples" in boot:
        cfg.bootstrap_samples = _integer(boot["samples"], f"{where}: bootstrap.samples", 1)
    if "seed" in boot:
        cfg.bootstrap_seed = _integer(boot["seed"], f"{where}: bootstrap.seed", 0)
    if "min_group_size" in data:
        cfg.min_group_size = _integer(data["min_group_size"], f"{where}: min_group_size", 0)
    integrity = _mapping(data.get("integrity"), f"{where}: 'integrity'")
    for key in integrity:
        if key not in ("min_cosine", "min_agreement"):
            raise InputError(
                f"{where}: unknown key integrity.{key} (valid: min_cosine, min_agreement)"
            )
    if "min_cosine" in integrity:
        cfg.min_cosine = _number(integrity["min_cosine"], f"{where}: integrity.min_cosine")
    if "min_agreement" in integrity:
        cfg.min_agreement = _number(integrity["min_agreement"], f"{where}: integrity.min_agreement")
    return cfg


def _integer(value: Any, where: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InputError(f"{where} must be an integer ≥ {minimum}, got {value!r}")
    return int(value)


def load_gate(path: str | os.PathLike[str]) -> GateConfig:
    """Read and validate a gate file (safe YAML: no tags, no code)."""
    from audit.fairness.classifiers import file_sha256

    p = Path(path)
    data = read_yaml(p, "gate file")
    cfg = parse_gate(data, str(p))
    cfg.source = str(p)
    cfg.sha256 = file_sha256(p)
    return cfg


# ------------------------------------------------------------------------------------------
# Flags, checks, verdict
# ------------------------------------------------------------------------------------------


def is_allowlisted(name: str | None, allowlist: tuple[str, ...]) -> bool:
    return bool(name) and name.strip().lower() in {a.strip().lower() for a in allowlist}


def flag_concepts(concepts: list[dict], gate: GateConfig) -> None:
    """Set ``flagged`` / ``allowlisted`` on concept rows in place.

    Flagged: a tested (validated-name) concept with ΔWGA ≥ min_dwga, CI lower bound > 0,
    q ≤ max_q, not allowlisted. Unnamed latents are never flagged.
    """
    for c in concepts:
        allowed = is_allowlisted(c.get("name"), gate.allowlist) if c.get("tested") else False
        c["allowlisted"] = allowed
        q = c.get("q")
        c["flagged"] = bool(
            c.get("tested")
            and c["delta_wga"] >= gate.min_dwga
            and c["ci"][0] > 0
            and q is not None
            and q <= gate.max_q
            and not allowed
        )


def _small_groups(result: dict, min_size: int) -> list[dict]:
    return [g for g in result.get("groups", []) if g["n"] < min_size]


def evaluate_checks(result: dict, gate: GateConfig) -> list[dict]:
    """The ``checks`` list: every known check, gated or informational, plus integrity."""
    checks = []
    small = _small_groups(result, gate.min_group_size)
    for name in CHECKS:
        if name == "flagged_concepts":
            value: float | None = (
                sum(1 for c in result.get("concepts", []) if c.get("flagged"))
                if result.get("concepts_computed", True)
                else None
            )
        else:
            value = result.get(name)
        bounds = gate.gates.get(name, {})
        entry: dict[str, Any] = {
            "name": name,
            "value": value,
            "threshold": _threshold(bounds),
            "min": bounds.get("min"),
            "max": bounds.get("max"),
            "gated": bool(bounds),
        }
        if value is None:
            entry.update(status="skipped", reason="not computed (integrity check failed)")
        elif name in GROUP_CHECKS and result.get("empty_groups"):
            entry.update(
                status="skipped",
                reason=f"group '{result['empty_groups'][0]}' has no rows: cannot be measured",
            )
        elif name in GROUP_CHECKS and small:
            worst = min(small, key=lambda g: g["n"])
            entry.update(
                status="skipped",
                reason=f"group '{worst['name']}' has n={worst['n']} < min_group_size={gate.min_group_size}",
            )
        elif not bounds:
            entry.update(status="info", reason="no gate entry: never fails")
        else:
            ok = ("min" not in bounds or value >= bounds["min"] - 1e-12) and (
                "max" not in bounds or value <= bounds["max"] + 1e-12
            )
            entry.update(status="pass" if ok else "fail", reason=_reason(value, bounds, ok))
        checks.append(entry)
    integrity = result.get("integrity") or {}
    for name, key in INTEGRITY_CHECKS.items():
        threshold = getattr(gate, key)
        value = integrity.get(name)
        ok = value is not None and value >= threshold
        checks.append(
            {
                "name": name,
                "value": value,
                "threshold": threshold,
                "min": threshold,
                "max": None,
                "gated": True,
                "status": "pass" if ok else "fail",
                "reason": _reason(value, {"min": threshold}, ok)
                + ("" if ok else " (integrity: concept attributions refused)"),
            }
        )
    return checks


def _threshold(bounds: dict[str, float]) -> float | list[float] | None:
    if "min" in bounds and "max" in bounds:
        return [bounds["min"], bounds["max"]]
    return bounds.get("min", bounds.get("max"))


def _reason(value: float | None, bounds: dict[str, float], ok: bool) -> str:
    if value is None:
        return "not measured"
    parts = []
    if "min" in bounds:
        parts.append(f"≥ {bounds['min']:g}")
    if "max" in bounds:
        parts.append(f"≤ {bounds['max']:g}")
    return f"{value:.4g} {'meets' if ok else 'violates'} {' and '.join(parts)}"


def verdict_of(checks: list[dict]) -> tuple[str, int]:
    """``("error", 3)`` on integrity failure, ``("fail", 1)`` if a gate failed, else ``("pass", 0)``."""
    if any(c["name"] in INTEGRITY_CHECKS and c["status"] == "fail" for c in checks):
        return "error", EXIT_INTEGRITY
    if any(c["status"] == "fail" for c in checks):
        return "fail", EXIT_GATE_FAILED
    return "pass", EXIT_OK


def _is_number(value: Any, allow_none: bool = False) -> bool:
    if value is None:
        return allow_none
    return not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)


def _saved_field(ok: bool, where: str, what: str, value: Any) -> None:
    if not ok:
        shown = repr(value)
        shown = shown if len(shown) <= 60 else shown[:57] + "..."
        raise InputError(f"audit result is malformed: {where} must be {what}, got {shown}")


def validate_saved_result(result: Any) -> None:
    """Check the fields of a saved audit JSON that ``check`` reads and re-renders (a file the
    user gives us: every field is validated, so a damaged one is exit 2, not a crash)."""
    if not isinstance(result, dict) or result.get("schema") != "msae-audit/audit":
        raise InputError("not an audit result: 'schema' must be 'msae-audit/audit'")
    for key in ("groups", "concepts", "checks"):
        if not isinstance(result.get(key), list):
            raise InputError(f"audit result is missing its '{key}' list")
    for i, g in enumerate(result["groups"]):
        where = f"groups[{i}]"
        _saved_field(isinstance(g, dict), where, "an object", g)
        _saved_field(isinstance(g.get("name"), str), f"{where}.name", "text", g.get("name"))
        n = g.get("n")
        _saved_field(_is_number(n) and int(n) == n and n >= 0, f"{where}.n", "a count", n)
        acc = g.get("accuracy")
        _saved_field(_is_number(acc, True), f"{where}.accuracy", "a number", acc)
        _saved_interval(g.get("ci"), f"{where}.ci", allow_none=True)
    for i, c in enumerate(result["concepts"]):
        where = f"concepts[{i}]"
        _saved_field(isinstance(c, dict), where, "an object", c)
        rank = c.get("rank")
        _saved_field(_is_number(rank) and int(rank) == rank, f"{where}.rank", "an integer", rank)
        _saved_field(isinstance(c.get("label"), str), f"{where}.label", "text", c.get("label"))
        name = c.get("name")
        _saved_field(name is None or isinstance(name, str), f"{where}.name", "text or null", name)
        tested = c.get("tested", False)
        _saved_field(isinstance(tested, bool), f"{where}.tested", "true or false", tested)
        dwga = c.get("delta_wga")
        _saved_field(_is_number(dwga), f"{where}.delta_wga", "a number", dwga)
        _saved_interval(c.get("ci"), f"{where}.ci")
        _saved_field(_is_number(c.get("q"), True), f"{where}.q", "a number or null", c.get("q"))
    for name in CHECKS:
        if name != "flagged_concepts":
            value = result.get(name)
            _saved_field(_is_number(value, True), name, "a number or null", value)
    for key in ("integrity", "settings", "data"):
        value = result.get(key)
        _saved_field(value is None or isinstance(value, dict), key, "an object", value)
    for name in INTEGRITY_CHECKS:
        value = (result.get("integrity") or {}).get(name)
        _saved_field(_is_number(value, True), f"integrity.{name}", "a number or null", value)
    boot = (result.get("settings") or {}).get("bootstrap")
    _saved_field(boot is None or isinstance(boot, dict), "settings.bootstrap", "an object", boot)
    rows = (result.get("data") or {}).get("rows_audited", 0)
    _saved_field(_is_number(rows) and int(rows) == rows, "data.rows_audited", "a count", rows)
    computed = result.get("concepts_computed", True)
    _saved_field(isinstance(computed, bool), "concepts_computed", "true or false", computed)


def _saved_interval(value: Any, where: str, allow_none: bool = False) -> None:
    ok = (value is None and allow_none) or (
        isinstance(value, list) and len(value) == 2 and all(_is_number(v) for v in value)
    )
    _saved_field(ok, where, "[low, high]", value)


def rejudge(result: dict, gate: GateConfig) -> tuple[dict, list[str]]:
    """Re-apply a gate to saved results (``msae-audit check``). Returns the updated result and
    notes about settings that cannot be changed after the fact."""
    validate_saved_result(result)
    notes = []
    stored = (result.get("settings") or {}).get("bootstrap") or {}
    if stored and (
        stored.get("samples") != gate.bootstrap_samples
        or (gate.bootstrap_seed is not None and stored.get("seed") != gate.bootstrap_seed)
    ):
        notes.append(
            "bootstrap settings differ from the saved run; its confidence intervals are kept "
            "(rerun the audit to recompute them)"
        )
    out = dict(result)
    out["concepts"] = [dict(c) for c in result["concepts"]]
    try:
        flag_concepts(out["concepts"], gate)
        out["flagged_concepts"] = sum(1 for c in out["concepts"] if c["flagged"])
        out["checks"] = evaluate_checks(out, gate)
    except (KeyError, TypeError, IndexError) as exc:
        raise InputError(f"audit result is malformed ({type(exc).__name__}: {exc})") from exc
    out["verdict"], out["exit_code"] = verdict_of(out["checks"])
    if result.get("concepts_computed") is False:
        # The integrity check refused attribution when the audit ran; a gate cannot undo that.
        out["verdict"], out["exit_code"] = "error", EXIT_INTEGRITY
        notes.append(
            "the saved audit failed its integrity check; rerun the audit to attribute concepts"
        )
    out["gate"] = gate.describe()
    return out, notes
