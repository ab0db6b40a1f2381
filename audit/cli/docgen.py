"""The command-line reference, docs/cli.md, generated from the Typer app.

``python -m audit.cli.docgen`` rewrites docs/cli.md; ``--check`` exits 1 when the file is out of
date (tests/cli/test_docgen.py runs the same comparison). Every command, its help, usage,
arguments and options with their defaults come from the app itself, so the reference cannot
drift from ``--help``.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import typer.main
from rich.text import Text

DOC = Path(__file__).resolve().parents[2] / "docs" / "cli.md"

_HEADER = """\
# Command-line reference

<!-- Generated from the Typer app by `python -m audit.cli.docgen`; do not edit by hand.
     tests/cli/test_docgen.py fails when this file is out of date. -->

`msae-audit COMMAND --help` prints the same. `python -m audit` is the same command line (and
`torchrun … -m audit train|embed` runs it data-parallel, see [scaling.md](scaling.md)).

Exit codes, for every command:

| exit code | meaning |
| --- | --- |
| 0 | success; for `audit`, `celeba` and `check`: verdict `pass` (every gated check that could be judged passed) or `ungated` (no gate given: nothing judged) |
| 1 | verdict `fail` (a gated check failed) or `inconclusive` (every gated check skipped; 0 with `allow_skipped: true` in the gate) |
| 2 | usage, configuration or input error: one line naming the problem, never a traceback ([robustness.md](robustness.md)) |
| 3 | integrity failure: the SAE or the classifier cannot be trusted on this data |
| 4 | internal error (`MSAE_AUDIT_DEBUG=1` shows the traceback) |
"""


def _plain(markup: str) -> str:
    """Help text as the terminal shows it: rich markup rendered, whitespace folded."""
    return " ".join(Text.from_markup(markup).plain.split())


def _option_help(own: str, record: str) -> str:
    """An option's help as ``--help`` shows it: its own text is rich markup; what Click appends
    after it (``[default: …]``, ``[required]``) is literal — as markup it would vanish as a tag."""
    if own and record.startswith(own):
        appended = " ".join(record[len(own) :].split())
        return f"{_plain(own)} {appended}".strip()
    return " ".join(record.split())


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


# Typer ships its own copy of Click, so commands and contexts are duck-typed here.
def _commands(command: Any, ctx: Any) -> Iterator[tuple[Any, Any]]:
    """The command and its subcommands, depth first, in the app's order."""
    yield command, ctx
    for name, sub in getattr(command, "commands", {}).items():
        if not sub.hidden:
            yield from _commands(sub, sub.context_class(sub, info_name=name, parent=ctx))


def _section(command: Any, ctx: Any) -> list[str]:
    lines = [f"## `{ctx.command_path}`", ""]
    if command.help:
        lines += [_plain(command.help), ""]
    lines += ["```text", command.get_usage(ctx).strip(), "```", ""]
    if hasattr(command, "commands"):
        subs = [name for name, sub in command.commands.items() if not sub.hidden]
        lines += ["Commands: " + ", ".join(f"`{ctx.command_path} {s}`" for s in subs), ""]
    rows = []
    for param in command.get_params(ctx):
        record = param.get_help_record(ctx)
        if record is None:
            continue
        name, help_text = record
        rows.append(f"| `{_cell(name)}` | {_cell(_option_help(param.help or '', help_text))} |")
    if rows:
        lines += ["| argument / option | meaning |", "| --- | --- |", *rows, ""]
    return lines


def render() -> str:
    """docs/cli.md as the app stands now."""
    from audit.cli import _register_commands
    from audit.cli.app import app

    _register_commands()
    root = typer.main.get_command(app)
    ctx = root.context_class(
        root, info_name="msae-audit", terminal_width=400, max_content_width=400
    )
    lines = [_HEADER]
    for command, sub_ctx in _commands(root, ctx):
        lines += _section(command, sub_ctx)
    return "\n".join(lines).rstrip() + "\n"


def main(argv: list[str]) -> int:
    text = render()
    if "--check" in argv:
        current = DOC.read_text(encoding="utf-8") if DOC.exists() else ""
        if current != text:
            print(f"{DOC} is out of date: python -m audit.cli.docgen", file=sys.stderr)
            return 1
        return 0
    DOC.write_text(text, encoding="utf-8")
    print(f"wrote {DOC}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
