"""The command line as a whole: --version, and every option's default in --help."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from audit import __version__


def test_version_prints_the_package_version(cli):
    r = cli("--version")
    assert r.exit_code == 0, r.stderr
    assert r.stdout.strip() == f"msae-audit {__version__}"


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("audit", "--embeddings", "x"), "Missing option '--target'"),
        (("audit", "--no-such-flag", "1"), "No such option: --no-such-flag"),
        (
            ("train", "--seed", "abc", "--out", "o", "--embeddings", "e"),
            "Invalid value for '--seed'",
        ),
        (("no-such-command",), "No such command 'no-such-command'"),
        (("embed", "images"), "Missing argument"),
    ],
)
def test_a_usage_error_is_one_line_and_exit_code_2(cli, args, says):
    """Usage errors, like every other error, are one line naming the problem (docs/cli.md's
    exit codes), not Click's usage block and boxed panel."""
    r = cli(*args)
    assert r.exit_code == 2
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("error: ") and says in lines[0], lines[0]
    assert "--help" in lines[0] and r.stdout == ""


@pytest.mark.parametrize(("bound", "code"), [("min: 0.1", 0), ("min: 0.99", 1)])
def test_a_reader_that_leaves_early_does_not_change_the_exit_code(tmp_path, bound, code):
    """`msae-audit check … | head -1` in a CI script: the exit code is still the verdict (Click
    ended a command whose stdout closed with 1, a failed gate, whatever the verdict was)."""
    root = Path(__file__).resolve().parents[2]
    gate = tmp_path / "gate.yaml"
    gate.write_text(f"gates:\n  worst_group_accuracy: {{{bound}}}\nmin_group_size: 0\n")
    results = root / "tests" / "golden" / "expected" / "demo.json"
    read, write = os.pipe()
    os.close(read)  # the reader is gone before anything is written
    env = {**os.environ, "PYTHONPATH": str(root)}
    try:
        done = subprocess.run(
            [sys.executable, "-m", "audit", "check", "--config", str(gate), str(results)],
            stdout=write, stderr=subprocess.PIPE, env=env, text=True, timeout=120,
        )  # fmt: skip
    finally:
        os.close(write)
    assert done.returncode == code, done.stderr
    assert "Traceback" not in done.stderr and "Exception ignored" not in done.stderr


def test_no_arguments_still_show_the_help(cli):
    r = cli()
    assert r.exit_code == 2 and "Usage: msae-audit" in r.stdout + r.stderr
    assert cli("audit", "--help").exit_code == 0


def _leaf_commands() -> list[tuple[str, ...]]:
    """Every command path (``("embed", "images")``, ``("concepts",)``, …) of the CLI."""
    import typer

    from audit.cli import _register_commands
    from audit.cli.app import app

    _register_commands()
    paths = []

    def walk(command, path: tuple[str, ...]) -> None:  # type: ignore[no-untyped-def]
        if path:
            paths.append(path)
        for name, sub in getattr(command, "commands", {}).items():
            walk(sub, (*path, name))

    walk(typer.main.get_command(app), ())
    return paths


# The audit core's commands move onto audit/cli/options.py with its restructuring; strict
# xfail, so the day they show every default this list must shrink.
COMMANDS = [pytest.param(path, id=" ".join(path)) for path in _leaf_commands()]


def test_every_command_is_checked():
    names = {p.values[0] for p in COMMANDS}
    assert {("train",), ("eval",), ("compare",), ("embed", "images"), ("embed", "texts"),
            ("embed", "celeba"), ("concepts",), ("concepts", "show"), ("search",), ("demo",),
            ("audit",), ("celeba",), ("check",)} <= names  # fmt: skip


