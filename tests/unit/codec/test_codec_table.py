"""Field tables: raw entries round trip byte for byte, decoding matches pamqp
and an independent reading of every type tag, encoders pick RabbitMQ's tags.

Values are built here byte by byte, so the tags pamqp never writes ('B', 'u'
with small values, 'i', 'L', 'x' inside arrays, ...) are covered too.
"""

from __future__ import annotations

import datetime
import math
import struct
import time
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pamqp import decode as pamqp_decode
from pamqp import encode as pamqp_encode

from amqpd.codec import table

UTC = datetime.UTC
Tagged = tuple[bytes, Any]  # the encoded value (tag first) and what it reads as


def fixed(tag: str, fmt: str, values: st.SearchStrategy[Any]) -> Any:
    return values.map(lambda v: (tag.encode() + struct.pack(fmt, v), v))


def longstr(tag: bytes, data: bytes) -> bytes:
    return tag + struct.pack(">I", len(data)) + data


def text_value(data: bytes) -> str | bytes:
    try:
        return data.decode()
    except UnicodeDecodeError:
        return data  # pamqp hands back bytes that are not UTF-8


def timestamp_value(seconds: int) -> Tagged:
    moment = datetime.datetime.fromtimestamp(seconds, tz=UTC)
    return b"T" + struct.pack(">Q", seconds), moment


def decimal_value(scale: int, unscaled: int) -> Tagged:
    return b"D" + struct.pack(">Bi", scale, unscaled), Decimal(unscaled).scaleb(-scale)


strings = st.one_of(
    st.text(max_size=20).map(str.encode),
    st.binary(max_size=20),
)
keys = st.text(max_size=12).map(lambda s: s.encode()[:255].decode(errors="ignore"))

scalars: st.SearchStrategy[Tagged] = st.one_of(
    st.booleans().map(lambda v: (b"t" + bytes((v,)), v)),
    st.integers(0, 255).map(lambda v: (b"t" + bytes((v,)), bool(v))),
    fixed("b", ">b", st.integers(-(2**7), 2**7 - 1)),
    fixed("B", ">B", st.integers(0, 2**8 - 1)),
    fixed("s", ">h", st.integers(-(2**15), 2**15 - 1)),
    fixed("u", ">H", st.integers(0, 2**16 - 1)),
    fixed("I", ">i", st.integers(-(2**31), 2**31 - 1)),
    fixed("i", ">I", st.integers(0, 2**32 - 1)),
    fixed("l", ">q", st.integers(-(2**63), 2**63 - 1)),
    fixed("L", ">q", st.integers(-(2**63), 2**63 - 1)),  # the spec's int64
    st.floats(width=32, allow_nan=False).map(
        lambda v: (b"f" + struct.pack(">f", v), v)
    ),
    fixed("d", ">d", st.floats(allow_nan=False)),
    st.builds(decimal_value, st.integers(0, 255), st.integers(-(2**31), 2**31 - 1)),
    strings.map(lambda d: (longstr(b"S", d), text_value(d))),
    st.integers(0, 2**32 - 1).map(timestamp_value),
    st.just((b"V", None)),
    st.binary(max_size=20).map(lambda d: (longstr(b"x", d), bytearray(d))),
)


def array_of(items: list[Tagged]) -> Tagged:
    return longstr(b"A", b"".join(r for r, _ in items)), [v for _, v in items]


def encode_entries(entries: list[tuple[str, Tagged]]) -> bytes:
    body = b"".join(
        bytes((len(k.encode()),)) + k.encode() + raw for k, (raw, _) in entries
    )
    return struct.pack(">I", len(body)) + body


def table_of(entries: list[tuple[str, Tagged]]) -> Tagged:
    return b"F" + encode_entries(entries), {k: v for k, (_, v) in entries}


def unique_keys(entries: list[tuple[str, Tagged]]) -> list[tuple[str, Tagged]]:
    return list(dict(entries).items())


