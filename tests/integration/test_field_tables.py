"""Message content end to end: content headers byte for byte, field tables
of every type, empty bodies and bodies split over many frames.
"""

from __future__ import annotations

import datetime
import socket
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from typing import Any

import pika
import pytest
from amqp_wire import RawClient, raw_frame
from pamqp import commands as spec
from pamqp import decode, frame
from pamqp.body import ContentBody
from pamqp.header import ContentHeader
from pika.adapters.blocking_connection import BlockingChannel

from amqpd.testing import BrokerThread

FRAME_METHOD, FRAME_HEADER, FRAME_BODY = 1, 2, 3


@contextmanager
def pika_channel(broker: BrokerThread) -> Iterator[BlockingChannel]:
    conn = pika.BlockingConnection(pika.URLParameters(broker.url))
    try:
        yield conn.channel()
    finally:
        if conn.is_open:
            conn.close()


@contextmanager
def raw_channel(broker: BrokerThread, frame_max: int = 131072) -> Iterator[RawClient]:
    with RawClient(broker.port) as client:
        client.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        client.handshake(frame_max=frame_max)
        client.open_channel(1)
        yield client


def recv_raw(client: RawClient) -> tuple[int, bytes]:
    """The next frame undecoded: (frame type, payload)."""
    ftype, _channel, size = struct.unpack(">BHI", client.recv_exact(7))
    payload = client.recv_exact(size + 1)
    assert payload[-1:] == b"\xce"
    return ftype, payload[:-1]


def declare_exclusive(client: RawClient) -> str:
    client.send_method(1, spec.Queue.Declare(queue="", exclusive=True))
    queue: str = client.expect(spec.Queue.DeclareOk, 1).queue
    return queue


def consume_no_ack(client: RawClient, queue: str) -> None:
    client.send_method(1, spec.Basic.Consume(queue=queue, no_ack=True))
    client.expect(spec.Basic.ConsumeOk, 1)


# field-table encoding, written out by hand so every type is on the wire
# exactly as RabbitMQ writes it


def shortstr(value: str) -> bytes:
    raw = value.encode()
    return bytes((len(raw),)) + raw


def longstr(value: bytes) -> bytes:
    return struct.pack(">I", len(value)) + value


def table(*fields: tuple[str, bytes]) -> bytes:
    return longstr(b"".join(shortstr(name) + value for name, value in fields))


EVERY_TYPE_TABLE = table(
    ("bool", b"t\x01"),
    ("int8", b"b" + struct.pack(">b", -5)),
    ("uint8", b"B" + struct.pack(">B", 250)),
    ("int16", b"s" + struct.pack(">h", -300)),
    ("uint16", b"u" + struct.pack(">H", 65000)),
    ("int32", b"I" + struct.pack(">i", -70000)),
    ("uint32", b"i" + struct.pack(">I", 4_000_000_000)),
    ("int64", b"l" + struct.pack(">q", -(2**40))),
    ("float", b"f" + struct.pack(">f", 1.5)),
    ("double", b"d" + struct.pack(">d", 2.25)),
    ("decimal", b"D" + struct.pack(">BI", 2, 12345)),
    ("longstr", b"S" + longstr("héllo".encode())),
    ("array", b"A" + longstr(b"I\x00\x00\x00\x07" + b"S" + longstr(b"x") + b"t\x00")),
    ("timestamp", b"T" + struct.pack(">Q", 1_700_000_000)),
    ("table", b"F" + table(("inner", b"S" + longstr(b"deep")), ("n", b"V"))),
    ("void", b"V"),
    ("bytes", b"x" + longstr(b"\x00\x01\xfe\xff")),
)

