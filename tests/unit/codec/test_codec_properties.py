"""Content header properties read lazily from the raw header equal what
pamqp decodes, and rebuilding a header changes only what it is asked to.

pamqp drops empty short strings when it encodes properties, so the property
sets here use non-empty strings; empty ones are covered by hand-built bytes.
pamqp's Properties() refuses a delivery mode other than 1 or 2 and any
cluster id, so those are set after construction to cover every octet.
"""

from __future__ import annotations

import datetime
import struct
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pamqp import commands as spec
from pamqp import encode as pamqp_encode
from pamqp.header import ContentHeader

from amqpd.codec import properties

UTC = datetime.UTC
KINDS = dict(zip(properties.FIELDS, "ssFoossssTssss", strict=True))


def pamqp_name(name: str) -> str:
    return "message_type" if name == "type" else name


shortstrs = st.text(min_size=1, max_size=255).map(
    lambda s: s.encode()[:255].decode(errors="ignore")
)
octets = st.integers(0, 255)
timestamps = st.integers(0, 2**32 - 1).map(
    lambda s: datetime.datetime.fromtimestamp(s, UTC)
)
field_scalars = st.one_of(
    st.booleans(),
    st.integers(-(2**63), 2**63 - 1),
    st.text(max_size=20),
    st.floats(width=32, allow_nan=False),
    st.none(),
    timestamps,
    st.decimals(allow_nan=False, allow_infinity=False, places=2).filter(
        lambda d: abs(d) < 2**31 // 100
    ),
    st.binary(max_size=10).map(bytearray),
)
field_keys = st.text(min_size=1, max_size=10)
field_values = st.recursive(
    field_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(field_keys, inner),
    max_leaves=10,
)
tables = st.dictionaries(field_keys, field_values, max_size=6)
STRATEGIES = {"s": shortstrs, "o": octets, "T": timestamps, "F": tables}


@st.composite
def property_sets(draw: st.DrawFn) -> dict[str, Any]:
    present = draw(st.sets(st.sampled_from(properties.FIELDS)))
    return {name: draw(STRATEGIES[KINDS[name]]) for name in present}


def pamqp_properties(values: dict[str, Any]) -> Any:
    props = spec.Basic.Properties()
    for name, value in values.items():
        setattr(props, pamqp_name(name), value)
    return props


def encode(name: str, value: Any) -> bytes:
    return spec.Basic.Properties().encode_property(pamqp_name(name), value)


def build(values: dict[str, Any], body_size: int = 0) -> bytes:
    return ContentHeader(0, body_size, pamqp_properties(values)).marshal()


def pamqp_read(header: bytes) -> Any:
    content_header = ContentHeader()
    content_header.unmarshal(header)
    return content_header


def pamqp_value(props: Any, name: str) -> Any:
    value = getattr(props, pamqp_name(name))
    return None if value == "" else value  # cluster_id defaults to ''


def assert_reads_as_pamqp(header: bytes) -> dict[str, tuple[int, int]]:
    spans = properties.scan(header)
    reference = pamqp_read(header).properties
    for name in properties.FIELDS:
        ours = properties.get(header, spans, name)
        theirs = pamqp_value(reference, name)
        if KINDS[name] == "T" and theirs is not None:
            theirs = int(theirs.timestamp())
        assert ours == theirs, name
        assert (name in spans) == (theirs is not None), name
        raw = properties.raw(header, spans, name)
        assert raw == (None if theirs is None else header[slice(*spans[name])])
    return spans


# reading


@given(property_sets(), st.integers(0, 2**63 - 1))
def test_scan_and_get_equal_pamqp(values: dict[str, Any], body_size: int) -> None:
    header = build(values, body_size)
    spans = assert_reads_as_pamqp(header)
    assert set(spans) == set(values)
    assert properties.body_size(header) == pamqp_read(header).body_size == body_size


@given(property_sets(), st.integers(0, 2**63 - 1), st.integers(0, 2**63 - 1))
def test_shared_scan_equals_scan_whatever_the_body_size(
    values: dict[str, Any], size: int, other_size: int
) -> None:
    header = build(values, size)
    kept, spans = properties.scan_shared(header)
    assert kept == header and spans == properties.scan(header)
    # a second header equal to the first is swapped for the first
    again = build(values, size)
    assert properties.scan_shared(again)[0] is kept
    # the same properties with another body size share the spans
    other = build(values, other_size)
    assert properties.scan_shared(other)[1] == properties.scan(other)


def test_headers_differing_only_in_values_share_one_spans_dict() -> None:
    first = build({"message_id": "id-0001", "delivery_mode": 2}, 10)
    second = build({"message_id": "id-0002", "delivery_mode": 2}, 99)
    longer = build({"message_id": "id-00003", "delivery_mode": 2}, 10)
    spans = properties.scan_shared(first)[1]
    assert properties.scan_shared(second)[1] is spans
    assert properties.scan_shared(longer)[1] is not spans
    assert properties.get(second, spans, "message_id") == "id-0002"


def test_shared_scan_refuses_what_scan_refuses() -> None:
    for bad in (bytes(13), struct.pack(">HHQH", 60, 0, 0, 0x0001)):
        with pytest.raises(ValueError):
            properties.scan(bad)
        with pytest.raises(ValueError):
            properties.scan_shared(bad)