def entry_lists(values: st.SearchStrategy[Tagged]) -> Any:
    # unique keys by a map, not a filter: a filter makes hypothesis print the
    # whole recursive strategy
    return st.lists(st.tuples(keys, values), max_size=6).map(unique_keys)


values: st.SearchStrategy[Tagged] = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=5).map(array_of),
        entry_lists(inner).map(table_of),
    ),
    max_leaves=20,
)
tables = entry_lists(values)


def same(a: Any, b: Any) -> bool:
    """Equality that also tells an int from a bool and a float from an int."""
    if isinstance(a, dict):
        return (
            isinstance(b, dict)
            and a.keys() == b.keys()
            and all(same(a[k], b[k]) for k in a)
        )
    if isinstance(a, list):
        return (
            isinstance(b, list)
            and len(a) == len(b)
            and all(same(x, y) for x, y in zip(a, b, strict=True))
        )
    if isinstance(a, float) and math.isnan(a):
        return isinstance(b, float) and math.isnan(b)
    return type(a) is type(b) and bool(a == b)


# raw entries


@given(tables)
def test_split_and_join_round_trip_byte_for_byte(entries: list[Any]) -> None:
    raw = encode_entries(entries)
    split = table.split_table(raw)
    assert split == [(k, tagged[0]) for k, tagged in entries]
    assert table.join_table(split) == raw


@given(tables, st.integers(0, 5), values)
def test_replacing_one_entry_keeps_every_other_byte(
    entries: list[Any], index: int, new: Tagged
) -> None:
    split = table.split_table(encode_entries(entries))
    if not split:
        return
    index %= len(split)
    changed = [(k, new[0] if i == index else v) for i, (k, v) in enumerate(split)]
    expected = [(k, new if i == index else t) for i, (k, t) in enumerate(entries)]
    assert table.join_table(changed) == encode_entries(expected)


@given(values)
def test_value_length_covers_the_whole_value(value: Tagged) -> None:
    raw = value[0] + b"trailing"
    assert table.value_length(raw, 0) == len(value[0])
    assert table.value_length(b"pad" + raw, 3) == len(value[0])


@given(tables)
def test_every_truncation_of_a_table_is_refused(entries: list[Any]) -> None:
    raw = encode_entries(entries)
    for cut in range(len(raw)):
        with pytest.raises(ValueError):
            table.split_table(raw[:cut])


def test_table_length_beyond_its_entries_is_refused() -> None:
    with pytest.raises(ValueError, match="overruns"):
        table.split_table(b"\x00\x00\x00\x02\x01a")  # a key with no value
    with pytest.raises(ValueError, match="overruns"):
        table.split_table(b"\x00\x00\x00\x03\x01at\x01")  # value past the end


@pytest.mark.parametrize("tag", [b"Z", b"U", b"\x00", b"c"])
def test_unknown_type_tag_is_refused(tag: bytes) -> None:
    with pytest.raises(ValueError, match="unknown field type"):
        table.split_table(b"\x00\x00\x00\x04\x01a" + tag + b"\x00")


def test_key_that_is_not_utf8_is_refused() -> None:
    with pytest.raises(ValueError):
        table.split_table(b"\x00\x00\x00\x04\x01\xffV")


# decoding


@given(tables)
def test_decode_table_reads_every_type_tag(entries: list[Any]) -> None:
    raw = encode_entries(entries)
    decoded = table.decode_table(raw)
    assert same(decoded, {k: v for k, (_, v) in entries})
    assert same(decoded, pamqp_decode.field_table(raw)[1])


@given(values)
def test_decode_value_reads_every_type_tag(value: Tagged) -> None:
    assert same(table.decode_value(value[0]), value[1])


@settings(max_examples=50)
@given(st.dictionaries(keys, st.recursive(
    st.one_of(
        st.booleans(), st.integers(-(2**63), 2**63 - 1), st.text(max_size=10),
        st.none(), st.floats(width=32, allow_nan=False),
    ),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(keys, inner),
    max_leaves=10,
)))  # fmt: skip
def test_tables_pamqp_writes_split_and_decode_back(value: dict[str, Any]) -> None:
    raw = pamqp_encode.field_table(value)
    assert table.join_table(table.split_table(raw)) == raw
    assert table.decode_table(raw) == value