EVERY_TYPE_VALUES = {
    "bool": True, "int8": -5, "uint8": 250, "int16": -300, "uint16": 65000,
    "int32": -70000, "uint32": 4_000_000_000, "int64": -(2**40),
    "float": 1.5, "double": 2.25, "decimal": Decimal("123.45"),
    "longstr": "héllo", "array": [7, "x", False],
    "timestamp": datetime.datetime.fromtimestamp(1_700_000_000, datetime.UTC),
    "table": {"inner": "deep", "n": None}, "void": None,
    "bytes": b"\x00\x01\xfe\xff",
}  # fmt: skip


def full_header(body_size: int) -> bytes:
    """A content header payload with all fourteen properties set."""
    props = b"".join((
        shortstr("application/json"),
        shortstr("gzip"),
        EVERY_TYPE_TABLE,
        b"\x02",  # delivery_mode
        b"\x07",  # priority
        shortstr("corr-1"),
        shortstr("reply.here"),
        shortstr("4294967295"),  # expiration: the largest RabbitMQ accepts
        shortstr("msg-1"),
        struct.pack(">Q", 1_700_000_123),
        shortstr("kind"),
        shortstr("guest"),  # user_id must be the connection's user
        shortstr("app"),
        shortstr("cluster"),
    ))  # fmt: skip
    return struct.pack(">HHQH", 60, 0, body_size, 0xFFFC) + props


def test_content_header_with_every_property_reaches_consumer_byte_for_byte(
    amqpd_session_broker: BrokerThread,
) -> None:
    body = b"payload"
    header = full_header(len(body))
    with raw_channel(amqpd_session_broker) as consumer:
        queue = declare_exclusive(consumer)
        consume_no_ack(consumer, queue)
        with raw_channel(amqpd_session_broker) as publisher:
            publisher.send(
                frame.marshal(spec.Basic.Publish(exchange="", routing_key=queue), 1),
                raw_frame(FRAME_HEADER, 1, header),
                raw_frame(FRAME_BODY, 1, body),
            )
            # a round trip so the publish is handled before the socket closes
            publisher.send_method(1, spec.Basic.Qos(prefetch_count=0))
            publisher.expect(spec.Basic.QosOk, 1)

        frames = [recv_raw(consumer) for _ in range(3)]

    assert [ftype for ftype, _ in frames] == [FRAME_METHOD, FRAME_HEADER, FRAME_BODY]
    assert frames[1][1] == header
    assert frames[2][1] == body
    assert decode.field_table(EVERY_TYPE_TABLE)[1] == EVERY_TYPE_VALUES


def test_header_table_is_kept_byte_for_byte_through_headers_exchange(
    amqpd_session_broker: BrokerThread,
) -> None:
    """Routing on headers decodes the table; what is delivered is unchanged."""
    header = full_header(0)
    with raw_channel(amqpd_session_broker) as client:
        queue = declare_exclusive(client)
        client.send_method(1, spec.Queue.Bind(
            queue=queue, exchange="amq.headers",
            arguments={"x-match": "all", "longstr": "héllo", "int32": -70000},
        ))  # fmt: skip
        client.expect(spec.Queue.BindOk, 1)
        client.send_method(1, spec.Basic.Get(queue=queue, no_ack=True))
        client.expect(spec.Basic.GetEmpty, 1)
        client.send(
            frame.marshal(spec.Basic.Publish(exchange="amq.headers"), 1),
            raw_frame(FRAME_HEADER, 1, header),
        )
        client.send_method(1, spec.Basic.Get(queue=queue, no_ack=True))
        get_ok = client.expect(spec.Basic.GetOk, 1)
        ftype, payload = recv_raw(client)

    assert (get_ok.exchange, get_ok.message_count) == ("amq.headers", 0)
    assert ftype == FRAME_HEADER and payload == header


