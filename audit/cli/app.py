"""The Typer application object and the helpers every command module shares.

Command modules in this package register themselves on :data:`app` when imported; they parse
options, call the library and render. No maths lives here.
"""

from __future__ import annotations

import typer
from rich.console import Console

app = typer.Typer(
    name="msae-audit",
    help="Audit CLIP-embedding classifiers for bias with Matryoshka sparse autoencoders.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
)

#: Results (tables, summaries) go to stdout; progress and errors to stderr.
console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)


def _print_version(value: bool) -> None:
    if value:
        from audit import __version__

        console.print(f"msae-audit {__version__}", markup=False)
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False,
        "--version",
        help="Print the version and exit.",
        callback=_print_version,
        is_eager=True,
        show_default=False,
    ),
) -> None:
    """Audit CLIP-embedding classifiers for bias with Matryoshka sparse autoencoders."""

