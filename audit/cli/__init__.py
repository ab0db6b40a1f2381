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
from typing import Any

import typer

from audit.cli.app import app, err_console
from audit.errors import EXIT_INPUT, EXIT_INTERNAL, AuditError

# The parser's errors derive from Click's ClickException: plain Click's, or the copy Typer
# vendors in a private module. Typer's public BadParameter is one of them, so its base class is
# the one the parser raises, whichever Click that is.
ClickException: type[Exception] = next(
    base for base in typer.BadParameter.__mro__ if base.__name__ == "ClickException"
)


def _register_commands() -> None:
    # Each module in this package (other than app) adds its commands to `app` on import.
    for module in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if module.name != "app":
            importlib.import_module(f"{__name__}.{module.name}")


def run(argv: list[str] | None = None) -> int:
    """Run the CLI and return its exit code (used by tests and :func:`main`)."""
    _tolerate_unencodable_output()
    stdout = sys.stdout
    sys.stdout = _ReaderMayLeave(stdout)  # type: ignore[assignment]
    try:
        return _run(argv)
    finally:
        sys.stdout = stdout


class _ReaderMayLeave:
    """``sys.stdout`` whose reader may go away (``msae-audit audit … | head``): the rest of the
    output is dropped and the command still ends with its own exit code. Click would end it
    with 1 on the broken pipe, the code of a failed gate, whatever the verdict was."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream
        self._gone = False

    def write(self, text: str) -> int:
        if not self._gone:
            try:
                return self._stream.write(text)
            except BrokenPipeError:
                self._drop()
        return len(text)

    def flush(self) -> None:
        if not self._gone:
            try:
                self._stream.flush()
            except BrokenPipeError:
                self._drop()

    def _drop(self) -> None:
        self._gone = True
        # Python flushes stdout once more at exit; pointing the descriptor at /dev/null keeps
        # that flush from failing too.
        with contextlib.suppress(OSError, ValueError, AttributeError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self._stream.fileno())
            os.close(devnull)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def _run(argv: list[str] | None) -> int:
    _register_commands()
    command = typer.main.get_command(app)
    try:
        # Not standalone: ``typer.Exit(code)`` comes back as the return value, and Click's usage
        # errors reach the handler below, which prints them as one line like every other error.
        returned = command.main(args=argv, prog_name="msae-audit", standalone_mode=False)
        return returned if type(returned) is int else 0  # typer.Exit(code), or a command's end
    except SystemExit as exc:
        return _exit_code(exc.code)
    except ClickException as exc:
        return _usage_error(exc)
    except typer.Abort:
        err_console.print("aborted")
        return 1
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


def _usage_error(exc: Exception) -> int:
    """A usage error (missing or unknown option, bad value) as one line, exit code 2. With no
    arguments at all the command's help has been printed already (Click's no_args_is_help;
    recognised by name, as Typer does: its class is not public)."""
    if type(exc).__name__ == "NoArgsIsHelpError":
        return EXIT_INPUT
    ctx = getattr(exc, "ctx", None)
    hint = f" (see {ctx.command_path} --help)" if ctx is not None else ""
    err_console.print(
        f"{_rank_prefix()}[bold red]error:[/] {_one_line(exc.format_message())}{_escape(hint)}",
        markup=True,
        soft_wrap=True,
    )
    return EXIT_INPUT


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