@pytest.mark.parametrize("path", COMMANDS)
def test_help_states_every_options_default(cli, monkeypatch, path):
    import typer

    from audit.cli.app import app

    monkeypatch.setenv("COLUMNS", "400")  # one line per option: no wrapped help to reassemble
    r = cli(*path, "--help")
    assert r.exit_code == 0, r.stderr
    rows = [line for line in r.stdout.splitlines() if line.startswith("│")]
    command = typer.main.get_command(app)
    for name in path:
        command = command.commands[name]  # type: ignore[attr-defined]
    missing = []
    for param in command.params:
        if param.name == "help":
            continue
        label = (
            param.opts[0] if param.param_type_name == "option" else (param.metavar or param.name)
        )
        pattern = re.compile(rf"^│\s*(\*\s+)?{re.escape(label)}(\.\.\.)?\s")
        row = next((line for line in rows if pattern.match(line)), None)
        assert row is not None, f"{label} not found in --help:\n{r.stdout}"
        if "[default: " not in row and "[required" not in row:
            missing.append(label)
    assert not missing, f"msae-audit {' '.join(path)} --help states no default for {missing}"


def _commands_with(flag: str) -> list[tuple[str, ...]]:
    """The command paths that take ``flag``."""
    import typer

    from audit.cli.app import app

    found = []
    for path in _leaf_commands():
        command = typer.main.get_command(app)
        for name in path:
            command = command.commands[name]  # type: ignore[attr-defined]
        if any(flag in param.opts for param in command.params):
            found.append(path)
    return found


def test_every_seed_option_is_range_checked_before_any_work(cli, monkeypatch, tmp_path):
    """A seed numpy or torch would refuse deep inside a run is one line up front (exit 2)."""
    monkeypatch.chdir(tmp_path)  # nothing may be written, but if it were, not in the repo
    paths = _commands_with("--seed")
    assert {("audit",), ("eval",), ("discover",), ("demo",), ("celeba",), ("train",)} <= set(paths)
    for path in paths:
        for seed in ("-1", str(2**32)):
            r = cli(*path, "--seed", seed)
            assert r.exit_code == 2, (path, r.stdout, r.stderr)
            assert r.stderr.strip() == f"error: --seed must lie in [0, 2^32), got {seed}", path
    assert list(tmp_path.iterdir()) == []


def test_the_terminal_gets_no_control_characters_from_users_strings():
    """A concept name from a vocabulary or bank file could clear the screen (ESC [2J), plant a
    link (OSC 8) or reorder a line (U+202E); the console shows each such character as U+FFFD
    and keeps its own styles."""
    import io

    from rich.table import Table

    from audit.cli.app import SafeConsole

    hostile = "a\x1b[2Jb\x1b]8;;http://evil.example\x1b\\c\u202ed\x07e\x9bf\rg"
    buf = io.StringIO()
    console = SafeConsole(
        file=buf, force_terminal=True, color_system="standard", width=200, highlight=False
    )
    table = Table("concept")
    table.add_row(hostile)
    console.print(table)
    console.print("[bold]flagged[/]", hostile, markup=True)
    out = buf.getvalue()
    assert "\x1b[1m" in out  # rich's own bold survives
    for char in ("\x1b[2J", "\x1b]8", "\u202e", "\x07", "\x9b", "\r"):
        assert char not in out, repr(char)
    assert "a\ufffd[2Jb\ufffd]8;;http://evil.example\ufffd\\c\ufffdd" in out  # rich drops BEL, CR


def test_error_lines_carry_no_control_characters(cli, tmp_path):
    r = cli("check", "--config", tmp_path / "gate\x1b[2J\u202e.yaml", tmp_path / "r.json")
    assert r.exit_code == 2, r.stderr
    assert "\x1b" not in r.stderr and "\u202e" not in r.stderr
    assert "gate\ufffd[2J\ufffd.yaml" in r.stderr


@pytest.mark.parametrize(
    "command",
    [("check", "results.json", "--config", "gate.yaml"), ("models",), ("concepts", "show", "b")],
)
def test_every_command_takes_device_even_where_it_computes_nothing(cli, command):
    """A script that passes ``--device`` to every command works on these too; a name no
    device has is still refused, on parse, as one line."""
    r = cli(*command, "--device", "tpu")
    assert r.exit_code == 2
    assert r.stderr.strip() == "error: unknown device 'tpu'; use auto, cpu, cuda or cuda:N"
    help_text = cli(*command[:2] if command[0] == "concepts" else command[:1], "--help").stdout
    assert "--device" in help_text
