"""Frame bytes the bench client sends, built once and patched in place.

The publisher and consumer loops never build a frame per message: a message
is a prebuilt run of bytes (basic.publish method frame, content header
frame, body frames) whose body starts with two unsigned 64-bit fields, the
sequence number and the send time in monotonic nanoseconds. The loops patch
those 16 bytes with ``struct.pack_into`` and send a whole batch in one call.

Only what the bench needs is here; everything the broker sends back that is
not on the hot path is decoded with pamqp.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

FRAME_METHOD = 1
FRAME_HEADER = 2
FRAME_BODY = 3
FRAME_HEARTBEAT = 8
FRAME_END = 0xCE
PROTOCOL_HEADER = b"AMQP\x00\x00\x09\x01"

# type, channel, payload size
FRAME_HEAD = struct.Struct(">BHI")
# class id and method id as one 32-bit number, e.g. basic.deliver = 0x003C003C
METHOD_ID = struct.Struct(">I")
U64 = struct.Struct(">Q")
# the first 16 bytes of every bench body: sequence number, send time (ns)
STAMP = struct.Struct(">QQ")
STAMP_SIZE = STAMP.size
assert STAMP_SIZE == 16


def method_key(class_id: int, method_id: int) -> int:
    """Return the 32-bit number that a method frame's payload starts with."""
    return (class_id << 16) | method_id


BASIC_DELIVER = method_key(60, 60)
BASIC_ACK = method_key(60, 80)
BASIC_NACK = method_key(60, 120)
BASIC_RETURN = method_key(60, 50)
CHANNEL_CLOSE = method_key(20, 40)
CONNECTION_CLOSE = method_key(10, 50)
CONNECTION_BLOCKED = method_key(10, 60)
CONNECTION_UNBLOCKED = method_key(10, 61)


def shortstr(value: str) -> bytes:
    """Encode an AMQP short string (one length octet, then UTF-8)."""
    raw = value.encode()
    if len(raw) > 255:
        raise ValueError(f"short string longer than 255 bytes: {value[:40]!r}")
    return bytes((len(raw),)) + raw


def longstr(value: bytes) -> bytes:
    """Encode an AMQP long string (32-bit length, then the bytes)."""
    return struct.pack(">I", len(value)) + value


def table(values: dict[str, object] | None = None) -> bytes:
    """Encode a field table holding strings, booleans, ints and tables.

    Keys go out sorted, as pamqp writes them, so the bytes are comparable.
    """
    out = bytearray()
    for key, value in sorted((values or {}).items()):
        out += shortstr(key)
        out += _table_value(value)
    return struct.pack(">I", len(out)) + bytes(out)


def _table_value(value: object) -> bytes:
    # bool before int: bool is a subclass of int
    if isinstance(value, bool):
        return b"t" + bytes((int(value),))
    if isinstance(value, int):
        return b"l" + struct.pack(">q", value)
    if isinstance(value, str):
        return b"S" + longstr(value.encode())
    if isinstance(value, dict):
        return b"F" + table(value)
    raise TypeError(f"cannot encode {type(value).__name__} in a field table")


def bits(*flags: bool) -> bytes:
    """Pack up to eight consecutive bit arguments into one octet."""
    octet = 0
    for index, flag in enumerate(flags):
        octet |= int(flag) << index
    return bytes((octet,))


def frame(frame_type: int, channel: int, payload: bytes) -> bytes:
    """Wrap a payload in a frame header and the frame-end octet."""
    return FRAME_HEAD.pack(frame_type, channel, len(payload)) + payload + b"\xce"


def method(channel: int, class_id: int, method_id: int, args: bytes = b"") -> bytes:
    """Build a method frame from already encoded arguments."""
    payload = struct.pack(">HH", class_id, method_id) + args
    return frame(FRAME_METHOD, channel, payload)


# Connection class


def start_ok(user: str, password: str, product: str = "amqpd-bench") -> bytes:
    """connection.start-ok with PLAIN credentials."""
    client = table(
        {
            "product": product,
            "capabilities": {
                "publisher_confirms": True,
                "connection.blocked": True,
                "basic.nack": True,
                # ask for a connection.close with 403 rather than a bare hang-up
                "authentication_failure_close": True,
            },
        }
    )
    response = b"\x00" + user.encode() + b"\x00" + password.encode()
    args = client + shortstr("PLAIN") + longstr(response) + shortstr("en_US")
    return method(0, 10, 11, args)


def tune_ok(channel_max: int, frame_max: int, heartbeat: int) -> bytes:
    """connection.tune-ok."""
    return method(0, 10, 31, struct.pack(">HIH", channel_max, frame_max, heartbeat))


def connection_open(vhost: str) -> bytes:
    """connection.open."""
    return method(0, 10, 40, shortstr(vhost) + shortstr("") + bits(False))


def connection_close(code: int = 200, text: str = "bye") -> bytes:
    """connection.close, as a client closing normally."""
    return method(0, 10, 50, struct.pack(">H", code) + shortstr(text) + b"\0" * 4)


def connection_close_ok() -> bytes:
    """connection.close-ok."""
    return method(0, 10, 51)


# Channel class


def channel_open(channel: int) -> bytes:
    """channel.open."""
    return method(channel, 20, 10, shortstr(""))


def channel_close(channel: int, code: int = 200, text: str = "bye") -> bytes:
    """channel.close, as a client closing normally."""
    args = struct.pack(">H", code) + shortstr(text) + b"\0" * 4
    return method(channel, 20, 40, args)


