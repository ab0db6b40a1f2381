"""Sentences every report shares, so the terminal, HTML, Markdown and JUnit say the same thing.

Sentences that hold user-supplied strings (group values, class names, concept names, words)
take ``show``, how the renderer shows one such string: as it is for the terminal, Markdown and
JUnit (each escapes or neutralises the whole sentence), and inside its own Unicode isolate for
the HTML pages (:func:`audit.report.templating.bidi_isolate`), so that a bidi override in one
name cannot reorder the names and words after it in the same sentence.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from audit.concepts.bank import ABSENT
from audit.concepts.namecheck import auc_refutes, share_refutes
from audit.discover.result import DiscoveredConcept
from audit.fairness.records import ConceptErrors
from audit.fairness.result import AuditResult, ConceptFinding

#: How a renderer shows one user-supplied string inside a sentence (see the module docstring).
Show = Callable[[str], str]


def as_is(text: str) -> str:
    """The terminal's, Markdown's and JUnit's :data:`Show`: the string unchanged."""
    return text


def number_text(value: Any, digits: int = 3, sign: bool = False) -> str:
    """A number as every report writes it: ``digits`` decimals (with a sign when asked), whole
    numbers with thousands separators, booleans as yes/no, a pair or list bracketed, None as "–".

    >>> number_text(0.91234), number_text(-0.0125, 4, sign=True), number_text(12000)
    ('0.912', '-0.0125', '12,000')
    >>> number_text((0.01, 0.2)), number_text(True), number_text(None), number_text("n/a")
    ('[0.010, 0.200]', 'yes', '–', 'n/a')
    """
    if value is None:
        return "–"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(number_text(v, digits, sign) for v in value) + "]"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:+,}" if sign else f"{value:,}"
    try:
        number = float(value)
    except (TypeError, ValueError):
        return str(value)
    return f"{number:+.{digits}f}" if sign else f"{number:.{digits}f}"


def p_value_text(p: float | None) -> str:
    """A p- or q-value as every report writes it: 3 decimals, or 2 significant digits below
    0.001 (an exact test over thousands of rows gives p far below what 3 or 4 decimals show, and
    "0.000" is no p-value).

    >>> p_value_text(0.0412), p_value_text(0.00029), p_value_text(3.1e-09), p_value_text(None)
    ('0.041', '2.9e-04', '3.1e-09', '–')
    """
    if p is None:
        return "–"
    return f"{p:.3f}" if p >= 0.001 else f"{p:.1e}"


def group_name(result: AuditResult, name: str, show: Show = as_is) -> str:
    """A group as the reports show it: each ``COLUMN=VALUE`` part by its class name when
    ``--class-names`` gave one ("is_circle=1, is_red=0" → "circle, not red"), each column,
    value or class name shown with ``show``."""
    return group_label(name, show, result.data.class_names if result.data else None)


def group_label(name: str, show: Show = as_is, class_names: Mapping[str, str] | None = None) -> str:
    """A group's name with each ``COLUMN=VALUE`` part replaced by its class name where
    ``class_names`` has one, each column, value or class name shown with ``show``.

    >>> group_label("y=1, a=0", lambda s: f"[{s}]", {"y=1": "cat"})
    '[cat], [a]=[0]'
    """
    names = class_names or {}
    return ", ".join(group_part(names.get(part, part), show) for part in name.split(", "))


def group_part(part: str, show: Show = as_is) -> str:
    """One ``COLUMN=VALUE`` part of a group's name with its column and its value each shown
    with ``show`` (the ``=`` between them outside both: in a page, an override in a column or
    concept name cannot reverse the value after it); a part without ``=`` is shown whole.

    >>> group_part("is_red=1", lambda s: f"[{s}]")
    '[is_red]=[1]'
    >>> group_part("not red", lambda s: f"[{s}]")
    '[not red]'
    """
    column, equals, value = part.rpartition("=")
    return show(column) + equals + show(value) if equals else show(part)


#: A concept "rides on" an attribute value when at least this share of its strongest rows carry
#: it, and at least RIDES_LIFT times the value's overall share.
RIDES_SHARE, RIDES_LIFT = 0.9, 1.5


def rides_on(
    result: AuditResult, share: Mapping[str, float] | None, show: Show = as_is
) -> str | None:
    """ "rides on red: 96 % of its strongest rows (50 % overall)" when a concept's most-activating
    rows nearly all carry one attribute value (its effect is then hard to tell from the
    attribute's: the two are entangled in the data or in the SAE), else None."""
    if not share:
        return None
    total = sum(a.n for a in result.attribute_groups)
    overall = {a.name: a.n / total for a in result.attribute_groups} if total else {}
    name, value = max(share.items(), key=lambda kv: (kv[1], kv[0]))
    base = overall.get(name)
    if base is None or value < RIDES_SHARE or value < RIDES_LIFT * base:
        return None
    return (
        f"rides on {group_name(result, name, show)}: {value:.0%} of its strongest rows "
        f"({base:.0%} overall)"
    )


def beyond_note(concept: ConceptFinding | DiscoveredConcept, show: Show = as_is) -> str | None:
    """ "beyond red: ΔWGA +0.014, p 0.057" for a concept also tested with stronger flagged
    concepts removed first (its p is the larger of the two), else None."""
    b = concept.beyond
    if b is None:
        return None
    given = ", ".join(show(name) for name in b.given)
    return f"beyond {given}: ΔWGA {b.delta_wga:+.3f}, p {p_value_text(b.p)}"


#: Beside a concept whose name did not hold on the audited images.
NAME_NOT_CONFIRMED = "name not confirmed on these images"


