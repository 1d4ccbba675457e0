"""Frames and content over real sockets: bodies across many frames, empty
bodies, re-splitting to each consumer's frame_max, size limits and
malformed frames."""

from __future__ import annotations

import struct
import uuid
from typing import Any

import pika
import pika.exceptions
import pytest
from amqp_wire import RawClient, method_frame, raw_frame
from pamqp import commands as spec
from pamqp import frame
from pamqp.body import ContentBody
from pamqp.header import ContentHeader

from amqpd.testing import BrokerThread

MiB = 1024 * 1024


def params(broker: BrokerThread, **options: Any) -> pika.ConnectionParameters:
    return pika.ConnectionParameters("127.0.0.1", broker.port, **options)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def pattern(size: int) -> bytes:
    """A body whose every frame-sized slice differs from its neighbours."""
    block = bytes(range(251))  # 251 is prime: no alignment with frame sizes
    return (block * (size // len(block) + 1))[:size]


# bodies across frames


def test_one_mib_body_published_with_frame_max_4096_arrives_intact(
    amqpd_session_broker: BrokerThread,
) -> None:
    queue, body = unique("big"), pattern(MiB)
    small = pika.BlockingConnection(params(amqpd_session_broker, frame_max=4096))
    channel = small.channel()
    channel.queue_declare(queue, auto_delete=True)
    channel.basic_publish("", queue, body)
    _method, _props, got_small = channel.basic_get(queue, auto_ack=True)
    assert got_small == body  # 257 body frames each way

    channel.basic_publish("", queue, body)
    large = pika.BlockingConnection(params(amqpd_session_broker))
    _method, _props, got_large = large.channel().basic_get(queue, auto_ack=True)
    assert got_large == body
    large.close()
    small.close()


def test_zero_length_body_round_trips(amqpd_session_broker: BrokerThread) -> None:
    queue = unique("empty")
    conn = pika.BlockingConnection(params(amqpd_session_broker))
    channel = conn.channel()
    channel.queue_declare(queue, auto_delete=True)
    channel.basic_publish(
        "", queue, b"", pika.BasicProperties(content_type="text/plain")
    )
    channel.basic_publish("", queue, b"after")
    got = []
    for method, props, body in channel.consume(queue, auto_ack=True):
        assert method is not None
        got.append((body, props.content_type))
        if len(got) == 2:
            break
    assert got == [(b"", "text/plain"), (b"after", None)]
    channel.cancel()
    conn.close()


def test_zero_length_body_is_delivered_without_a_body_frame(
    amqpd_session_broker: BrokerThread,
) -> None:
    queue = unique("no-body-frame")
    with RawClient(amqpd_session_broker.port) as client:
        client.handshake()
        client.open_channel(1)
        client.send_method(1, spec.Queue.Declare(queue=queue, auto_delete=True))
        client.expect(spec.Queue.DeclareOk, 1)
        client.publish(1, "", queue, b"")
        client.send_method(1, spec.Basic.Get(queue=queue, no_ack=True))
        client.expect(spec.Basic.GetOk, 1)
        assert client.expect(ContentHeader, 1).body_size == 0
        client.send_method(1, spec.Basic.Get(queue=queue, no_ack=True))
        client.expect(spec.Basic.GetEmpty, 1)  # the next frame: no body between


def test_deliveries_are_re_split_to_the_consumers_frame_max(
    amqpd_session_broker: BrokerThread,
) -> None:
    queue, body = unique("resplit"), pattern(500 * 1024)
    with (
        RawClient(amqpd_session_broker.port) as consumer,
        RawClient(amqpd_session_broker.port) as publisher,
    ):
        consumer.handshake(frame_max=4096)
        consumer.open_channel(1)
        consumer.send_method(1, spec.Queue.Declare(queue=queue, auto_delete=True))
        consumer.expect(spec.Queue.DeclareOk, 1)
        consumer.send_method(1, spec.Basic.Consume(queue=queue, no_ack=True))
        consumer.expect(spec.Basic.ConsumeOk, 1)
        consumer.frame_sizes.clear()

        publisher.handshake(frame_max=131072)
        publisher.open_channel(1)
        publisher.publish(1, "", queue, body, frame_max=131072)  # 4 body frames

        consumer.expect(spec.Basic.Deliver, 1)
        assert consumer.expect(ContentHeader, 1).body_size == len(body)
        received = b""
        while len(received) < len(body):
            received += consumer.expect(ContentBody, 1).value
    assert received == body
    body_sizes = [size for ftype, size in consumer.frame_sizes if ftype == 3]
    assert max(body_sizes) == 4096 - 8
    assert len(body_sizes) == -(-len(body) // 4088)  # 126 frames


def test_pika_consumer_with_a_small_frame_max_gets_a_large_body(
    amqpd_session_broker: BrokerThread,
) -> None:
    queue, body = unique("pika-resplit"), pattern(500 * 1024)
    publisher = pika.BlockingConnection(params(amqpd_session_broker))
    consumer = pika.BlockingConnection(params(amqpd_session_broker, frame_max=4096))
    channel = consumer.channel()
    channel.queue_declare(queue, auto_delete=True)
    publisher.channel().basic_publish("", queue, body)
    for _method, _props, got in channel.consume(queue, auto_ack=True):
        assert got == body
        break
    channel.cancel()
    publisher.close()
    consumer.close()


# frame size limits


def test_frame_larger_than_the_negotiated_frame_max_is_501(
    amqpd_session_broker: BrokerThread,
) -> None:
    with RawClient(amqpd_session_broker.port) as client:
        client.handshake(frame_max=4096)
        client.open_channel(1)
        client.publish(1, "", "q", b"b" * 5000, frame_max=8192)
        close = client.expect(spec.Connection.Close, 0)
        # like RabbitMQ, the broker cannot read on after a framing error and
        # closes the socket after its close timeout, close-ok or not
    assert (close.reply_code, close.reply_text) == (
        501, "FRAME_ERROR - frame of 5008 bytes exceeds frame_max 4096",
    )  # fmt: skip


def test_content_header_larger_than_frame_max_is_501(
    amqpd_session_broker: BrokerThread,
) -> None:
    props = spec.Basic.Properties(headers={"big": "h" * 5000})
    header = frame.marshal(ContentHeader(0, 1, props), 1)
    with RawClient(amqpd_session_broker.port) as client:
        client.handshake(frame_max=4096)
        client.open_channel(1)
        client.send(method_frame(1, spec.Basic.Publish(routing_key="q")), header)
        close = client.expect(spec.Connection.Close, 0)
    assert (close.reply_code, close.reply_text) == (
        501, f"FRAME_ERROR - frame of {len(header)} bytes exceeds frame_max 4096",
    )  # fmt: skip


def test_bad_frame_end_octet_is_501(amqpd_session_broker: BrokerThread) -> None:
    with RawClient(amqpd_session_broker.port) as client:
        client.handshake()
        client.send(method_frame(1, spec.Channel.Open())[:-1] + b"\x00")
        close = client.expect(spec.Connection.Close, 0)
    assert (close.reply_code, close.reply_text) == (
        501, "FRAME_ERROR - bad frame-end octet 0x0",
    )  # fmt: skip


def test_body_longer_than_its_header_announced_is_501(
    amqpd_session_broker: BrokerThread,
) -> None:
    with RawClient(amqpd_session_broker.port) as client:
        client.handshake()
        client.open_channel(1)
        client.send(
            method_frame(1, spec.Basic.Publish(routing_key="q")),
            frame.marshal(ContentHeader(0, 3, spec.Basic.Properties()), 1),
            frame.marshal(ContentBody(b"four"), 1),
        )
        close = client.expect_close()
    assert (close.reply_code, close.reply_text) == (
        501, "FRAME_ERROR - content body of 4 bytes exceeds the 3 announced",
    )  # fmt: skip


# message size limit


def test_message_over_max_message_size_is_406_and_the_other_channel_works() -> None:
    with BrokerThread(max_message_size=1000) as broker:
        conn = pika.BlockingConnection(params(broker))
        failing, working = conn.channel(), conn.channel()
        working.queue_declare("sized")
        failing.basic_publish("", "sized", b"x" * 1001)
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as info:
            failing.basic_qos(prefetch_count=1)  # a round trip sees the close
        assert (info.value.reply_code, info.value.reply_text) == (
            406,
            "PRECONDITION_FAILED - message size 1001 is larger than configured "
            "max size 1000",
        )
        working.basic_publish("", "sized", b"y" * 1000)
        _method, _props, body = working.basic_get("sized", auto_ack=True)
        assert body == b"y" * 1000
        assert conn.is_open and working.is_open
        conn.close()


def test_default_max_message_size_is_128_mib(
    amqpd_session_broker: BrokerThread,
) -> None:
    limit = 128 * MiB
    with RawClient(amqpd_session_broker.port) as client:
        client.handshake()
        client.open_channel(1)
        client.open_channel(2)
        client.send(  # only the header: the size it announces is refused
            method_frame(1, spec.Basic.Publish(routing_key="q")),
            frame.marshal(ContentHeader(0, limit + 1, spec.Basic.Properties()), 1),
        )
        close = client.expect(spec.Channel.Close, 1)
        assert (close.reply_code, close.reply_text) == (
            406,
            f"PRECONDITION_FAILED - message size {limit + 1} is larger than "
            f"configured max size {limit}",
        )
        assert (close.class_id, close.method_id) == (60, 40)
        client.send_method(2, spec.Basic.Qos(prefetch_count=1))
        client.expect(spec.Basic.QosOk, 2)


# methods the broker refuses


def test_unknown_method_id_is_540(amqpd_session_broker: BrokerThread) -> None:
    with RawClient(amqpd_session_broker.port) as client:
        client.handshake()
        client.open_channel(1)
        client.send(raw_frame(1, 1, struct.pack(">HH", 77, 1)))
        close = client.expect_close()
    assert (close.reply_code, close.reply_text) == (
        540, "NOT_IMPLEMENTED - unknown method 77.1",
    )  # fmt: skip
    assert (close.class_id, close.method_id) == (77, 1)


def test_undecodable_method_is_501_like_rabbitmq(
    amqpd_session_broker: BrokerThread,
) -> None:
    # queue.declare whose queue name says 64 bytes and has 3
    payload = struct.pack(">HHH", 50, 10, 0) + b"\x40abc"
    with RawClient(amqpd_session_broker.port) as client:
        client.handshake()
        client.open_channel(1)
        client.send(raw_frame(1, 1, payload))
        close = client.expect_close()
    assert close.reply_code == 501
    assert close.reply_text.startswith("FRAME_ERROR - cannot decode method frame")
    assert (close.class_id, close.method_id) == (50, 10)


def test_immediate_publish_is_540(amqpd_session_broker: BrokerThread) -> None:
    with RawClient(amqpd_session_broker.port) as client:
        client.handshake()
        client.open_channel(1)
        client.publish(1, "", "q", b"now", immediate=True)
        close = client.expect_close()
    assert (close.reply_code, close.reply_text) == (
        540, "NOT_IMPLEMENTED - immediate=true",
    )  # fmt: skip
    assert (close.class_id, close.method_id) == (60, 40)


# names


def test_names_up_to_255_bytes_of_utf8_are_accepted(
    amqpd_session_broker: BrokerThread,
) -> None:
    conn = pika.BlockingConnection(params(amqpd_session_broker))
    channel = conn.channel()
    for name in ("é" * 127 + "q", "tâche-" + unique("x"), "orders*[eu]!"):
        assert len(name.encode()) <= 255
        ok = channel.queue_declare(name, auto_delete=True)
        assert ok.method.queue == name
        channel.basic_publish("", name, b"routed")
        _method, _props, body = channel.basic_get(name, auto_ack=True)
        assert body == b"routed"
        channel.queue_delete(name)
    conn.close()


def test_names_over_255_bytes_cannot_be_sent(
    amqpd_session_broker: BrokerThread,
) -> None:
    conn = pika.BlockingConnection(params(amqpd_session_broker))
    channel = conn.channel()
    with pytest.raises(pika.exceptions.ShortStringTooLong):
        channel.queue_declare("é" * 128)  # 256 bytes: refused before the wire
    channel.queue_declare("", exclusive=True)  # the channel is unharmed
    conn.close()
