"""The Typer application object and the helpers every command module shares.

Command modules in this package register themselves on :data:`app` when imported; they parse
options, call the library and render. No maths lives here.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import typer
from rich.console import Console, ConsoleOptions, RenderableType
from rich.segment import Segment

#: What a terminal (or a CI log viewer) would act on instead of showing: C0/C1 control
#: characters but newline and tab (ESC starts colour, cursor, title and hyperlink sequences)
#: and the bidirectional overrides and isolates that reorder the text around them.
_TERMINAL_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


class SafeConsole(Console):
    """A rich console that writes no control character it did not make itself.

    Concept names, labels, column and file names reach the terminal from users' files; escaping
    rich markup is not enough, as a name holding ``ESC [2J`` would clear the screen and an OSC
    8 sequence would plant a link. Each such character of the text is shown as U+FFFD; rich's
    own styles and cursor moves (control segments) pass unchanged. The JSON keeps the strings
    verbatim.
    """

    def render(
        self, renderable: RenderableType, options: ConsoleOptions | None = None
    ) -> Iterable[Segment]:
        for segment in super().render(renderable, options):
            if segment.control or not _TERMINAL_UNSAFE.search(segment.text):
                yield segment
            else:
                text = _TERMINAL_UNSAFE.sub("\ufffd", segment.text)
                yield Segment(text, segment.style, segment.control)


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
console = SafeConsole(highlight=False)
err_console = SafeConsole(stderr=True, highlight=False)


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
