"""Reports of an audit — terminal tables, a self-contained HTML page (Jinja2 templates in
``templates/``), JUnit XML and Markdown — all rendered from the typed
:class:`~audit.fairness.result.AuditResult`; :func:`audit_files` runs an audit from files and
writes them."""

from audit.report.files import AuditOutcome, audit_files, write_reports

__all__ = ["AuditOutcome", "audit_files", "write_reports"]
