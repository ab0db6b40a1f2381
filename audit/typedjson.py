"""Frozen dataclasses to and from JSON, driven by their type hints — one writer, one reader and
one JSON Schema per document type, so a field is declared exactly once.

Supported field types: ``bool``, ``int``, ``float``, ``str``, ``Literal[...]``, ``X | None``,
``tuple[float, float]`` (an interval), ``tuple[X, ...]``, ``Mapping[str, X]``, ``Any`` (any JSON
value) and nested dataclasses. Field metadata (see :func:`doc`):

* ``doc`` — the description written into the JSON Schema;
* ``omit_none`` — the key is left out when the value is None (and may be absent when read);
* ``minimum`` — the smallest allowed number (counts: 0);
* ``rest`` — a ``Mapping[str, Any]`` field that collects the object's other keys (the writer
  merges them back in), so documents carry fields this code does not know.

The reader is for files users hand us: any value of the wrong type is an
:class:`~audit.errors.InputError` naming where it is (``concepts[3].ci``), never a crash.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Mapping
from functools import cache
from typing import Any, Literal, NoReturn, TypeVar, Union, get_args, get_origin

from audit.errors import InputError

T = TypeVar("T")


def doc(
    text: str,
    *,
    default: Any = dataclasses.MISSING,
    omit_none: bool = False,
    minimum: float | None = None,
    rest: bool = False,
) -> Any:
    """A dataclass field with its JSON description (and the options above)."""
    meta = {"doc": text, "omit_none": omit_none, "minimum": minimum, "rest": rest}
    if default is dataclasses.MISSING:
        return dataclasses.field(metadata=meta)
    if isinstance(default, (dict, list)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


# ------------------------------------------------------------------------------------------
# Writing
# ------------------------------------------------------------------------------------------


def to_plain(value: Any) -> Any:
    """Dataclasses to dicts (recursively), tuples to lists; everything else as it is."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        out: dict[str, Any] = {}
        for f in dataclasses.fields(value):
            item = getattr(value, f.name)
            if f.metadata.get("rest"):
                out.update({k: to_plain(v) for k, v in item.items()})
            elif not (item is None and f.metadata.get("omit_none")):
                out[f.name] = to_plain(item)
        return out
    if isinstance(value, Mapping):
        return {k: to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_plain(v) for v in value]
    return value


# ------------------------------------------------------------------------------------------
# Reading
# ------------------------------------------------------------------------------------------


class Malformed(InputError):
    """A document field of the wrong type (the message names the field)."""


def from_plain(cls: type[T], data: Any, where: str = "", what: str = "document") -> T:
    """Build ``cls`` from parsed JSON, checking every field; :class:`InputError` if malformed."""
    return _read(cls, data, where, what)


def _fail(what: str, where: str, expected: str, value: Any) -> NoReturn:
    shown = repr(value)
    shown = shown if len(shown) <= 60 else shown[:57] + "..."
    raise Malformed(
        f"{what} is malformed: {where or 'the document'} must be {expected}, got {shown}"
    )


def _is_number(value: Any) -> bool:
    return (
        not isinstance(value, bool)
        and isinstance(value, (int, float))
        and math.isfinite(float(value))
    )


