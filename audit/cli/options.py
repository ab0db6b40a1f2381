"""A command's options as one frozen dataclass: the single statement of every default.

Each field is made with :func:`option` or :func:`argument`, which record the flags and the
help next to the default. :func:`command_options` turns the dataclass into the Typer
command's parameters and calls the command with one typed instance, so that

* ``--help`` shows every default (``[default: …]``; where the value alone does not say what
  happens, e.g. ``None``, the field says it in words);
* an optional ``--config FILE.yaml`` is read against the same fields and types (the command
  line wins over the file, the file over the default);
* nothing else in the command restates a default.

Example::

    @dataclass(frozen=True)
    class GreetOptions:
        name: str = option("world", "--name", help="Who to greet.")
        quiet: bool = quiet_option()

    @app.command()
    @command_options(GreetOptions)
    def greet(opts: GreetOptions) -> None: ...
"""

from __future__ import annotations

import inspect
import math
import types
import typing
from collections.abc import Callable
from dataclasses import MISSING, Field, dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar

import typer
from rich.markup import escape

from audit.device import check_device_name
from audit.errors import InputError, check_seed
from audit.fileio import read_yaml

T = TypeVar("T")
_META = "msae-audit.option"


@dataclass(frozen=True)
class _Spec:
    flags: tuple[str, ...]  # empty: a positional argument
    help: str
    shown: str | None  # how --help states the default, when not the value itself
    required: bool
    in_config: bool  # may a --config file set it
    typer_kwargs: dict[str, Any]


def option(
    default: Any,
    *flags: str,
    help: str,
    shown: str | None = None,
    required: bool = False,
    in_config: bool = True,
    **typer_kwargs: Any,
) -> Any:
    """A command-line option with its default, flags and help (extra keywords go to Typer).

    A ``None`` default needs ``shown``: the words ``--help`` prints for it ("the SAE's model",
    "no limit"). ``required`` options have no default; with ``--config`` they may come from
    the file instead of the command line.
    """
    if default is None and shown is None and not required:
        raise TypeError(f"option {flags[0]}: a None default needs `shown` (what it means)")
    spec = _Spec(tuple(flags), help, shown, required, in_config, typer_kwargs)
    if isinstance(default, (list, tuple)):
        items = list(default)
        return field(default_factory=lambda: list(items), metadata={_META: spec})
    return field(default=default, metadata={_META: spec})


def argument(*, help: str, default: Any = None, **typer_kwargs: Any) -> Any:
    """A required positional argument (``default`` only fills the dataclass field)."""
    spec = _Spec((), help, None, True, False, typer_kwargs)
    return field(default=default, metadata={_META: spec})


def quiet_option() -> Any:
    return option(False, "--quiet", "-q", help="No progress output.", in_config=False)


#: The help of ``--device`` on commands that compute nothing on one (check, models, show).
IDLE_DEVICE_HELP = "auto | cpu | cuda | cuda:N; accepted as on every command, unused here."


def device_option(default: str = "auto", help: str = "auto | cpu | cuda | cuda:N") -> Any:
    # Checked as it is parsed: a command that ends up not using a device (concepts with
    # --text-embeddings) still refuses a name it could never use.
    return option(default, "--device", help=help, callback=check_device_name)


def seed_option(default: int, help: str) -> Any:
    """``--seed``, checked by a Typer callback, so every command refuses it before any work."""
    return option(default, "--seed", help=help, callback=check_seed)


def shown_default(f: Field[Any]) -> str:
    """How ``--help`` states the default of ``f``."""
    spec: _Spec = f.metadata[_META]
    if spec.shown is not None:
        return spec.shown
    value = f.default_factory() if f.default is MISSING else f.default  # type: ignore[misc]
    if isinstance(value, bool):
        pair = next((flag for flag in spec.flags if "/" in flag), None)
        if pair is not None:
            on, off = pair.split("/")
            return (on if value else off).lstrip("-")
        return "on" if value else "off"
    if isinstance(value, list):
        return ", ".join(repr(v) for v in value) if value else "none"
    return str(value)