def channel_close_ok(channel: int) -> bytes:
    """channel.close-ok."""
    return method(channel, 20, 41)


# Exchange and queue classes


def exchange_declare(
    channel: int, name: str, kind: str, *, durable: bool = False
) -> bytes:
    """exchange.declare (not passive, not auto-delete, waits for the reply)."""
    args = (
        b"\0\0"
        + shortstr(name)
        + shortstr(kind)
        + bits(False, durable, False, False, False)
        + table()
    )
    return method(channel, 40, 10, args)


def exchange_delete(channel: int, name: str) -> bytes:
    """exchange.delete."""
    return method(channel, 40, 20, b"\0\0" + shortstr(name) + bits(False, False))


def queue_declare(
    channel: int,
    name: str,
    *,
    durable: bool = False,
    passive: bool = False,
    exclusive: bool = False,
    auto_delete: bool = False,
) -> bytes:
    """queue.declare that waits for declare-ok."""
    flags = bits(passive, durable, exclusive, auto_delete, False)
    return method(channel, 50, 10, b"\0\0" + shortstr(name) + flags + table())


def queue_bind(channel: int, queue: str, exchange: str, routing_key: str) -> bytes:
    """queue.bind that waits for bind-ok."""
    args = (
        b"\0\0"
        + shortstr(queue)
        + shortstr(exchange)
        + shortstr(routing_key)
        + bits(False)
        + table()
    )
    return method(channel, 50, 20, args)


def queue_delete(channel: int, name: str) -> bytes:
    """queue.delete, unconditional, waits for delete-ok."""
    return method(channel, 50, 40, b"\0\0" + shortstr(name) + bits(False, False, False))


# Basic and confirm classes


def basic_qos(channel: int, prefetch_count: int) -> bytes:
    """basic.qos with a per-consumer prefetch count."""
    args = struct.pack(">IH", 0, prefetch_count) + bits(False)
    return method(channel, 60, 10, args)


def basic_consume(channel: int, queue: str, consumer_tag: str) -> bytes:
    """basic.consume with manual acknowledgement."""
    args = (
        b"\0\0"
        + shortstr(queue)
        + shortstr(consumer_tag)
        + bits(False, False, False, False)
        + table()
    )
    return method(channel, 60, 20, args)


def basic_ack(channel: int, delivery_tag: int, *, multiple: bool) -> bytes:
    """basic.ack; the consumer patches the tag of a prebuilt copy instead."""
    return method(channel, 60, 80, U64.pack(delivery_tag) + bits(multiple))


# Offset of the delivery tag inside a basic.ack frame: 7 header + 4 method ids.
ACK_TAG_OFFSET = 11


def confirm_select(channel: int) -> bytes:
    """confirm.select that waits for select-ok."""
    return method(channel, 85, 10, bits(False))


def basic_publish(channel: int, exchange: str, routing_key: str) -> bytes:
    """basic.publish, not mandatory, not immediate."""
    args = b"\0\0" + shortstr(exchange) + shortstr(routing_key) + bits(False, False)
    return method(channel, 60, 40, args)


# Property flag bit of delivery-mode in the basic class content header.
DELIVERY_MODE_FLAG = 0x1000


def content_header(channel: int, body_size: int, *, persistent: bool) -> bytes:
    """Content header frame of the basic class, delivery-mode the only property.

    Transient messages carry no properties at all, which is what most
    clients send and what the broker treats as delivery-mode 1.
    """
    if persistent:
        props = struct.pack(">HB", DELIVERY_MODE_FLAG, 2)
    else:
        props = struct.pack(">H", 0)
    payload = struct.pack(">HHQ", 60, 0, body_size) + props
    return frame(FRAME_HEADER, channel, payload)


def body_frames(channel: int, body: bytes, frame_max: int) -> bytes:
    """Split a body into as many body frames as frame-max requires."""
    room = frame_max - 8
    chunks = [body[i : i + room] for i in range(0, len(body), room)] or [b""]
    return b"".join(frame(FRAME_BODY, channel, chunk) for chunk in chunks)


@dataclass(frozen=True)
class MessageTemplate:
    """One message's frames and where its stamp sits inside them."""

    data: bytes
    stamp_offset: int

    def batch(self, count: int) -> tuple[bytearray, list[int]]:
        """Return ``count`` copies back to back and the stamp offset of each."""
        size = len(self.data)
        offsets = [i * size + self.stamp_offset for i in range(count)]
        return bytearray(self.data * count), offsets


def message_template(
    channel: int,
    exchange: str,
    routing_key: str,
    body_size: int,
    *,
    persistent: bool,
    frame_max: int,
) -> MessageTemplate:
    """Build the frames of one message with a zero stamp at the body start."""
    if body_size < STAMP_SIZE:
        raise ValueError(f"body size must be at least {STAMP_SIZE} bytes")
    if frame_max < 4096:
        raise ValueError("frame-max below 4096 is not allowed by the protocol")
    head = basic_publish(channel, exchange, routing_key)
    head += content_header(channel, body_size, persistent=persistent)
    body = bytes(STAMP_SIZE) + b"x" * (body_size - STAMP_SIZE)
    # the stamp sits after the first body frame's 7-byte frame header
    return MessageTemplate(head + body_frames(channel, body, frame_max), len(head) + 7)