# encoders


@pytest.mark.parametrize(
    ("value", "raw"),
    [
        (True, b"t\x01"),
        (False, b"t\x00"),
        (0, b"I\x00\x00\x00\x00"),
        (-(2**31), b"I\x80\x00\x00\x00"),
        (2**31 - 1, b"I\x7f\xff\xff\xff"),
        (2**31, b"l\x00\x00\x00\x00\x80\x00\x00\x00"),
        (-(2**31) - 1, b"l\xff\xff\xff\xff\x7f\xff\xff\xff"),
        ("é", b"S\x00\x00\x00\x02\xc3\xa9"),
        (b"\xff", b"S\x00\x00\x00\x01\xff"),
        (bytearray(b"\x00"), b"x\x00\x00\x00\x01\x00"),
        (1.5, b"d" + struct.pack(">d", 1.5)),
        (Decimal("1.25"), b"D\x02\x00\x00\x00\x7d"),
        (Decimal("-3"), b"D\x00\xff\xff\xff\xfd"),
        (Decimal("1E+2"), b"D\x00\x00\x00\x00\x64"),
        (None, b"V"),
        ({"a": 1}, b"F\x00\x00\x00\x07\x01aI\x00\x00\x00\x01"),
        ([1, "b"], b"A\x00\x00\x00\x0bI\x00\x00\x00\x01S\x00\x00\x00\x01b"),
        ((), b"A\x00\x00\x00\x00"),
        (datetime.datetime(2020, 1, 1, tzinfo=UTC), b"T\x00\x00\x00\x00^\x0b\xe1\x00"),
    ],
    ids=repr,
)
def test_encode_value_picks_rabbitmq_type_tags(value: Any, raw: bytes) -> None:
    assert table.encode_value(value) == raw


def test_encode_value_refuses_types_a_table_cannot_hold() -> None:
    with pytest.raises(TypeError, match="cannot encode set"):
        table.encode_value({1})


@pytest.fixture
def new_york() -> Iterator[None]:
    """The process runs in a time zone far from UTC."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TZ", "America/New_York")
        time.tzset()
        yield
    time.tzset()


@pytest.mark.usefixtures("new_york")
def test_naive_datetime_is_written_as_utc_like_pamqp() -> None:
    naive = datetime.datetime(2020, 1, 1)
    assert table.encode_value(naive) == b"T" + pamqp_encode.timestamp(naive)
    assert table.timestamp(naive) == b"T\x00\x00\x00\x00^\x0b\xe1\x00"


scalar_values = st.one_of(
    st.booleans(),
    st.integers(-(2**63), 2**63 - 1),
    st.text(max_size=20),
    st.floats(allow_nan=False),
    st.none(),
    st.binary(max_size=10).map(bytearray),
    st.integers(0, 2**32 - 1).map(lambda s: datetime.datetime.fromtimestamp(s, UTC)),
    st.decimals(allow_nan=False, allow_infinity=False, places=3).filter(
        lambda d: abs(d) < 2**31 // 1000
    ),
)
python_values = st.recursive(
    scalar_values,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=4)
    ),
    max_leaves=12,
)


@given(python_values)
def test_encode_value_reads_back_as_the_same_value(value: Any) -> None:
    raw = table.encode_value(value)
    assert table.value_length(raw, 0) == len(raw)
    assert same(table.decode_value(raw), value)


def test_typed_encoders_write_their_tags() -> None:
    assert table.longstr("ab") == b"S\x00\x00\x00\x02ab"
    assert table.long_long(-1) == b"l" + b"\xff" * 8
    assert table.timestamp(7) == b"T\x00\x00\x00\x00\x00\x00\x00\x07"
    assert table.array([b"V", b"t\x01"]) == b"A\x00\x00\x00\x03Vt\x01"
    assert table.table([("k", b"V")]) == b"F\x00\x00\x00\x03\x01kV"