@given(property_sets())
def test_raw_is_the_encoded_property(values: dict[str, Any]) -> None:
    header = build(values)
    spans = properties.scan(header)
    for name, value in values.items():
        assert properties.raw(header, spans, name) == encode(name, value)


@given(property_sets())
def test_continuation_flag_words_are_skipped_as_pamqp_does(
    values: dict[str, Any],
) -> None:
    header = build(values)
    flags = struct.unpack_from(">H", header, 12)[0]
    extended = (
        header[:12] + struct.pack(">HHH", flags | 1, 1, 0) + header[14:]
    )  # two extra flag words, the first continuing to the second
    assert_reads_as_pamqp(extended)
    rebuilt = properties.rebuild(extended, properties.scan(extended), {})
    assert rebuilt == header


def test_empty_short_strings_are_present_and_empty() -> None:
    header = struct.pack(">HHQH", 60, 0, 0, 0x8000 | 0x0400) + b"\x00\x00"
    spans = properties.scan(header)
    assert properties.get(header, spans, "content_type") == ""
    assert properties.get(header, spans, "correlation_id") == ""
    assert properties.raw(header, spans, "correlation_id") == b"\x00"


def test_short_string_that_is_not_utf8_reads_with_replacement() -> None:
    # pamqp refuses it; the broker reads it leniently, as RabbitMQ passes
    # such bytes through untouched
    header = struct.pack(">HHQH", 60, 0, 0, 0x8000) + b"\x02\xff\x41"
    spans = properties.scan(header)
    assert properties.get(header, spans, "content_type") == "\ufffdA"
    assert properties.raw(header, spans, "content_type") == b"\x02\xff\x41"
    with pytest.raises(ValueError):
        pamqp_read(header)


@given(property_sets().filter(bool))
def test_every_truncation_of_the_properties_is_refused(
    values: dict[str, Any],
) -> None:
    header = build(values)
    for cut in range(14, len(header)):
        with pytest.raises(ValueError):
            properties.scan(header[:cut])


@pytest.mark.parametrize("size", range(14))
def test_header_shorter_than_its_fixed_part_is_refused(size: int) -> None:
    with pytest.raises(ValueError, match="shorter than 14"):
        properties.scan(bytes(size))


def test_missing_continuation_flag_word_is_refused() -> None:
    with pytest.raises(ValueError, match="flags cut short"):
        properties.scan(struct.pack(">HHQH", 60, 0, 0, 0x0001))


# rebuilding


@given(property_sets())
def test_rebuild_without_changes_is_byte_identical(values: dict[str, Any]) -> None:
    header = build(values, 77)
    assert properties.rebuild(header, properties.scan(header), {}) == header


@st.composite
def changes(draw: st.DrawFn) -> dict[str, bytes | None]:
    """Properties to replace (with their encoding) or remove (None)."""
    names = draw(st.sets(st.sampled_from(properties.FIELDS), min_size=1))
    return {
        name: draw(st.none() | STRATEGIES[KINDS[name]].map(lambda v: (v,)))
        for name in names
    }


@given(property_sets(), changes(), st.integers(0, 2**63 - 1))
def test_rebuild_changes_only_what_it_is_asked_to(
    values: dict[str, Any], wanted: dict[str, Any], body_size: int
) -> None:
    header = build(values, body_size)
    spans = properties.scan(header)
    encoded = {
        name: None if new is None else encode(name, new[0])
        for name, new in wanted.items()
    }
    rebuilt = properties.rebuild(header, spans, encoded)

    expected = dict(values)
    for name, new in wanted.items():
        if new is None:
            expected.pop(name, None)
        else:
            expected[name] = new[0]
    assert rebuilt == build(expected, body_size)
    new_spans = assert_reads_as_pamqp(rebuilt)
    for name in properties.FIELDS:
        if name not in wanted:
            assert properties.raw(rebuilt, new_spans, name) == properties.raw(
                header, spans, name
            )
    assert rebuilt[:12] == header[:12]  # class, weight and body size


def test_rebuild_keeps_class_weight_and_body_size() -> None:
    header = struct.pack(">HHQH", 60, 7, 12345, 0x1000) + b"\x02"
    rebuilt = properties.rebuild(header, properties.scan(header), {"priority": b"\x05"})
    assert rebuilt == struct.pack(">HHQH", 60, 7, 12345, 0x1800) + b"\x02\x05"


def test_replacing_headers_keeps_the_other_properties_byte_for_byte() -> None:
    values = {
        "content_type": "application/json",
        "headers": {"a": 1, "nested": {"b": [1, "two", Decimal("3.5")]}},
        "delivery_mode": 2,
        "timestamp": datetime.datetime(2024, 5, 6, tzinfo=UTC),
        "app_id": "app",
    }
    header = build(values, 10)
    spans = properties.scan(header)
    new_headers = pamqp_encode.field_table({"x-death": [{"count": 1}]})
    rebuilt = properties.rebuild(header, spans, {"headers": new_headers})
    read = pamqp_read(rebuilt).properties
    assert read.headers == {"x-death": [{"count": 1}]}
    assert (read.content_type, read.delivery_mode, read.app_id) == (
        "application/json",
        2,
        "app",
    )
    assert read.timestamp == values["timestamp"]


# encoders


@given(st.text(max_size=255).map(lambda s: s.encode()[:255].decode(errors="ignore")))
def test_encode_shortstr_equals_pamqp(value: str) -> None:
    assert properties.encode_shortstr(value) == pamqp_encode.short_string(value)
