"""docs/cli.md is the Typer app's own reference, and is current."""

from __future__ import annotations

from audit.cli.docgen import DOC, main, render


def test_cli_reference_is_current():
    assert DOC.read_text(encoding="utf-8") == render(), (
        "docs/cli.md is out of date: python -m audit.cli.docgen"
    )


def test_reference_lists_every_command_and_option():
    text = render()
    for heading in (
        "`msae-audit train`",
        "`msae-audit embed celeba`",
        "`msae-audit concepts show`",
    ):
        assert f"## {heading}" in text
    assert "| `--k-min <int>` |" in text and "[default: 64]" in text


def test_reference_keeps_the_defaults_click_appends():
    # Click appends "[default: …]" / "[required]" to the help; rendered as rich markup they
    # would be read as style tags and dropped, leaving options with no stated default.
    text = render()
    assert (
        "| `--json <path>` | Audit JSON (the source of truth). [default: (reports/audit.json)] |"
        in text
    )
    assert (
        "| `--target <str>` | Binary target column (the classifier's label). [required] |" in text
    )


def test_check_flag_reports_drift(tmp_path, monkeypatch, capsys):
    stale = tmp_path / "cli.md"
    stale.write_text("old\n", encoding="utf-8")
    monkeypatch.setattr("audit.cli.docgen.DOC", stale)
    assert main(["--check"]) == 1
    assert "out of date" in capsys.readouterr().err
    assert main([]) == 0 and main(["--check"]) == 0
