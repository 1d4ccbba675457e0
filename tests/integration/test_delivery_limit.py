"""Delivery limits (x-delivery-limit) as pika clients see them.

A message that comes back to its queue unacked (nack or reject with
requeue, its channel closed, basic.recover) counts one more delivery. From
its second delivery on it carries x-delivery-count, the number of earlier
deliveries, as a 64-bit long. Once it has come back more times than the
limit it is dead-lettered with reason delivery_limit, without the
x-delivery-count header.

RabbitMQ 3.10 honours the limit on quorum queues only (amqpd on classic
queues too, as its queue-features issue asks), and on basic.get it adds
x-delivery-count 0 to a first delivery, where amqpd leaves it out.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pika
import pytest
from pika.adapters.blocking_connection import BlockingChannel, BlockingConnection
from pika.compat import long

from amqpd.testing import BrokerThread

DECLARED: list[str] = []  # deleted when the test's connection is torn down


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


@pytest.fixture(params=["classic", "quorum"])
def queue_type(request: pytest.FixtureRequest) -> str:
    kind: str = request.param
    return kind


def declare_limited(
    ch: BlockingChannel, queue_type: str, limit: int, dlx: bool = True
) -> tuple[str, str]:
    """A queue with the delivery limit (and a dead-letter queue)."""
    dlq = unique("limit-dlq")
    ch.queue_declare(dlq)
    DECLARED.append(dlq)
    arguments: dict[str, Any] = {"x-queue-type": queue_type, "x-delivery-limit": limit}
    if dlx:
        arguments.update(
            {"x-dead-letter-exchange": "", "x-dead-letter-routing-key": dlq}
        )
    name = unique("limit")
    ch.queue_declare(name, durable=True, arguments=arguments)
    DECLARED.append(name)
    return name, dlq


def publish(ch: BlockingChannel, queue: str) -> None:
    ch.basic_publish("", queue, b"job", pika.BasicProperties(headers={"k": 1}))


def delivery_count(props: pika.BasicProperties) -> int | None:
    """x-delivery-count, checked to be a 64-bit long; None when absent."""
    headers = dict(props.headers or {})
    assert headers.pop("k") == 1  # the client's header is kept
    count = headers.pop("x-delivery-count", None)
    assert headers == {}
    if count is None:
        return None
    assert type(count) is long
    return int(count)


def ready(ch: BlockingChannel, queue: str) -> int:
    count: int = ch.queue_declare(queue, passive=True).method.message_count
    return count


def assert_dead_lettered(ch: BlockingChannel, queue: str, dlq: str) -> None:
    """The message left ``queue`` and sits in ``dlq`` with one
    delivery_limit death and no x-delivery-count."""
    # waited for: on a RabbitMQ quorum queue dead-lettering is asynchronous
    deadline = time.monotonic() + 3.0
    while True:
        method, props, body = ch.basic_get(dlq, auto_ack=True)
        if method is not None:
            break
        assert time.monotonic() < deadline, f"nothing dead-lettered from {queue}"
        time.sleep(0.01)
    assert body == b"job"
    assert ready(ch, queue) == 0
    headers = dict(props.headers)
    (death,) = headers.pop("x-death")
    death.pop("time")
    assert death == {
        "count": 1, "reason": "delivery_limit", "queue": queue, "exchange": "",
        "routing-keys": [queue],
    }  # fmt: skip
    assert type(death["count"]) is long
    assert "x-delivery-count" not in headers
    assert headers["k"] == 1


def test_nack_with_requeue_counts_and_dead_letters_past_the_limit(
    ch: BlockingChannel, queue_type: str
) -> None:
    queue, dlq = declare_limited(ch, queue_type, limit=2)
    publish(ch, queue)

    seen = []
    for _ in range(3):
        method, props, _body = ch.basic_get(queue)
        assert method is not None
        seen.append((delivery_count(props), method.redelivered))
        ch.basic_nack(method.delivery_tag, requeue=True)

    assert seen == [(None, False), (1, True), (2, True)]
    assert_dead_lettered(ch, queue, dlq)


def _nack(channel: BlockingChannel, tag: int) -> None:
    channel.basic_nack(tag, requeue=True)


def _reject(channel: BlockingChannel, tag: int) -> None:
    channel.basic_reject(tag, requeue=True)


def _close(channel: BlockingChannel, tag: int) -> None:
    channel.close()


def _recover(channel: BlockingChannel, tag: int) -> None:
    channel.basic_recover(requeue=True)


Return = Callable[[BlockingChannel, int], None]


def test_every_way_back_to_the_queue_counts(
    conn: BlockingConnection, ch: BlockingChannel, queue_type: str
) -> None:
    queue, dlq = declare_limited(ch, queue_type, limit=3)
    publish(ch, queue)

    seen = []
    ways: list[Return] = [_nack, _reject, _close, _recover]
    got: list[tuple[Any, pika.BasicProperties]] = []
    for way_back in ways:
        consumer = conn.channel()
        got.clear()
        tag = consumer.basic_consume(queue, lambda _c, m, p, _b: got.append((m, p)))
        deadline = time.monotonic() + 3.0
        while not got and time.monotonic() < deadline:
            conn.process_data_events(time_limit=0.02)
        assert len(got) == 1, f"no delivery before {way_back.__name__}"
        method, props = got[0]
        seen.append(delivery_count(props))
        if way_back is not _close:
            # the message stays unacked; without a consumer here, it goes
            # back to the queue rather than straight back to this channel
            consumer.basic_cancel(tag)
        way_back(consumer, method.delivery_tag)
        if consumer.is_open:
            consumer.close()

    assert seen == [None, 1, 2, 3]
    assert_dead_lettered(ch, queue, dlq)


def test_consumer_sees_the_count_grow_until_the_message_is_dead_lettered(
    conn: BlockingConnection, ch: BlockingChannel, queue_type: str
) -> None:
    queue, dlq = declare_limited(ch, queue_type, limit=2)
    consumer = conn.channel()
    seen: list[int | None] = []

    def fail(c: BlockingChannel, method: Any, props: Any, _body: bytes) -> None:
        seen.append(delivery_count(props))
        c.basic_nack(method.delivery_tag, requeue=True)

    consumer.basic_consume(queue, fail)
    publish(ch, queue)
    deadline = time.monotonic() + 3.0
    while len(seen) < 3 and time.monotonic() < deadline:
        conn.process_data_events(time_limit=0.02)
    conn.process_data_events(time_limit=0.1)  # a fourth delivery would show

    assert seen == [None, 1, 2]
    consumer.close()
    assert_dead_lettered(ch, queue, dlq)


def test_delivery_limit_zero_dead_letters_on_the_first_return(
    ch: BlockingChannel, queue_type: str
) -> None:
    queue, dlq = declare_limited(ch, queue_type, limit=0)
    publish(ch, queue)
    method, props, _body = ch.basic_get(queue)
    assert delivery_count(props) is None
    ch.basic_reject(method.delivery_tag, requeue=True)

    assert_dead_lettered(ch, queue, dlq)


def test_message_acked_within_the_limit_is_not_dead_lettered(
    ch: BlockingChannel, queue_type: str
) -> None:
    queue, dlq = declare_limited(ch, queue_type, limit=1)
    publish(ch, queue)
    method = ch.basic_get(queue)[0]
    ch.basic_nack(method.delivery_tag, requeue=True)
    method, props, _body = ch.basic_get(queue)
    assert delivery_count(props) == 1
    ch.basic_ack(method.delivery_tag)

    assert ready(ch, queue) == 0
    assert ready(ch, dlq) == 0


def test_message_past_the_limit_without_dead_letter_exchange_is_dropped(
    ch: BlockingChannel, queue_type: str
) -> None:
    queue, dlq = declare_limited(ch, queue_type, limit=1, dlx=False)
    publish(ch, queue)
    for _ in range(2):
        method = ch.basic_get(queue)[0]
        ch.basic_nack(method.delivery_tag, requeue=True)

    assert ch.basic_get(queue)[0] is None
    assert ready(ch, dlq) == 0


def test_delivery_limit_policy_applies_to_a_queue_without_the_argument(
    amqpd_broker: BrokerThread,
) -> None:
    assert amqpd_broker.broker is not None
    node = amqpd_broker.broker.node
    amqpd_broker.call(
        lambda: node.set_policy("/", "retry-once", "^retry-", {"delivery-limit": 1},
                                apply_to="queues")
    )  # fmt: skip
    connection = pika.BlockingConnection(pika.URLParameters(amqpd_broker.url))
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        queue = unique("retry")
        channel.queue_declare(queue)
        publish(channel, queue)
        for _ in range(2):
            method = channel.basic_get(queue)[0]
            channel.basic_nack(method.delivery_tag, requeue=True)

        assert channel.basic_get(queue)[0] is None
    finally:
        connection.close()
