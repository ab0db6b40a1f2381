"""The audit as pure stages, each a function from typed inputs to typed outputs:

:func:`~.context.prepare` (inputs checked, rows chosen, probe fit) → :func:`~.integrity.check_integrity`
→ :func:`~.scan.scan_stage` (every latent ablated in one pass, group metrics) →
:func:`~.choose.choose_stage` (the reported concepts, exact) → :func:`~.null.null_stage`
(p- and q-values) → :func:`~.findings.findings_stage` (intervals, flags, ranks) →
:func:`~.focus.focus_stage` (steering curves, examples) → :func:`~.assemble.assemble`
(the judged :class:`~audit.fairness.result.AuditResult`). :func:`audit.fairness.run.run_audit`
runs them in order.
"""