def command_options(cls: type[T], *, config_file: bool = False) -> Callable[..., Any]:
    """Decorator: the command takes one ``cls`` instance built from its options (and, with
    ``config_file``, a ``--config FILE.yaml``); put it under ``@app.command()``.

    A command that needs the Typer context (a group callback) takes ``(ctx, opts)``.
    """
    hints = typing.get_type_hints(cls)

    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        wants_context = len(inspect.signature(func).parameters) == 2

        def run(ctx: typer.Context, **values: Any) -> Any:
            config = values.pop("config", None)
            opts = resolve_options(ctx, cls, values, config)
            return func(ctx, opts) if wants_context else func(opts)

        params = [inspect.Parameter("ctx", inspect.Parameter.KEYWORD_ONLY)]
        annotations: dict[str, Any] = {"ctx": typer.Context}
        for f in _help_order(cls):
            params.append(
                inspect.Parameter(
                    f.name, inspect.Parameter.KEYWORD_ONLY, default=_typer_parameter(f, config_file)
                )
            )
            annotations[f.name] = hints[f.name]
        if config_file:
            params.append(
                inspect.Parameter(
                    "config",
                    inspect.Parameter.KEYWORD_ONLY,
                    default=typer.Option(
                        None,
                        "--config",
                        help="YAML file with any of these options (the command line wins). "
                        + escape("[default: none]"),
                        show_default=False,
                    ),
                )
            )
            annotations["config"] = Path | None
        run.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
        run.__annotations__ = annotations
        run.__name__, run.__doc__ = func.__name__, func.__doc__
        run.__module__ = func.__module__
        return run

    return decorate


def _help_order(cls: type) -> list[Field[Any]]:
    """The fields with a subclass's own options first: a command's specific options lead its
    ``--help``, the ones it shares with related commands follow."""
    depth = {}
    for level, klass in enumerate(cls.__mro__):
        for name in inspect.get_annotations(klass):
            depth.setdefault(name, level)
    return sorted(fields(cls), key=lambda f: depth.get(f.name, 0))  # type: ignore[arg-type]


def _typer_parameter(f: Field[Any], config_file: bool) -> Any:
    spec: _Spec = f.metadata[_META]
    if not spec.flags:
        return typer.Argument(..., help=spec.help, show_default=False, **spec.typer_kwargs)
    if spec.required and not (config_file and spec.in_config):
        return typer.Option(..., *spec.flags, help=spec.help, **spec.typer_kwargs)
    if spec.required:  # may come from --config: checked after the file is read
        default, note = None, "[required, here or in --config]"
    else:
        default = f.default_factory() if f.default is MISSING else f.default  # type: ignore[misc]
        note = f"[default: {shown_default(f)}]"
    # The default goes into the help text itself: Typer drops a None default and puts a
    # described one in parentheses.
    return typer.Option(
        default,
        *spec.flags,
        help=f"{spec.help} {escape(note)}",
        show_default=False,
        **spec.typer_kwargs,
    )


def resolve_options(
    ctx: typer.Context, cls: type[T], values: dict[str, Any], config: Path | None = None
) -> T:
    """``cls`` from the parsed command line, a YAML file's values for the options not given
    on the command line, and the defaults for the rest."""
    from_file = read_config_file(config, cls) if config is not None else {}
    chosen = {}
    for f in fields(cls):  # type: ignore[arg-type]
        # Typer bundles its own click: compare the source by name, not with click's enum.
        source = ctx.get_parameter_source(f.name)
        given = source is not None and source.name not in ("DEFAULT", "DEFAULT_MAP")
        value = values[f.name] if given or f.name not in from_file else from_file[f.name]
        spec: _Spec = f.metadata[_META]
        if spec.required and value is None:
            where = " (on the command line or in --config)" if config is not None else ""
            raise InputError(f"{spec.flags[0]} is required{where}: {spec.help}")
        chosen[f.name] = value
    return cls(**chosen)


def read_config_file(path: Path, cls: type) -> dict[str, Any]:
    """A flat YAML mapping of option names (``batch-size`` or ``batch_size``) to values, each
    checked against the field's type: a wrong type is an :class:`InputError` naming it."""
    data = read_yaml(path, "config file")
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected a mapping of option names to values")
    hints = typing.get_type_hints(cls)
    allowed = {
        f.name for f in fields(cls) if f.metadata[_META].in_config and f.metadata[_META].flags
    }
    out = {}
    for key, value in data.items():
        name = str(key).replace("-", "_")
        if name not in allowed:
            valid = ", ".join(sorted(k.replace("_", "-") for k in allowed))
            raise InputError(f"{path}: unknown option '{key}' (valid: {valid})")
        out[name] = check_config_value(value, hints[name], name)
    return out


def check_config_value(value: Any, kind: Any, name: str) -> Any:
    """``value`` from a config file as ``kind`` (``int``, ``float``, ``str``, ``bool``,
    ``Path``, ``list[str]`` or one of these ``| None``)."""
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        if value is None:
            return None
        kind = next(k for k in typing.get_args(kind) if k is not type(None))
    option = name.replace("_", "-")
    if typing.get_origin(kind) is list:
        items = value if isinstance(value, list) else [value]
        return [check_config_value(v, str, name) for v in items]
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
    return Path(str(value)) if kind is Path else str(value)
