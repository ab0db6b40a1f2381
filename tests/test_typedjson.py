"""Typed JSON: dataclasses written, read back and described by a JSON Schema from one
declaration; every wrong value is an InputError naming its field."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import pytest

from audit.errors import InputError
from audit.typedjson import doc, from_plain, json_schema, to_plain


@dataclass(frozen=True)
class Inner:
    count: int = doc("a count", minimum=0)
    label: str | None = doc("a label", omit_none=True)


@dataclass(frozen=True)
class Outer:
    kind: Literal["a", "b"] = doc("the kind")
    ratio: float = doc("a number")
    interval: tuple[float, float] = doc("an interval")
    values: tuple[int, ...] = doc("integers")
    table: Mapping[str, float] = doc("numbers by name")
    inner: Inner = doc("nested")
    maybe: Inner | None = doc("nested or null")
    rest: Mapping[str, Any] = doc("other keys", rest=True)
    flag: bool = doc("true or false", default=False)


DOC = {"kind": "a", "ratio": 0.5, "interval": [0.1, 0.9], "values": [1, 2],
       "table": {"x": 1.5}, "inner": {"count": 3}, "maybe": None, "flag": True,
       "extra": {"kept": [1, "two"]}}  # fmt: skip


def test_round_trip_keeps_every_field_and_unknown_keys():
    obj = from_plain(Outer, DOC)
    assert obj.interval == (0.1, 0.9) and obj.inner == Inner(3, None)
    assert obj.rest == {"extra": {"kept": [1, "two"]}}
    assert to_plain(obj) == DOC  # omit_none: inner.label is left out again


def test_defaults_and_omitted_fields():
    data = {k: v for k, v in DOC.items() if k not in ("flag", "extra")}
    data["inner"] = {"count": 0, "label": "l"}
    obj = from_plain(Outer, data)
    assert obj.flag is False and obj.inner.label == "l" and obj.rest == {}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"kind": "c"}, "kind must be one of a, b"),
        ({"ratio": True}, "ratio must be a number"),
        ({"ratio": float("inf")}, "ratio must be a number"),
        ({"interval": [1.0]}, r"interval must be \[low, high\]"),
        ({"values": [1, 2.5]}, r"values\[1\] must be an integer"),
        ({"table": {"x": "y"}}, "table.x must be a number"),
        ({"inner": {"count": -1}}, "inner.count must be a count"),
        ({"inner": {}}, "inner.count is missing"),
        ({"maybe": 3}, "maybe must be an object or null"),
        ({"flag": 1}, "flag must be true or false"),
    ],
)
def test_wrong_values_name_their_field(change, message):
    with pytest.raises(InputError, match=f"thing is malformed: {message}"):
        from_plain(Outer, {**DOC, **change}, what="thing")


def test_schema_states_types_requirements_and_extra_keys():
    jsonschema = pytest.importorskip("jsonschema")
    schema = json_schema(Outer, title="t", schema_id="urn:t", const={"kind": "a"})
    jsonschema.Draft202012Validator.check_schema(schema)
    assert set(schema["required"]) == {"kind", "ratio", "interval", "values", "table", "inner",
                                       "maybe"}  # fmt: skip
    assert schema["additionalProperties"] is True  # the rest field
    assert schema["$defs"]["Inner"]["required"] == ["count"]
    validator = jsonschema.Draft202012Validator(schema)
    assert validator.is_valid(DOC)
    assert not validator.is_valid({**DOC, "kind": "b"})  # const
    assert not validator.is_valid({**DOC, "inner": {"count": -1}})  # minimum