def test_pika_decodes_every_field_type_of_a_raw_published_table(
    amqpd_session_broker: BrokerThread,
) -> None:
    with pika_channel(amqpd_session_broker) as ch:
        queue = str(ch.queue_declare("", exclusive=True).method.queue)
        with raw_channel(amqpd_session_broker) as publisher:
            publisher.send(
                frame.marshal(spec.Basic.Publish(exchange="", routing_key=queue), 1),
                raw_frame(FRAME_HEADER, 1, full_header(0)),
            )
            # a round trip so the publish is handled before the socket closes
            publisher.send_method(1, spec.Basic.Qos(prefetch_count=0))
            publisher.expect(spec.Basic.QosOk, 1)
        _method, props, body = ch.basic_get(queue, auto_ack=True)

    assert body == b""
    # pika 1.4 decodes f and d through int(), so it sees 1 and 2; the
    # byte-for-byte test above holds those values with pamqp
    headers = dict(props.headers)
    assert (headers.pop("float"), headers.pop("double")) == (1, 2)
    expected = dict(EVERY_TYPE_VALUES)
    del expected["float"], expected["double"]
    assert headers == expected
    assert (props.content_type, props.content_encoding) == ("application/json", "gzip")
    assert (props.delivery_mode, props.priority) == (2, 7)
    assert (props.expiration, props.timestamp) == ("4294967295", 1_700_000_123)
    assert (props.user_id, props.cluster_id) == ("guest", "cluster")


def test_pika_headers_of_every_python_type_round_trip(
    amqpd_session_broker: BrokerThread,
) -> None:
    # pika cannot encode floats; the raw table test above covers f and d
    headers: dict[str, Any] = {
        "str": "héllo wörld",
        "empty": "",
        "int": 42,
        "negative": -7,
        "big": 2**40,
        "true": True,
        "false": False,
        "list": [1, "two", Decimal("3.5"), False, [4], {"k": "v"}],
        "dict": {"a": 1, "b": {"c": "deep"}, "l": []},
        "bytes": b"\x00\x01\xfe\xff",
        "decimal": Decimal("12.345"),
        "datetime": datetime.datetime(2024, 5, 6, 7, 8, 9, tzinfo=datetime.UTC),
        "none": None,
    }
    props = pika.BasicProperties(
        content_type="text/plain",
        content_encoding="utf-8",
        headers=headers,
        delivery_mode=2,
        priority=3,
        correlation_id="c",
        reply_to="r",
        expiration="60000",
        message_id="m",
        timestamp=1_700_000_000,
        type="t",
        user_id="guest",
        app_id="a",
        cluster_id="cl",
    )
    with pika_channel(amqpd_session_broker) as ch:
        queue = str(ch.queue_declare("", exclusive=True).method.queue)
        ch.basic_publish("", queue, b"body", properties=props)
        _method, got, body = ch.basic_get(queue, auto_ack=True)

    assert body == b"body"
    assert got.headers == headers
    for name in (
        "content_type", "content_encoding", "delivery_mode", "priority",
        "correlation_id", "reply_to", "expiration", "message_id", "timestamp",
        "type", "user_id", "app_id", "cluster_id",
    ):  # fmt: skip
        assert getattr(got, name) == getattr(props, name), name


def test_message_without_properties_arrives_with_none_set(
    amqpd_session_broker: BrokerThread,
) -> None:
    with raw_channel(amqpd_session_broker) as client:
        queue = declare_exclusive(client)
        client.publish(1, "", queue, b"bare")
        client.send_method(1, spec.Basic.Get(queue=queue, no_ack=True))
        client.expect(spec.Basic.GetOk, 1)
        ftype, payload = recv_raw(client)

    assert ftype == FRAME_HEADER
    assert payload == struct.pack(">HHQH", 60, 0, 4, 0)


# bodies


