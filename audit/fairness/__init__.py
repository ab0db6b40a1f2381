"""The bias audit: group metrics, concept reliance, statistics and the CI gate.

:func:`run_audit` takes loaded objects and returns the typed :class:`AuditResult`;
:func:`dumps` / :func:`parse_result` write and read the audit JSON; :func:`rejudge` applies
another gate to a saved result. From files to report files: :func:`audit.report.audit_files`.
"""

from audit.fairness.checks import rejudge
from audit.fairness.config import AuditSettings, GateConfig
from audit.fairness.gate import load_gate, parse_gate
from audit.fairness.result import AuditResult
from audit.fairness.run import run_audit
from audit.fairness.serialize import dumps, parse_result, to_json

__all__ = [
    "AuditResult",
    "AuditSettings",
    "GateConfig",
    "dumps",
    "load_gate",
    "parse_gate",
    "parse_result",
    "rejudge",
    "run_audit",
    "to_json",
]
