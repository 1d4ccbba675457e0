"""Fast path for the hot methods: basic.publish, basic.ack and basic.deliver.

Decoding pamqp-style objects costs microseconds per method; these functions
read and write the few fields of the hot methods with ``struct`` directly and
hand back plain values. The property-based tests hold them equal to pamqp.
"""

from __future__ import annotations

import struct

from amqpd.codec.frames import (
    FRAME_BODY,
    FRAME_END_BYTE,
    FRAME_HEAD,
    FRAME_HEADER,
    FRAME_METHOD,
    FRAME_OVERHEAD,
    build_content,
)

BASIC_PUBLISH = (60 << 16) | 40
BASIC_ACK = (60 << 16) | 80
BASIC_DELIVER = (60 << 16) | 60

_ACK = struct.Struct(">QB")
_DELIVER_TAIL = struct.Struct(">QB")
_DELIVER_ID = b"\x00\x3c\x00\x3c"
_GET_OK_ID = b"\x00\x3c\x00\x47"
_GET_OK_TAIL = struct.Struct(">QB")
_U32 = struct.Struct(">I")


def method_id(payload: bytes) -> int:
    """The (class << 16 | method) id of a method frame payload."""
    return int.from_bytes(payload[:4], "big")


def decode_publish(payload: bytes) -> tuple[str, str, bytes, bool, bool]:
    """Read basic.publish: exchange, routing key, the raw exchange+key bytes,
    mandatory, immediate.

    The raw bytes are the two short strings exactly as they arrived, which is
    what basic.deliver and basic.return carry, so they are reused as is.
    Raises ValueError (or IndexError) on a truncated or malformed payload.
    """
    ex_len = payload[6]
    ex_end = 7 + ex_len
    rk_len = payload[ex_end]
    rk_end = ex_end + 1 + rk_len
    bits = payload[rk_end]
    exchange = payload[7:ex_end].decode()
    routing_key = payload[ex_end + 1 : rk_end].decode()
    return exchange, routing_key, payload[6:rk_end], bool(bits & 1), bool(bits & 2)


def decode_ack(payload: bytes) -> tuple[int, bool]:
    """Read basic.ack: delivery tag and the multiple flag."""
    tag, bits = _ACK.unpack_from(payload, 4)
    return tag, bool(bits & 1)


def shortstr(value: str) -> bytes:
    """A short string: length octet then UTF-8 bytes (at most 255)."""
    raw = value.encode()
    if len(raw) > 255:
        raise ValueError("short string longer than 255 bytes")
    return bytes((len(raw),)) + raw


def deliver_frame(
    channel: int, ctag: bytes, tag: int, redelivered: bool, ex_rk: bytes
) -> bytes:
    """The method frame of basic.deliver.

    ``ctag`` is the consumer tag as a short string (length prefixed) and
    ``ex_rk`` the exchange and routing key as two short strings.
    """
    payload = b"".join((_DELIVER_ID, ctag, _DELIVER_TAIL.pack(tag, redelivered), ex_rk))
    return (
        FRAME_HEAD.pack(FRAME_METHOD, channel, len(payload)) + payload + FRAME_END_BYTE
    )


def get_ok_frame(
    channel: int, tag: int, redelivered: bool, ex_rk: bytes, message_count: int
) -> bytes:
    """The method frame of basic.get-ok."""
    payload = b"".join(
        (
            _GET_OK_ID,
            _GET_OK_TAIL.pack(tag, redelivered),
            ex_rk,
            _U32.pack(message_count),
        )
    )
    return (
        FRAME_HEAD.pack(FRAME_METHOD, channel, len(payload)) + payload + FRAME_END_BYTE
    )


def deliver_message(
    channel: int,
    ctag: bytes,
    tag: int,
    redelivered: bool,
    ex_rk: bytes,
    header: bytes,
    body: bytes,
    frame_max: int,
) -> bytes:
    """basic.deliver, content header and body frames as one buffer.

    The common case (a body that fits one frame) is built with a single
    join; larger bodies are split to ``frame_max``.
    """
    pack = FRAME_HEAD.pack
    method = b"".join((_DELIVER_ID, ctag, _DELIVER_TAIL.pack(tag, redelivered), ex_rk))
    size = len(body)
    if size and size <= frame_max - FRAME_OVERHEAD:
        return b"".join((
            pack(FRAME_METHOD, channel, len(method)), method, FRAME_END_BYTE,
            pack(FRAME_HEADER, channel, len(header)), header, FRAME_END_BYTE,
            pack(FRAME_BODY, channel, size), body, FRAME_END_BYTE,
        ))  # fmt: skip
    parts = [pack(FRAME_METHOD, channel, len(method)), method, FRAME_END_BYTE]
    parts += build_content(channel, header, body, frame_max)
    return b"".join(parts)


_DECLARE_OK_ID = b"\x00\x32\x00\x0b"
_RETURN_ID = b"\x00\x3c\x00\x32"
_COUNTS = struct.Struct(">II")
_REPLY_CODE = struct.Struct(">H")


def declare_ok_frame(
    channel: int, queue: str, message_count: int, consumer_count: int
) -> bytes:
    """The method frame of queue.declare-ok.

    Built here rather than by pamqp, whose name check refuses what AMQP
    allows in a queue name (any UTF-8 up to 255 bytes, e.g. "tâche" or "a*b").
    """
    payload = b"".join(
        (_DECLARE_OK_ID, shortstr(queue), _COUNTS.pack(message_count, consumer_count))
    )
    return (
        FRAME_HEAD.pack(FRAME_METHOD, channel, len(payload)) + payload + FRAME_END_BYTE
    )


def return_frame(
    channel: int, reply_code: int, reply_text: str, exchange: str, routing_key: str
) -> bytes:
    """The method frame of basic.return (any exchange name, as above)."""
    payload = b"".join((
        _RETURN_ID, _REPLY_CODE.pack(reply_code), shortstr(reply_text),
        shortstr(exchange), shortstr(routing_key),
    ))  # fmt: skip
    return (
        FRAME_HEAD.pack(FRAME_METHOD, channel, len(payload)) + payload + FRAME_END_BYTE
    )


_CONFIRM_ACK_ID = b"\x00\x3c\x00\x50"
_CONFIRM_NACK_ID = b"\x00\x3c\x00\x78"
_CONFIRM_SIZE = 4 + 8 + 1


def confirm_frame(channel: int, tag: int, multiple: bool, nack: bool = False) -> bytes:
    """basic.ack (or basic.nack without requeue) from the broker, for
    publisher confirms."""
    return b"".join((
        FRAME_HEAD.pack(FRAME_METHOD, channel, _CONFIRM_SIZE),
        _CONFIRM_NACK_ID if nack else _CONFIRM_ACK_ID,
        _ACK.pack(tag, 1 if multiple else 0),
        FRAME_END_BYTE,
    ))  # fmt: skip
