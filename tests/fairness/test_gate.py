"""The gate file, the checks and the verdict."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from audit.errors import InputError
from audit.fairness import AuditResult, parse_result
from audit.fairness.gate import (
    GateConfig,
    evaluate_checks,
    load_gate,
    parse_gate,
    rejudge,
    verdict_of,
)

GOLDEN = Path(__file__).parents[1] / "golden" / "expected" / "planted_bias_raw.json"


def document(**over) -> dict:
    """A saved audit result (a golden one) with made-up groups, metrics and concepts."""
    doc = json.loads(GOLDEN.read_text(encoding="utf-8"))
    template = doc["groups"][0]
    doc["groups"] = [
        {**template, "name": name, "n": n}
        for name, n in (("T=0, A=0", 500), ("T=0, A=1", 300), ("T=1, A=0", 400), ("T=1, A=1", 60))
    ]
    doc.update(
        worst_group_accuracy=0.7, accuracy_gap=0.25, equalized_odds_difference=0.2,
        demographic_parity_difference=0.4, accuracy=0.9, empty_groups=[], checks=[],
        concepts_computed=True,
    )  # fmt: skip
    doc["integrity"].update(sae_cosine=0.99, classifier_agreement=0.98)
    doc["settings"]["bootstrap"] = {"samples": 1000, "seed": 0}  # GateConfig()'s
    template = doc["concepts"][0]
    doc["concepts"] = [
        {**template, "rank": 1, "name": "blond hair", "label": "blond hair", "tested": True,
         "delta_wga": 0.2, "ci": [0.1, 0.3], "q": 0.01},
        {**template, "rank": 2, "name": "beard", "label": "beard", "tested": True,
         "delta_wga": 0.05, "ci": [0.01, 0.09], "q": 0.03},
        {**template, "rank": 3, "name": None, "label": "latent 9 (~sky)", "tested": False,
         "delta_wga": 0.3, "ci": [0.2, 0.4], "q": None},
    ]  # fmt: skip
    doc.update(over)
    return doc


def result(**over) -> AuditResult:
    return parse_result(document(**over))


def evaluate(r: AuditResult, gate: GateConfig):
    return evaluate_checks(r.metrics, r.flagged_concepts, r.integrity, gate)


def statuses(checks) -> dict[str, str]:
    return {c.name: c.status for c in checks}


def test_spec_example_gate_parses():
    cfg = parse_gate(
        {
            "gates": {
                "worst_group_accuracy": {"min": 0.80},
                "accuracy_gap": {"max": 0.10},
                "equalized_odds_difference": {"max": 0.10},
                "flagged_concepts": {"max": 0},
            },
            "concepts": {"min_dwga": 0.02, "max_q": 0.05, "allowlist": ["beard", "man", "woman"]},
            "bootstrap": {"samples": 1000, "seed": 0},
            "min_group_size": 100,
        }
    )
    assert cfg.gates["worst_group_accuracy"] == {"min": 0.8} and cfg.min_group_size == 100
    assert cfg.allowlist == ("beard", "man", "woman") and cfg.bootstrap_seed == 0


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"gates": {"worst_group_acc": {"min": 0.8}}}, "unknown check 'worst_group_acc'"),
        ({"gate": {}}, "unknown key 'gate'"),
        ({"gates": {"accuracy_gap": {"below": 0.1}}}, "needs 'min' and/or 'max'"),
        ({"gates": {"accuracy_gap": {"max": "0.1"}}}, "must be a number"),
        ({"gates": {"accuracy_gap": 0.1}}, "must be a mapping"),
        ({"concepts": {"max_q": 0}}, "max_q must be in (0, 1]"),
        ({"concepts": {"min_dwga": 0.02, "maxq": 0.1}}, "unknown key concepts.maxq"),
        ({"concepts": {"allowlist": "beard"}}, "allowlist must be a list"),
        ({"bootstrap": {"samples": 0}}, "bootstrap.samples must be an integer"),
        ({"min_group_size": -1}, "min_group_size must be an integer"),
        ({"allow_skipped": "yes"}, "allow_skipped must be true or false"),
        ({"integrity": {"min_cos": 0.9}}, "unknown key integrity.min_cos"),
        (["gates"], "expected a mapping"),
    ],
)
def test_bad_gate_files_are_input_errors(data, message):
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_gate(data)


def test_malformed_yaml_and_missing_file(tmp_path):
    bad = tmp_path / "gate.yaml"
    bad.write_text("gates:\n  worst_group_accuracy: {min: 0.8\n")
    with pytest.raises(InputError, match="malformed YAML"):
        load_gate(bad)
    with pytest.raises(InputError, match="not found"):
        load_gate(tmp_path / "none.yaml")
    unsafe = tmp_path / "unsafe.yaml"
    unsafe.write_text("gates: !!python/object/apply:os.system ['true']\n")
    with pytest.raises(InputError, match=r"YAML tag .*python/object/apply:os.system.* not allowed"):
        load_gate(unsafe)  # a safe loader refuses tags that would run code


def test_without_a_gate_nothing_is_judged_and_the_verdict_says_so():
    checks = evaluate(result(), GateConfig())
    s = statuses(checks)
    assert s["worst_group_accuracy"] == s["accuracy_gap"] == "info"
    assert s["sae_cosine"] == s["classifier_agreement"] == "pass"
    assert verdict_of(checks) == ("ungated", 0)  # never "pass": nothing was checked
    out, _ = rejudge(result(), GateConfig(min_dwga=0.5))  # a gate without bounds judges nothing
    assert out.verdict == "ungated" and out.exit_code == 0 and out.skipped_checks == ()


def test_every_gated_check_skipped_is_inconclusive_unless_allowed():
    cfg = GateConfig(gates={"worst_group_accuracy": {"min": 0.5}, "accuracy_gap": {"max": 0.9}},
                     min_group_size=100)  # fmt: skip  # the T=1, A=1 group has n = 60
    out, _ = rejudge(result(), cfg)
    assert [c.status for c in out.checks if c.gated and c.name in cfg.gates] == ["skipped"] * 2
    assert out.verdict == "inconclusive" and out.exit_code == 1
    assert out.skipped_checks == ("worst_group_accuracy", "accuracy_gap")
    allowed, _ = rejudge(result(), replace(cfg, allow_skipped=True))
    assert allowed.verdict == "inconclusive" and allowed.exit_code == 0
    assert parse_gate({"allow_skipped": True}).allow_skipped
    assert parse_gate({}).allow_skipped is False


def test_partly_skipped_gates_judge_what_was_checked_and_list_the_rest():
    cfg = GateConfig(gates={"worst_group_accuracy": {"min": 0.5}, "accuracy": {"min": 0.85}},
                     min_group_size=100)  # fmt: skip
    out, _ = rejudge(result(), cfg)
    assert out.verdict == "pass" and out.exit_code == 0
    assert out.skipped_checks == ("worst_group_accuracy",)
    failing, _ = rejudge(result(), replace(cfg, gates={**cfg.gates, "accuracy": {"min": 0.95}}))
    assert failing.verdict == "fail" and failing.skipped_checks == ("worst_group_accuracy",)


def test_gate_pass_fail_and_min_group_size_skips():
    cfg = GateConfig(gates={"worst_group_accuracy": {"min": 0.8}, "accuracy": {"min": 0.85}})
    checks = evaluate(result(), cfg)
    assert (
        statuses(checks)["worst_group_accuracy"] == "fail"
        and statuses(checks)["accuracy"] == "pass"
    )
    assert verdict_of(checks) == ("fail", 1)
    cfg = replace(cfg, min_group_size=100)  # the T=1, A=1 group has n = 60
    checks = evaluate(result(), cfg)
    s = statuses(checks)
    assert s["worst_group_accuracy"] == "skipped" and s["accuracy"] == "pass"  # not group-based
    assert (
        "n=60 < min_group_size=100"
        in next(c for c in checks if c.name == "worst_group_accuracy").reason
    )
    assert verdict_of(checks) == ("pass", 0)


def test_integrity_failure_is_exit_3_even_when_gates_fail():
    cfg = GateConfig(gates={"worst_group_accuracy": {"min": 0.99}})
    r = result()
    checks = evaluate(replace(r, integrity=replace(r.integrity, sae_cosine=0.5)), cfg)
    assert verdict_of(checks) == ("error", 3)


def test_rejudge_applies_new_flag_rules_and_allowlist():
    cfg = GateConfig(gates={"flagged_concepts": {"max": 0}})
    out, notes = rejudge(result(), cfg)
    assert [c.name for c in out.concepts if c.flagged] == ["blond hair", "beard"]
    assert not out.concepts[2].flagged  # unnamed: never flagged
    assert out.verdict == "fail" and out.exit_code == 1 and notes == []
    cfg = GateConfig(
        gates={"flagged_concepts": {"max": 0}}, allowlist=("Blond Hair",), min_dwga=0.1
    )
    out, _ = rejudge(result(), cfg)
    assert out.flagged_concepts == 0 and out.concepts[0].allowlisted
    assert out.verdict == "pass"
    with pytest.raises(InputError, match="not an audit result"):
        parse_result({"schema": "msae-audit/eval"})


def test_example_gate_file_and_workflow():
    from pathlib import Path

    import yaml

    root = Path(__file__).resolve().parents[2] / "examples"
    cfg = load_gate(root / "gate.yaml")
    assert cfg.gates["flagged_concepts"] == {"max": 0.0} and cfg.min_group_size == 100
    workflow = yaml.safe_load((root / "github-workflow.yml").read_text())
    steps = workflow["jobs"]["audit"]["steps"]
    run = next(s["run"] for s in steps if "run" in s and "msae-audit audit" in s["run"])
    assert "--gate examples/gate.yaml" in run and "--junit" in run


@pytest.mark.parametrize(
    ("change", "message"),
    [
        # Found by tests/test_fuzz_parsers.py: each crashed `msae-audit check` (exit 4).
        (lambda r: r.update(concepts=[{}, {}]), r"concepts\[0\].rank is missing"),
        (lambda r: r["concepts"][0].update(rank="1"), r"concepts\[0\].rank must be an integer"),
        (lambda r: r["concepts"][0].update(name=["a"]), r"concepts\[0\].name must be text"),
        (lambda r: r.update(settings=True), "settings must be an object"),
        (lambda r: r.update(accuracy=""), "accuracy must be a number or null"),
        (lambda r: r.update(worst_group_accuracy={"a": 1}), "worst_group_accuracy must be"),
        (lambda r: r["data"].update(rows_audited="many"), "data.rows_audited must be a count"),
        (lambda r: r["groups"][0].update(n=True), r"groups\[0\].n must be a count"),
        (lambda r: r["concepts"][1].update(ci=[0.1]), r"concepts\[1\].ci must be \[low, high\]"),
        (lambda r: r["concepts"][1].update(delta_wga=float("nan")), "delta_wga must be a number"),
        (lambda r: r["settings"].update(bootstrap=[]), "settings.bootstrap must be an object"),
        (lambda r: r.update(verdict="maybe"), "verdict must be one of pass, fail, error, ungated"),
    ],
)
def test_damaged_saved_results_are_input_errors(change, message):
    saved = document()
    change(saved)
    with pytest.raises(InputError, match=message):
        parse_result(saved)


def test_saved_results_round_trip_byte_for_byte():
    from audit.fairness import dumps

    text = GOLDEN.read_text(encoding="utf-8")
    assert dumps(parse_result(json.loads(text))) == text


def test_the_attribute_direction_can_be_gated_and_says_why_when_it_is_missing():
    """A saved result with the attribute's own direction: gated with a max it fails above it
    and passes below; a result without it (an older file) skips it with that reason."""
    direction = {
        "directions": 1, "delta_wga": 0.12, "ci": [0.08, 0.15], "wga_after": 0.82,
        "delta_accuracy_overall": 0.01, "method": "m",
    }  # fmt: skip
    cfg = GateConfig(gates={"attribute_direction_delta_wga": {"max": 0.05}}, min_group_size=10)
    out, _ = rejudge(result(attribute_direction=direction), cfg)
    check = next(c for c in out.checks if c.name == "attribute_direction_delta_wga")
    assert (check.status, check.value, check.gated) == ("fail", 0.12, True)
    assert out.verdict == "fail" and out.exit_code == 1
    lenient = replace(cfg, gates={"attribute_direction_delta_wga": {"max": 0.2}})
    assert rejudge(result(attribute_direction=direction), lenient)[0].verdict == "pass"
    saved = document()
    saved.pop("attribute_direction", None)  # written before the direction was measured
    older, _ = rejudge(parse_result(saved), cfg)
    check = next(c for c in older.checks if c.name == "attribute_direction_delta_wga")
    assert check.status == "skipped" and "older result file" in check.reason
    assert older.verdict == "inconclusive"
    small = replace(cfg, min_group_size=100)  # the T=1, A=1 group has n = 60
    check = next(
        c
        for c in rejudge(result(attribute_direction=direction), small)[0].checks
        if c.name == "attribute_direction_delta_wga"
    )
    assert check.status == "skipped" and "min_group_size" in check.reason


def test_a_saved_result_rejudged_under_its_own_gate_keeps_its_flags_and_verdict():
    """Values within rounding of a threshold are judged as the JSON writes them (6 decimals), so
    the run's flags and verdict are what `msae-audit check` finds in its saved file, and every
    flag agrees with the numbers shown beside it."""
    from audit.fairness import dumps
    from audit.fairness.checks import judge

    gate = GateConfig(gates={"worst_group_accuracy": {"min": 0.7}}, min_dwga=0.02, max_q=0.05)
    r = result(worst_group_accuracy=0.7 - 3e-7)  # written as 0.7: meets the gate's minimum
    concepts = tuple(
        replace(c, delta_wga=d, ci=ci, q=q)
        for c, (d, ci, q) in zip(
            r.concepts,
            [
                (0.02 - 3e-7, (0.01, 0.03), 0.01),  # ΔWGA written as 0.02: meets min_dwga
                (0.2, (3e-7, 0.3), 0.01),  # interval written as [0, 0.3]: not above 0
                (0.3, (0.2, 0.4), None),  # unnamed
            ],
            strict=True,
        )
    )
    run = judge(r, concepts, gate)
    saved = parse_result(json.loads(dumps(run)))
    again, _ = rejudge(saved, gate)
    assert [c.flagged for c in run.concepts] == [c.flagged for c in again.concepts]
    assert [c.flagged for c in run.concepts] == [True, False, False]
    assert (run.verdict, run.exit_code) == (again.verdict, again.exit_code) == ("pass", 0)
    # q keeps 6 significant digits: 0.05 + 3e-9 is written 0.05 (≤ max_q), 0.05 + 3e-7 is
    # written 0.0500003 (above it), and a saved file says the same.
    for q, flagged in ((0.05 + 3e-9, True), (0.05 + 3e-7, False)):
        q_edge = judge(r, (replace(concepts[0], delta_wga=0.2, q=q),), gate)
        assert q_edge.concepts[0].flagged is flagged, q
        again, _ = rejudge(parse_result(json.loads(dumps(q_edge))), gate)
        assert again.concepts[0].flagged is flagged, q


def test_tiny_p_and_q_values_are_written_with_their_digits_not_as_zero():
    """An exact test over thousands of rows gives p far below 1e-6: the JSON keeps 6
    significant digits of p and q (other numbers 6 decimals), and the reports print it."""
    from audit.fairness import dumps
    from audit.report.markdown import render_markdown

    r = result()
    tiny = replace(r.concepts[0], p=3.14159265e-9, q=2.7e-8, delta_wga=1e-9)
    saved = json.loads(dumps(replace(r, concepts=(tiny, *r.concepts[1:]))))
    concept = saved["concepts"][0]
    assert (concept["p"], concept["q"], concept["delta_wga"]) == (3.14159e-09, 2.7e-08, 0.0)
    assert "2.7e-08" in render_markdown(parse_result(saved))


def test_integrity_is_judged_on_the_numbers_as_written():
    """A cosine or agreement within rounding of its minimum is judged as the JSON writes it:
    the run's integrity decision (attribute or refuse) and its integrity checks say the same as
    `msae-audit check` on the saved file, and the same as the figure printed beside them."""
    from audit.fairness import dumps
    from audit.fairness.checks import judge

    gate = GateConfig(min_cosine=0.9, min_agreement=0.95)
    r = result()
    for cosine, agreement, cosine_passed, passed in (
        (0.9 - 3e-7, 0.95, True, True),  # written 0.9: meets min_cosine
        (0.9 - 3e-6, 0.95, False, False),  # written 0.899997
        (0.99, 0.95 - 4e-7, True, True),
        (0.99, 0.95 - 6e-7, True, False),  # written 0.949999
    ):
        integrity = replace(
            r.integrity, sae_cosine=cosine, classifier_agreement=agreement,
            min_cosine=gate.min_cosine, min_agreement=gate.min_agreement,
        )  # fmt: skip
        assert (integrity.cosine_passed, integrity.passed) == (cosine_passed, passed)
        run = judge(replace(r, integrity=integrity), r.concepts, gate)
        shown = {c.name: c.status for c in run.checks}
        expected = "pass" if passed else "fail"
        assert expected in (shown["sae_cosine"], shown["classifier_agreement"])
        assert {shown["sae_cosine"], shown["classifier_agreement"]} <= {"pass", expected}
        again, _ = rejudge(parse_result(json.loads(dumps(run))), gate)
        assert statuses(again.checks) == statuses(run.checks)
        assert (again.verdict == "error") is (not passed)
