"""The fast path for basic.publish, basic.ack, basic.deliver and basic.get-ok
reads and writes the same bytes as pamqp.

pamqp refuses exchange names outside a small ASCII set when it marshals (the
broker takes any UTF-8 name, as RabbitMQ does), so the reference objects here
skip pamqp's validate() and keep its encoding.
"""

from __future__ import annotations

import struct
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pamqp import commands as spec
from pamqp import frame as pamqp_frame

from amqpd.codec import fastpath
from amqpd.codec.frames import build_content


class Publish(spec.Basic.Publish):
    def validate(self) -> None:
        return None


class Deliver(spec.Basic.Deliver):
    def validate(self) -> None:
        return None


class GetOk(spec.Basic.GetOk):
    def validate(self) -> None:
        return None


def arguments(method: Any) -> bytes:
    """A method frame's payload: method id and arguments."""
    return struct.pack(">I", method.index) + method.marshal()


def unmarshal(method_class: Any, payload: bytes) -> Any:
    method = method_class()
    method.unmarshal(payload[4:])
    return method


# short strings of 0 to 255 UTF-8 bytes, multi-byte characters included
names = st.one_of(
    st.text(max_size=255).map(lambda s: s.encode()[:255].decode(errors="ignore")),
    st.sampled_from(["", "amq.direct", "x" * 255, "é" * 127, "\x00"]),
)
# pamqp reads and writes the spec's unsigned long-long as signed: compare up to
# 2**63 - 1 and check the top half on its own
tags = st.integers(0, 2**63 - 1)


# basic.publish


@given(names, names, st.booleans(), st.booleans())
def test_decode_publish_equals_pamqp(
    exchange: str, routing_key: str, mandatory: bool, immediate: bool
) -> None:
    payload = arguments(Publish(0, exchange, routing_key, mandatory, immediate))
    reference = unmarshal(spec.Basic.Publish, payload)
    decoded = fastpath.decode_publish(payload)
    assert decoded[0] == reference.exchange == exchange
    assert decoded[1] == reference.routing_key == routing_key
    assert decoded[2] == fastpath.shortstr(exchange) + fastpath.shortstr(routing_key)
    assert (decoded[3], decoded[4]) == (reference.mandatory, reference.immediate)
    assert fastpath.method_id(payload) == fastpath.BASIC_PUBLISH


@given(names, names, st.integers(0, 255))
def test_decode_publish_reads_only_the_two_flag_bits(
    exchange: str, routing_key: str, bits: int
) -> None:
    payload = bytearray(arguments(Publish(0, exchange, routing_key)))
    payload[-1] = bits
    reference = unmarshal(spec.Basic.Publish, bytes(payload))
    _, _, _, mandatory, immediate = fastpath.decode_publish(bytes(payload))
    assert (mandatory, immediate) == (bool(bits & 1), bool(bits & 2))
    assert (mandatory, immediate) == (reference.mandatory, reference.immediate)


@given(names, names)
def test_decode_publish_refuses_every_truncation_as_pamqp_does(
    exchange: str, routing_key: str
) -> None:
    payload = arguments(Publish(0, exchange, routing_key))
    for cut in range(4, len(payload)):
        with pytest.raises((IndexError, ValueError)):
            fastpath.decode_publish(payload[:cut])
        with pytest.raises(ValueError):
            unmarshal(spec.Basic.Publish, payload[:cut])


@pytest.mark.parametrize(
    "names", [b"\x02\xff\xfe\x00", b"\x00\x01\x80"], ids=["exchange", "key"]
)
def test_decode_publish_refuses_names_that_are_not_utf8(names: bytes) -> None:
    payload = b"\x00\x3c\x00\x28\x00\x00" + names + b"\x00"
    with pytest.raises(UnicodeDecodeError):
        fastpath.decode_publish(payload)
    with pytest.raises(UnicodeDecodeError):
        unmarshal(spec.Basic.Publish, payload)


