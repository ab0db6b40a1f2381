"""The ``msae-audit`` command line: a thin layer over the library.

Every error the library raises as :class:`audit.errors.AuditError` becomes one line on stderr and
its exit code (2 input/usage, 3 integrity); anything unexpected is exit code 4, with the
traceback only when ``MSAE_AUDIT_DEBUG=1``.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import pkgutil
import sys
import traceback

import typer

from audit.cli.app import app, err_console
from audit.errors import EXIT_INPUT, EXIT_INTERNAL, AuditError


def _register_commands() -> None:
    # Each module in this package (other than app) adds its commands to `app` on import.
    for module in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if module.name != "app":
            importlib.import_module(f"{__name__}.{module.name}")


def run(argv: list[str] | None = None) -> int:
    """Run the CLI and return its exit code (used by tests and :func:`main`)."""
    _tolerate_unencodable_output()
    _register_commands()
    command = typer.main.get_command(app)
    try:
        # Standalone mode lets Click report usage errors itself (exit code 2) and turns
        # ``typer.Exit(code)`` into SystemExit; our own errors propagate to the handlers below.
        command.main(args=argv, prog_name="msae-audit", standalone_mode=True)
    except SystemExit as exc:
        return _exit_code(exc.code)
    except AuditError as exc:
        err_console.print(
            f"{_rank_prefix()}[bold red]error:[/] {_one_line(str(exc))}",
            markup=True,
            soft_wrap=True,
        )
        if exc.details:
            # soft_wrap: a folder tree must not be re-wrapped at the terminal's width.
            err_console.print(
                exc.details, markup=False, highlight=False, style="dim", soft_wrap=True
            )
        return exc.exit_code
    except KeyboardInterrupt:
        err_console.print("interrupted")
        return 130
    except Exception as exc:
        if os.environ.get("MSAE_AUDIT_DEBUG"):
            traceback.print_exc()
        err_console.print(
            f"{_rank_prefix()}[bold red]internal error:[/] {type(exc).__name__}: {_one_line(str(exc))} "
            "(set MSAE_AUDIT_DEBUG=1 for the traceback)",
            markup=True,
            soft_wrap=True,
        )
        return EXIT_INTERNAL
    return 0


def _tolerate_unencodable_output() -> None:
    """Print file names that are not UTF-8 (surrogate-escaped by Python) as ``\\udce9`` instead
    of failing with UnicodeEncodeError; Python already does this for stderr, not for stdout."""
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            with contextlib.suppress(ValueError, OSError, TypeError):
                reconfigure(errors="backslashreplace")


def _exit_code(code: object) -> int:
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    err_console.print(str(code))
    return EXIT_INPUT


def _rank_prefix() -> str:
    """Under ``torchrun`` every process reports its own errors; say which one speaks."""
    from audit.distributed import env_rank, launched_with_torchrun

    try:
        return _escape(f"[rank {env_rank()}] ") if launched_with_torchrun() else ""
    except AuditError:
        return ""


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


def _one_line(text: str) -> str:
    from rich.markup import escape

    return escape(" ".join(text.split()))


def main() -> None:
    sys.exit(run(sys.argv[1:]))
