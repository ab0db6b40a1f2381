"""The Typer application object and the helpers every command module shares.

Command modules in this package register themselves on :data:`app` when imported; they parse
options, call the library and render. No maths lives here.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

import typer
from rich.console import Console

from audit.errors import InputError
from audit.fileio import read_yaml

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


def progress_enabled(quiet: bool = False) -> bool:
    return not quiet and err_console.is_terminal


def load_yaml_config(path: Path | None, allowed: set[str], what: str = "config") -> dict[str, Any]:
    """A flat YAML mapping of option names (``batch-size`` or ``batch_size``) to values."""
    if path is None:
        return {}
    data = read_yaml(path, f"{what} file")
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected a mapping of option names to values")
    out = {}
    for key, value in data.items():
        name = str(key).replace("-", "_")
        if name not in allowed:
            valid = ", ".join(sorted(k.replace("_", "-") for k in allowed))
            raise InputError(f"{path}: unknown option '{key}' (valid: {valid})")
        out[name] = value
    return out


def pick(
    cli_value: Any, config: dict[str, Any], name: str, default: Any, kind: type | None = None
) -> Any:
    """Explicit command-line value, else the YAML config's, else the default.

    With ``kind`` (``int``, ``float``, ``str`` or ``bool``) a value from the config file is
    checked: a wrong type is an :class:`InputError` naming the option, never a crash later.
    """
    if cli_value is not None:
        return cli_value
    if name not in config:
        return default
    value = config[name]
    if kind is None or value is None:
        return value
    return _check_kind(value, kind, name)


def _check_kind(value: Any, kind: type, name: str) -> Any:
    option = name.replace("_", "-")
    if kind is bool:
        if not isinstance(value, bool):
            raise InputError(f"config option '{option}' must be true or false, got {value!r}")
        return value
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise InputError(f"config option '{option}' must be an integer, got {value!r}")
        return value
    if kind is float:
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not math.isfinite(value)
        ):
            raise InputError(f"config option '{option}' must be a number, got {value!r}")
        return float(value)
    if not isinstance(value, (str, int, float)) or isinstance(value, bool):
        raise InputError(f"config option '{option}' must be text, got {value!r}")
    return str(value)


def stdout_is_redirected() -> bool:
    return not sys.stdout.isatty()
