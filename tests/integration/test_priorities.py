"""Priority queues (x-max-priority) as pika clients see them.

Higher priorities are delivered first and FIFO within a priority; a
priority above the maximum counts as the maximum (the message keeps its
property), no priority counts as 0. This holds for basic.get, for consumers,
for requeued messages (back at their place within their priority) and with
TTLs. Checked against RabbitMQ 3.10, except that RabbitMQ 3.10 accepts
x-max-priority 0 where amqpd, as its queue-features issue asks, refuses it.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import pika
import pytest
from pika.adapters.blocking_connection import BlockingChannel, BlockingConnection
from pika.exceptions import ChannelClosedByBroker

from amqpd.testing import BrokerThread

DECLARED: list[str] = []  # deleted when the test's connection is torn down

# (body, priority) in publish order, and the order they must come out in
MIXED = [
    ("none", None), ("p1-a", 1), ("p5-a", 5), ("p3", 3), ("p5-b", 5),
    ("p9", 9), ("p0", 0), ("p1-b", 1),
]  # fmt: skip
MIXED_ORDER = ["p5-a", "p5-b", "p9", "p3", "p1-a", "p1-b", "none", "p0"]


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def conn(amqpd_session_broker: BrokerThread) -> Iterator[BlockingConnection]:
    connection = pika.BlockingConnection(pika.URLParameters(amqpd_session_broker.url))
    yield connection
    if connection.is_open:
        cleanup = connection.channel()
        for name in DECLARED:
            cleanup.queue_delete(name)
        connection.close()
    DECLARED.clear()


@pytest.fixture
def ch(conn: BlockingConnection) -> BlockingChannel:
    channel = conn.channel()
    channel.confirm_delivery()
    return channel


def declare(ch: BlockingChannel, prefix: str, **arguments: Any) -> str:
    name = unique(prefix)
    ch.queue_declare(name, arguments=arguments)
    DECLARED.append(name)
    return name


def publish_all(
    ch: BlockingChannel, queue: str, messages: list[tuple[str, int | None]]
) -> None:
    for body, priority in messages:
        props = pika.BasicProperties(priority=priority)
        ch.basic_publish("", queue, body.encode(), props)


def drain(ch: BlockingChannel, queue: str) -> list[str]:
    bodies: list[str] = []
    for _ in range(100):
        method, _props, body = ch.basic_get(queue, auto_ack=True)
        if method is None:
            return bodies
        bodies.append(body.decode())
    raise AssertionError("more than 100 messages")


# declaration


@pytest.mark.parametrize("value", [0, 256, -1, "5"])
def test_invalid_x_max_priority_is_refused_with_406(
    conn: BlockingConnection, value: object
) -> None:
    name = unique("prio")
    with pytest.raises(ChannelClosedByBroker) as info:
        conn.channel().queue_declare(name, arguments={"x-max-priority": value})
    assert info.value.reply_code == 406
    assert info.value.reply_text.startswith(
        f"PRECONDITION_FAILED - invalid arg 'x-max-priority' for queue '{name}' "
        "in vhost '/': "
    )
    assert conn.is_open


@pytest.mark.parametrize("value", [1, 255])
def test_x_max_priority_bounds_are_accepted(ch: BlockingChannel, value: int) -> None:
    queue = declare(ch, "prio", **{"x-max-priority": value})
    publish_all(ch, queue, [("low", 0), ("high", value)])

    assert drain(ch, queue) == ["high", "low"]


# order


def test_basic_get_serves_higher_priorities_first_fifo_within_one(
    ch: BlockingChannel,
) -> None:
    queue = declare(ch, "prio", **{"x-max-priority": 5})
    publish_all(ch, queue, MIXED)

    got = []
    for _ in MIXED:
        _method, props, body = ch.basic_get(queue, auto_ack=True)
        got.append((body.decode(), props.priority))
    assert [body for body, _ in got] == MIXED_ORDER
    # above the maximum counts as the maximum, but the property is kept
    assert dict(got)["p9"] == 9
    assert ch.basic_get(queue)[0] is None


def test_consumer_with_prefetch_one_sees_priority_order(
    conn: BlockingConnection, ch: BlockingChannel
) -> None:
    queue = declare(ch, "prio", **{"x-max-priority": 5})
    publish_all(ch, queue, MIXED)
    consumer = conn.channel()
    consumer.basic_qos(prefetch_count=1)
    got: list[str] = []

    def on_message(c: BlockingChannel, method: Any, _p: Any, body: bytes) -> None:
        got.append(body.decode())
        c.basic_ack(method.delivery_tag)

    consumer.basic_consume(queue, on_message)
    deadline = time.monotonic() + 3.0
    while len(got) < len(MIXED) and time.monotonic() < deadline:
        conn.process_data_events(time_limit=0.02)
    assert got == MIXED_ORDER


def test_higher_priority_published_while_consumer_is_busy_overtakes(
    conn: BlockingConnection, ch: BlockingChannel
) -> None:
    queue = declare(ch, "prio", **{"x-max-priority": 5})
    consumer = conn.channel()
    consumer.basic_qos(prefetch_count=1)
    got: list[tuple[str, int]] = []
    consumer.basic_consume(
        queue, lambda _c, m, _p, b: got.append((b.decode(), m.delivery_tag))
    )
    publish_all(ch, queue, [("first", 0), ("low", 0), ("high", 5)])
    deadline = time.monotonic() + 2.0
    while not got and time.monotonic() < deadline:
        conn.process_data_events(time_limit=0.02)
    assert [body for body, _ in got] == ["first"]

    consumer.basic_ack(got[0][1])
    while len(got) < 2 and time.monotonic() < deadline:
        conn.process_data_events(time_limit=0.02)
    assert [body for body, _ in got] == ["first", "high"]


# requeue


def test_requeued_messages_return_to_their_place_within_their_priority(
    conn: BlockingConnection, ch: BlockingChannel
) -> None:
    queue = declare(ch, "prio", **{"x-max-priority": 5})
    publish_all(ch, queue, [
        ("a5", 5), ("b5", 5), ("c5", 5), ("x1", 1), ("none", None), ("z0", 0),
        ("h9", 9),
    ])  # fmt: skip
    getter = conn.channel()
    first = getter.basic_get(queue)
    second = getter.basic_get(queue)
    assert (first[2], second[2]) == (b"a5", b"b5")

    getter.basic_nack(second[0].delivery_tag, requeue=True)
    method, _props, body = getter.basic_get(queue, auto_ack=True)
    assert (body, method.redelivered) == (b"b5", True)
    assert getter.basic_get(queue, auto_ack=True)[2] == b"c5"

    getter.basic_nack(first[0].delivery_tag, requeue=True)
    rest = []
    for _ in range(5):
        method, _props, body = getter.basic_get(queue, auto_ack=True)
        rest.append((body.decode(), method.redelivered))
    assert rest == [
        ("a5", True), ("h9", False), ("x1", False), ("none", False), ("z0", False),
    ]  # fmt: skip


def test_requeued_low_priority_message_goes_back_behind_higher_ones(
    conn: BlockingConnection, ch: BlockingChannel
) -> None:
    queue = declare(ch, "prio", **{"x-max-priority": 5})
    publish_all(ch, queue, [("low", 1)])
    getter = conn.channel()
    held = getter.basic_get(queue)[0]
    publish_all(ch, queue, [("high", 4), ("mid", 2)])

    getter.basic_reject(held.delivery_tag, requeue=True)
    assert drain(ch, queue) == ["high", "mid", "low"]


# TTL


def test_expired_messages_of_any_priority_are_not_delivered(
    ch: BlockingChannel,
) -> None:
    dlq = declare(ch, "prio-dlq")
    queue = declare(ch, "prio", **{
        "x-max-priority": 5, "x-dead-letter-exchange": "",
        "x-dead-letter-routing-key": dlq,
    })  # fmt: skip
    ch.basic_publish("", queue, b"p5-short", pika.BasicProperties(
        priority=5, expiration="100"
    ))  # fmt: skip
    publish_all(ch, queue, [("p5", 5), ("p3", 3)])
    ch.basic_publish("", queue, b"p1-short", pika.BasicProperties(
        priority=1, expiration="100"
    ))  # fmt: skip
    publish_all(ch, queue, [("p1", 1)])
    time.sleep(0.2)

    assert drain(ch, queue) == ["p5", "p3", "p1"]
    assert sorted(drain(ch, dlq)) == ["p1-short", "p5-short"]


def test_queue_ttl_applies_to_every_priority(ch: BlockingChannel) -> None:
    queue = declare(ch, "prio", **{"x-max-priority": 5, "x-message-ttl": 100})
    publish_all(ch, queue, [("p5", 5), ("p0", 0), ("p3", 3)])
    time.sleep(0.2)

    assert drain(ch, queue) == []