def _read(tp: Any, value: Any, where: str, what: str, minimum: float | None = None) -> Any:
    origin, args = get_origin(tp), get_args(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        for option in options:
            try:
                return _read(option, value, where, what, minimum)
            except Malformed:
                continue
        _fail(what, where, describe(tp), value)
    if origin is Literal:
        if value not in args:
            _fail(what, where, describe(tp), value)
        return value
    if dataclasses.is_dataclass(tp):
        return _read_dataclass(tp, value, where, what)
    if origin is tuple:
        return _read_tuple(tp, value, where, what)
    if origin is Mapping:
        if not isinstance(value, dict):
            _fail(what, where, describe(tp), value)
        return {
            str(k): _read(args[1], v, f"{where}.{k}" if where else str(k), what)
            for k, v in value.items()
        }
    return _read_scalar(tp, value, where, what, minimum)


def _read_scalar(tp: Any, value: Any, where: str, what: str, minimum: float | None) -> Any:
    if tp is bool:
        if not isinstance(value, bool):
            _fail(what, where, "true or false", value)
        return value
    if tp is str:
        if not isinstance(value, str):
            _fail(what, where, "text", value)
        return value
    if tp is int:
        if (
            not _is_number(value)
            or int(value) != value
            or (minimum is not None and value < minimum)
        ):
            _fail(what, where, "a count" if minimum == 0 else "an integer", value)
        return int(value)
    if tp is float:
        if not _is_number(value) or (minimum is not None and value < minimum):
            _fail(what, where, "a number", value)
        return value
    raise TypeError(f"unsupported field type {tp!r}")


def _read_tuple(tp: Any, value: Any, where: str, what: str) -> tuple:
    args = get_args(tp)
    if not isinstance(value, list):
        _fail(what, where, describe(tp), value)
    if len(args) == 2 and args[1] is Ellipsis:
        return tuple(_read(args[0], v, f"{where}[{i}]", what) for i, v in enumerate(value))
    if len(value) != len(args):
        _fail(what, where, describe(tp), value)
    try:
        return tuple(_read(a, v, where, what) for a, v in zip(args, value, strict=True))
    except Malformed:
        _fail(what, where, describe(tp), value)


def _read_dataclass(cls: Any, value: Any, where: str, what: str) -> Any:
    if not isinstance(value, dict):
        _fail(what, where, "an object", value)
    kwargs: dict[str, Any] = {}
    known = set()
    rest_field = None
    for f, tp in _fields(cls):
        known.add(f.name)
        if f.metadata.get("rest"):
            rest_field = f.name
            continue
        inner = f"{where}.{f.name}" if where else f.name
        if f.name not in value:
            if f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING:
                continue
            if f.metadata.get("omit_none"):
                kwargs[f.name] = None
                continue
            raise Malformed(f"{what} is malformed: {inner} is missing")
        kwargs[f.name] = _read(tp, value[f.name], inner, what, f.metadata.get("minimum"))
    if rest_field is not None:
        kwargs[rest_field] = {k: v for k, v in value.items() if k not in known}
    return cls(**kwargs)


@cache
def _fields(cls: Any) -> tuple[tuple[dataclasses.Field, Any], ...]:
    hints = typing.get_type_hints(cls)
    return tuple((f, hints[f.name]) for f in dataclasses.fields(cls))


def describe(tp: Any) -> str:
    """How an error message names a type (``a number or null``, ``[low, high]`` …)."""
    origin, args = get_origin(tp), get_args(tp)
    if origin in (Union, types.UnionType):
        parts = [describe(a) for a in args if a is not type(None)]
        text = " or ".join(parts)
        return f"{text} or null" if type(None) in args else text
    if origin is Literal:
        return "one of " + ", ".join(map(str, args))
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return "a list"
        return "[low, high]" if len(args) == 2 else f"a list of {len(args)}"
    if origin is Mapping or dataclasses.is_dataclass(tp):
        return "an object"
    return {bool: "true or false", str: "text", int: "an integer", float: "a number"}.get(
        tp, "a value"
    )


# ------------------------------------------------------------------------------------------
# JSON Schema
# ------------------------------------------------------------------------------------------


def json_schema(cls: Any, *, title: str, schema_id: str, const: Mapping[str, Any]) -> dict:
    """A draft 2020-12 JSON Schema of the documents ``cls`` writes (``const``: fixed values)."""
    defs: dict[str, Any] = {}
    root = _object_schema(cls, defs)
    for key, value in const.items():
        root["properties"][key] = {**root["properties"][key], "const": value}
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": schema_id,
        "title": title,
        **root,
        "$defs": dict(sorted(defs.items())),
    }


def _object_schema(cls: Any, defs: dict[str, Any]) -> dict:
    props: dict[str, Any] = {}
    required = []
    extra_allowed = False
    for f, tp in _fields(cls):
        if f.metadata.get("rest"):
            extra_allowed = True
            continue
        prop = _type_schema(tp, defs, f.metadata.get("minimum"))
        if f.metadata.get("doc"):
            prop = {"description": f.metadata["doc"], **prop}
        props[f.name] = prop
        has_default = (
            f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
        )
        if not (has_default or f.metadata.get("omit_none")):
            required.append(f.name)
    out: dict[str, Any] = {"type": "object"}
    if cls.__doc__:
        out["description"] = " ".join(cls.__doc__.split())
    out.update(properties=props, required=required, additionalProperties=extra_allowed)
    return out


def _type_schema(tp: Any, defs: dict[str, Any], minimum: float | None = None) -> dict:
    origin, args = get_origin(tp), get_args(tp)
    if tp is Any:
        return {}
    if origin in (Union, types.UnionType):
        options = [_type_schema(a, defs, minimum) for a in args if a is not type(None)]
        if type(None) in args:
            options.append({"type": "null"})
        return options[0] if len(options) == 1 else {"anyOf": options}
    if origin is Literal:
        return {"enum": list(args)}
    if dataclasses.is_dataclass(tp):
        name = tp.__name__
        if name not in defs:
            defs[name] = {}  # reserve the name first: the type may refer to itself
            defs[name] = _object_schema(tp, defs)
        return {"$ref": f"#/$defs/{name}"}
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return {"type": "array", "items": _type_schema(args[0], defs)}
        items = [_type_schema(a, defs) for a in args]
        return {"type": "array", "prefixItems": items, "minItems": len(args),
                "maxItems": len(args)}  # fmt: skip
    if origin is Mapping:
        return {"type": "object", "additionalProperties": _type_schema(args[1], defs)}
    scalar = {bool: "boolean", str: "string", int: "integer", float: "number"}[tp]
    out: dict[str, Any] = {"type": scalar}
    if minimum is not None:
        out["minimum"] = minimum
    return out