def name_check_note(
    concept: ConceptFinding | DiscoveredConcept | ConceptErrors, show: Show = as_is
) -> str | None:
    """Beside a concept whose name was checked on the audited images: why it does not hold ("name
    not confirmed on these images: 3% of the rows where it is active show 'heart' (at most 5%;
    a name needs most)"; the concept is then never flagged); for a flagged concept whose check
    is undecided, its figures; else None."""
    e = concept.evidence
    if e is None or e.audited_labelled is None:
        return None
    auc = (
        f"AUC {number_text(e.audited_auc)} (at most {number_text(e.audited_auc_upper)})"
        if e.audited_auc is not None
        else f"AUC – ({e.audited_labelled} rows show '{show(e.word)}')"
    )
    share = (
        f"{e.audited_share:.0%} of the rows where it is active show "
        f"{'no ' if e.polarity == ABSENT else ''}'{show(e.word)}'"
        if e.audited_share is not None
        else None
    )
    if e.refuted:
        reasons = []
        if auc_refutes(e.audited_auc_upper, e.auc_threshold):
            reasons.append(f"{auc} < {number_text(e.auc_threshold)}")
        if share_refutes(e.audited_share_upper):
            reasons.append(f"{share} (at most {e.audited_share_upper:.0%}; a name needs most)")
        return f"{NAME_NOT_CONFIRMED}: {'; '.join(reasons)}"
    if e.holds is not None or not concept.flagged:
        return None
    parts = [f"{auc} against {number_text(e.auc_threshold)}", *([share] if share else [])]
    return f"name undecided on these images: {'; '.join(parts)}"


def discover_note(concept: DiscoveredConcept, show: Show = as_is) -> str | None:
    """What discover's reports show beside a concept's name: whether its name failed on the
    audited images and what it does beyond stronger flagged concepts, "; "-joined, or None."""
    parts = [n for n in (name_check_note(concept, show), beyond_note(concept, show)) if n]
    return "; ".join(parts) or None


def concept_note(result: AuditResult, concept: ConceptFinding, show: Show = as_is) -> str | None:
    """What every report shows beside a concept's name in its table: whether its name failed on
    the audited images, whether it rides on an attribute value and what it does beyond stronger
    flagged concepts, "; "-joined, or None."""
    share = next(
        (
            ex.attribute_share
            for ex in result.examples
            if tuple(ex.latents) == tuple(concept.latents)
        ),
        None,
    )
    notes = (
        name_check_note(concept, show),
        rides_on(result, share, show),
        beyond_note(concept, show),
    )
    parts = [n for n in notes if n]
    return "; ".join(parts) or None


def verdict_note(result: AuditResult) -> str | None:
    """What a verdict that is not a plain pass or fail means, in one sentence (None for a pass or
    fail with every gated check judged)."""
    if result.verdict == "ungated":
        why = (
            "no gate file was given"
            if not result.gate.get("path")
            else "the gate file bounds no check"
        )
        return (
            f"{why}: nothing was judged, every check below is informational "
            "(give a gate with `gates:` bounds, e.g. --gate examples/gate.yaml, to judge)"
        )
    skipped = skipped_reasons(result)
    if result.verdict == "inconclusive":
        allowed = " (the gate allows it: exit code 0)" if result.exit_code == 0 else ""
        return f"every gated check was skipped, so nothing was judged{allowed}: {skipped}"
    if skipped:
        return f"not judged (skipped): {skipped}"
    return None


def skipped_reasons(result: AuditResult) -> str:
    """``name (reason); …`` for the gated checks that were skipped."""
    reasons = {c.name: c.reason for c in result.checks}
    return "; ".join(f"{name} ({reasons.get(name, 'skipped')})" for name in result.skipped_checks)


def name_checks_line(
    concepts: Sequence[ConceptFinding | DiscoveredConcept], show: Show = as_is
) -> str | None:
    """How the bank's names fared on the audited images, in one sentence ("Names checked on
    these images: 14 of 16 hold; not confirmed: red (never flagged); undecided: heart, star."),
    or None when none was checked.

    An audit's or a discover run's concepts alike (only validated names carry a check)."""
    checked = [
        (c.name, c.evidence)
        for c in concepts
        if c.evidence is not None and c.evidence.audited_labelled is not None
    ]
    if not checked:
        return None
    hold = sum(e.holds is True for _, e in checked)
    text = f"Names checked on these images: {hold} of {len(checked)} hold"
    refuted = [show(str(name)) for name, e in checked if e.refuted]
    undecided = [show(str(name)) for name, e in checked if e.holds is None]
    if refuted:
        text += f"; not confirmed: {', '.join(refuted)} (never flagged)"
    if undecided:
        text += f"; undecided: {', '.join(undecided)}"
    return text + "."


def direction_note(result: AuditResult, show: Show = as_is) -> str | None:
    """The attribute's own direction beside the top concept, in one or two sentences: how big
    the shortcut is without the SAE, and — when it is clearly there and no concept is flagged —
    that the bank names nothing that carries it. None when it was not measured."""
    d = result.attribute_direction
    if d is None:
        return None
    lo, hi = d.ci
    text = (
        f"Without the SAE: removing the {show(result.data.spurious)} direction from the embeddings "
        f"changes worst-group accuracy by {d.delta_wga:+.3f} [{lo:+.3f}, {hi:+.3f}]"
    )
    top = next((c for c in result.concepts if c.tested), None)
    if top is not None:
        text += (
            f"; removing the strongest named concept, {show(top.label)}, by {top.delta_wga:+.3f}"
        )
    text += "."
    if result.flagged_concepts == 0 and lo >= result.settings.min_dwga:
        text += (
            " No flagged concept carries it: what does may be unnamed, or spread over many "
            "latents (the table lists unnamed ones with their nearest word)."
        )
    return text