# basic.ack


@given(tags, st.booleans())
def test_decode_ack_equals_pamqp(tag: int, multiple: bool) -> None:
    payload = arguments(spec.Basic.Ack(delivery_tag=tag, multiple=multiple))
    reference = unmarshal(spec.Basic.Ack, payload)
    assert fastpath.decode_ack(payload) == (reference.delivery_tag, multiple)
    assert fastpath.decode_ack(payload) == (tag, reference.multiple)
    assert fastpath.method_id(payload) == fastpath.BASIC_ACK


@given(tags, st.integers(0, 255))
def test_decode_ack_reads_only_the_multiple_bit(tag: int, bits: int) -> None:
    payload = b"\x00\x3c\x00\x50" + struct.pack(">QB", tag, bits)
    reference = unmarshal(spec.Basic.Ack, payload)
    assert fastpath.decode_ack(payload) == (tag, reference.multiple)


@given(st.integers(2**63, 2**64 - 1), st.booleans())
def test_decode_ack_reads_the_delivery_tag_unsigned(tag: int, multiple: bool) -> None:
    payload = b"\x00\x3c\x00\x50" + struct.pack(">QB", tag, multiple)
    assert fastpath.decode_ack(payload) == (tag, multiple)


# basic.deliver and basic.get-ok


@given(st.integers(0, 65535), names, tags, st.booleans(), names, names)
def test_deliver_frame_equals_pamqp(
    channel: int,
    ctag: str,
    tag: int,
    redelivered: bool,
    exchange: str,
    routing_key: str,
) -> None:
    ex_rk = fastpath.shortstr(exchange) + fastpath.shortstr(routing_key)
    built = fastpath.deliver_frame(
        channel, fastpath.shortstr(ctag), tag, redelivered, ex_rk
    )
    reference = Deliver(ctag, tag, redelivered, exchange, routing_key)
    assert built == pamqp_frame.marshal(reference, channel)


@given(
    st.integers(0, 65535), tags, st.booleans(), names, names, st.integers(0, 2**32 - 1)
)
def test_get_ok_frame_equals_pamqp(
    channel: int,
    tag: int,
    redelivered: bool,
    exchange: str,
    routing_key: str,
    count: int,
) -> None:
    ex_rk = fastpath.shortstr(exchange) + fastpath.shortstr(routing_key)
    built = fastpath.get_ok_frame(channel, tag, redelivered, ex_rk, count)
    reference = GetOk(tag, redelivered, exchange, routing_key, count)
    assert built == pamqp_frame.marshal(reference, channel)


@given(
    st.integers(0, 65535),
    names,
    tags,
    st.booleans(),
    st.binary(min_size=14, max_size=40),
    st.binary(max_size=3000),
    st.sampled_from([4096, 1000, 9]),
)
def test_deliver_message_is_deliver_frame_then_content(
    channel: int,
    ctag: str,
    tag: int,
    redelivered: bool,
    header: bytes,
    body: bytes,
    frame_max: int,
) -> None:
    ex_rk = fastpath.shortstr("ex") + fastpath.shortstr("key")
    ctag_raw = fastpath.shortstr(ctag)
    built = fastpath.deliver_message(
        channel, ctag_raw, tag, redelivered, ex_rk, header, body, frame_max
    )
    expected = fastpath.deliver_frame(
        channel, ctag_raw, tag, redelivered, ex_rk
    ) + b"".join(build_content(channel, header, body, frame_max))
    assert built == expected


# short strings


@given(names)
def test_shortstr_is_length_then_utf8(value: str) -> None:
    raw = value.encode()
    assert fastpath.shortstr(value) == bytes((len(raw),)) + raw


def test_shortstr_refuses_more_than_255_bytes() -> None:
    assert len(fastpath.shortstr("é" * 127 + "x")) == 256
    with pytest.raises(ValueError, match="255"):
        fastpath.shortstr("é" * 128)
