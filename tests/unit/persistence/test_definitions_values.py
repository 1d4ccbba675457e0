"""Frozen field values and their tagged JSON form."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pamqp import decode, encode

from amqpd.persistence.definitions.values import (
    ByteArray,
    FrozenTable,
    dumps,
    freeze,
    freeze_table,
    from_tagged,
    table_key,
    thaw,
    thaw_table,
    to_tagged,
)


def typed(value: object) -> object:
    """Equal only for values of the same AMQP types (bool is not int)."""
    if isinstance(value, dict | FrozenTable):
        return ("F", {key: typed(item) for key, item in value.items()})
    if isinstance(value, list | tuple):
        return ("A", [typed(item) for item in value])
    if isinstance(value, bytearray | ByteArray):
        return ("x", bytes(value))
    if isinstance(value, Decimal | datetime):
        return (type(value).__name__, str(value))
    return (type(value).__name__, value)


scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**64), max_value=2**64),
    st.floats(allow_nan=False),
    st.text(max_size=10),
    st.binary(max_size=10),
    st.binary(max_size=10).map(bytearray),
    st.decimals(allow_nan=False),
    st.datetimes(timezones=st.one_of(st.none(), st.just(UTC))),
)
field_values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.text(max_size=6), inner, max_size=4),
    ),
    max_leaves=12,
)


@settings(max_examples=100, deadline=None)
@given(field_values)
def test_tagged_json_round_trips_every_value_with_its_type(value: Any) -> None:
    stored = json.loads(dumps(to_tagged(value)))

    assert typed(from_tagged(stored)) == typed(value)


@settings(max_examples=40, deadline=None)
@given(st.dictionaries(st.text(max_size=6), field_values, max_size=5))
def test_table_key_ignores_key_order(table: dict[str, Any]) -> None:
    reordered = dict(reversed(list(table.items())))

    assert table_key(table) == table_key(reordered)


def test_table_key_tells_types_apart() -> None:
    keys = {
        table_key({"a": value})
        for value in (1, True, 1.0, Decimal(1), "1", b"1", bytearray(b"1"), [1])
    }
    assert len(keys) == 8


@pytest.mark.parametrize(
    ("value", "tagged"),
    [
        (b"\xff", {"$bytes": "/w=="}),
        (bytearray(b"\xff"), {"$bytearray": "/w=="}),
        (Decimal("1.50"), {"$decimal": "1.50"}),
        (datetime(2024, 1, 2, tzinfo=UTC), {"$datetime": "2024-01-02T00:00:00+00:00"}),
        (math.inf, {"$float": "inf"}),
        (-math.inf, {"$float": "-inf"}),
        ({"$only": 1}, {"$table": {"$only": 1}}),
        ({"$a": 1, "b": 2}, {"$a": 1, "b": 2}),
        ([1, "a", None, 2.5], [1, "a", None, 2.5]),
    ],
)
def test_tagged_form_is_as_documented(value: Any, tagged: object) -> None:
    assert to_tagged(value) == tagged


def test_nan_round_trips() -> None:
    back = from_tagged(json.loads(dumps(to_tagged(math.nan))))

    assert isinstance(back, float) and math.isnan(back)


@pytest.mark.parametrize(
    "bad",
    [
        {"$nope": "x"},
        {"$bytes": 1},
        {"$bytes": "***"},
        {"$table": []},
        {"$float": "1.5"},
        {"$decimal": "one"},
        {"$datetime": "yesterday"},
    ],
)
def test_malformed_tags_are_rejected(bad: object) -> None:
    with pytest.raises(ValueError):
        from_tagged(bad)


@pytest.mark.parametrize("bad", [{1, 2}, object(), {1: "int key"}, 1j])
def test_values_amqp_cannot_carry_are_rejected(bad: object) -> None:
    with pytest.raises(TypeError):
        freeze(bad)
    with pytest.raises(TypeError):
        to_tagged(bad)  # type: ignore[arg-type]


def test_frozen_table_is_read_only_hashable_and_equal_to_a_dict() -> None:
    table = freeze_table({"a": [1, {"b": bytearray(b"x")}]})

    assert table == {"a": (1, {"b": b"x"})}
    assert hash(table) == hash(freeze_table({"a": [1, {"b": bytearray(b"x")}]}))
    assert isinstance(table["a"], tuple)
    with pytest.raises(TypeError):
        table["a"] = 1  # type: ignore[index]
    assert freeze_table(None) == {} and freeze_table(table) is table
    assert "FrozenTable" in repr(table) and "ByteArray" in repr(table)


def test_thawed_tables_go_through_pamqp_and_back() -> None:
    table = freeze_table(
        {
            "s": "text",
            "i": 7,
            "b": False,
            "f": 0.5,
            "d": Decimal("3.14"),
            "t": datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC),
            "x": bytearray(b"raw"),
            "v": None,
            "a": [1, ["nested"], {"k": "v"}],
            "F": {"inner": 1},
        }
    )
    thawed = thaw_table(table)

    assert isinstance(thawed["a"], list) and isinstance(thawed["F"], dict)
    assert isinstance(thawed["x"], bytearray)
    _, decoded = decode.field_table(encode.field_table(thawed))
    assert typed(freeze_table(decoded)) == typed(table)
    assert thaw(b"\xff") == b"\xff"
