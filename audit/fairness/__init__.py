"""The bias audit (SPEC §7): group metrics, concept reliance, statistics and the CI gate.

The entry points are :func:`audit_files` (paths in, every report written) and :func:`run_audit`
(loaded objects in, the audit JSON dictionary out).
"""

from audit.fairness.gate import GateConfig, load_gate, parse_gate, rejudge
from audit.fairness.run import AuditOutcome, AuditSettings, audit_files, dumps, run_audit

__all__ = [
    "AuditOutcome",
    "AuditSettings",
    "GateConfig",
    "audit_files",
    "dumps",
    "load_gate",
    "parse_gate",
    "rejudge",
    "run_audit",
]
