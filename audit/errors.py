"""Errors that map to the command line's exit codes: 0 success, 1 a gate failed, 2 bad input,
3 integrity failure, 4 internal error.

Library code raises these; the CLI turns them into a one-line message and an exit code,
so users never see a traceback for bad input.
"""

from __future__ import annotations

import re

EXIT_OK = 0
EXIT_GATE_FAILED = 1
EXIT_INPUT = 2
EXIT_INTEGRITY = 3
EXIT_INTERNAL = 4


_ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")


def first_line(exc: BaseException, limit: int | None = 200) -> str:
    """The first line of an exception's message (its type name if the message is empty), cut at
    ``limit`` characters: what a one-line error quotes from a library's multi-line message.

    >>> first_line(ValueError("bad header\\nat byte 12"))
    'bad header'
    >>> first_line(KeyError())
    'KeyError'
    """
    # Some libraries colour their messages (torch's refused weights_only load bolds a phrase);
    # the escape codes would print as garbage in a log or a CI step summary.
    text = _ANSI_ESCAPE.sub("", str(exc)).strip()
    line = text.splitlines()[0] if text else type(exc).__name__
    return line if limit is None else line[:limit]


class AuditError(Exception):
    """Base class of the errors the CLI reports without a traceback.

    ``details`` (optional, multi-line) is shown after the one-line message, e.g. the folder
    tree a data set is expected to have.
    """

    exit_code = EXIT_INTERNAL

    def __init__(self, message: str, details: str | None = None) -> None:
        super().__init__(message)
        self.details = details


class InputError(AuditError):
    """Bad usage, configuration or input data (exit code 2)."""

    exit_code = EXIT_INPUT


class IntegrityError(AuditError):
    """The SAE or classifier cannot be trusted on this data (exit code 3)."""

    exit_code = EXIT_INTEGRITY


def check_seed(value: int) -> int:
    """A seed, refused (one line, exit 2) outside ``[0, 2^32)``, what numpy's and torch's
    generators both accept: the one check behind every ``--seed`` and ``TrainConfig.seed``.

    >>> check_seed(7)
    7
    """
    if not 0 <= value < 2**32:
        raise InputError(f"--seed must lie in [0, 2^32), got {value}")
    return value