def test_zero_length_body_has_no_body_frame(amqpd_session_broker: BrokerThread) -> None:
    with raw_channel(amqpd_session_broker) as client:
        queue = declare_exclusive(client)
        consume_no_ack(client, queue)
        client.send(
            frame.marshal(spec.Basic.Publish(exchange="", routing_key=queue), 1),
            frame.marshal(ContentHeader(0, 0, spec.Basic.Properties()), 1),
        )
        client.send_method(1, spec.Queue.Declare(queue=queue, passive=True))
        deliver = client.expect(spec.Basic.Deliver, 1)
        header = client.expect(ContentHeader, 1)
        # straight to the reply: no body frame in between
        declare_ok = client.expect(spec.Queue.DeclareOk, 1)

    assert deliver.delivery_tag == 1
    assert header.body_size == 0
    assert declare_ok.message_count == 0


def test_zero_length_body_round_trips_with_pika(
    amqpd_session_broker: BrokerThread,
) -> None:
    with pika_channel(amqpd_session_broker) as ch:
        queue = str(ch.queue_declare("", exclusive=True).method.queue)
        ch.basic_publish("", queue, b"")
        ch.basic_publish("", queue, b"", pika.BasicProperties(message_id="empty"))
        first = ch.basic_get(queue, auto_ack=True)
        second = ch.basic_get(queue, auto_ack=True)

    assert first[2] == b"" and first[0].message_count == 1
    assert second[2] == b"" and second[1].message_id == "empty"


@pytest.mark.parametrize(
    ("size", "frames"),
    [
        pytest.param(4088, [4088], id="exactly-one-frame"),
        pytest.param(4089, [4088, 1], id="one-byte-over"),
        pytest.param(10_000, [4088, 4088, 1824], id="three-frames"),
    ],
)
def test_body_is_split_to_consumer_frame_max(
    amqpd_session_broker: BrokerThread, size: int, frames: list[int]
) -> None:
    body = bytes(range(256)) * (size // 256) + bytes(range(size % 256))
    with raw_channel(amqpd_session_broker, frame_max=4096) as consumer:
        queue = declare_exclusive(consumer)
        consume_no_ack(consumer, queue)
        with pika_channel(amqpd_session_broker) as ch:
            ch.basic_publish("", queue, body)
        consumer.expect(spec.Basic.Deliver, 1)
        header = consumer.expect(ContentHeader, 1)
        chunks = [recv_raw(consumer) for _ in frames]

    assert header.body_size == size
    assert [(ftype, len(p)) for ftype, p in chunks] == [(FRAME_BODY, n) for n in frames]
    assert b"".join(p for _, p in chunks) == body


def test_body_sent_in_many_small_frames_is_reassembled(
    amqpd_session_broker: BrokerThread,
) -> None:
    body = b"".join(i.to_bytes(2, "big") for i in range(5000))
    with raw_channel(amqpd_session_broker) as client:
        queue = declare_exclusive(client)
        parts = [
            frame.marshal(spec.Basic.Publish(exchange="", routing_key=queue), 1),
            frame.marshal(ContentHeader(0, len(body), spec.Basic.Properties()), 1),
        ]
        parts += [
            frame.marshal(ContentBody(body[i : i + 100]), 1)
            for i in range(0, len(body), 100)
        ]
        client.send(*parts)
        client.send_method(1, spec.Basic.Get(queue=queue, no_ack=True))
        client.expect(spec.Basic.GetOk, 1)
        header = client.expect(ContentHeader, 1)
        got = client.expect(ContentBody, 1)

    assert header.body_size == len(body) == 10_000
    assert got.value == body


def test_large_body_round_trips_with_pika(amqpd_session_broker: BrokerThread) -> None:
    body = bytes(range(256)) * 4096 + b"tail"  # 1 MiB and a bit: 9 frames
    with pika_channel(amqpd_session_broker) as ch:
        queue = str(ch.queue_declare("", exclusive=True).method.queue)
        ch.basic_publish("", queue, body)
        received: list[bytes] = []
        ch.basic_consume(queue, lambda _c, _m, _p, b: received.append(b), auto_ack=True)
        for _ in range(100):
            if received:
                break
            ch.connection.process_data_events(0.02)

    assert received == [body]
