"""Message TTL as pika clients see it: x-message-ttl on the queue and the
expiration property per message.

An expired message is never delivered, expiry runs on a timer with no
client activity at all, and it reaches messages behind the head of the
queue. RabbitMQ 3.x classic queues drop expired messages only at the head;
amqpd drops each at its own deadline, which is what the tests below ask.
Everything else here answers as RabbitMQ 3.10 does (checked against a real
node, reply texts included).
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

Delivery = tuple[Any, pika.BasicProperties, bytes]


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


# queues a test declared, deleted when its connection is torn down: the
# session broker (or a RabbitMQ these tests are compared with) keeps no litter
DECLARED: list[str] = []


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
    """A channel in confirm mode: once basic_publish returns, the message is
    in its queue."""
    channel = conn.channel()
    channel.confirm_delivery()
    return channel


def declare(ch: BlockingChannel, prefix: str, **arguments: Any) -> str:
    name = unique(prefix)
    ch.queue_declare(name, arguments=arguments)
    DECLARED.append(name)
    return name


def declare_with_dlq(
    ch: BlockingChannel, prefix: str, **arguments: Any
) -> tuple[str, str]:
    """A queue that dead-letters (default exchange) into a queue of its own."""
    dlq = declare(ch, prefix + "-dlq")
    arguments.update({"x-dead-letter-exchange": "", "x-dead-letter-routing-key": dlq})
    return declare(ch, prefix, **arguments), dlq


def publish(ch: BlockingChannel, queue: str, body: bytes, **props: Any) -> None:
    ch.basic_publish("", queue, body, pika.BasicProperties(**props))


def ready(ch: BlockingChannel, queue: str) -> int:
    count: int = ch.queue_declare(queue, passive=True).method.message_count
    return count


def drain(ch: BlockingChannel, queue: str) -> list[bytes]:
    """Every ready message's body, by basic.get with auto-ack."""
    bodies: list[bytes] = []
    for _ in range(100):
        method, _props, body = ch.basic_get(queue, auto_ack=True)
        if method is None:
            return bodies
        bodies.append(body)
    raise AssertionError("more than 100 messages")


def receive(
    conn: BlockingConnection, queue: str, count: int, timeout: float = 3.0
) -> list[Delivery]:
    """Consume from ``queue`` on a new channel until ``count`` messages came
    or ``timeout`` passed; returns what came."""
    channel = conn.channel()
    got: list[Delivery] = []
    channel.basic_consume(
        queue, lambda _c, m, p, b: got.append((m, p, b)), auto_ack=True
    )
    deadline = time.monotonic() + timeout
    while len(got) < count and time.monotonic() < deadline:
        conn.process_data_events(time_limit=0.02)
    channel.close()
    return got


def death_reason(props: pika.BasicProperties) -> tuple[str, str]:
    """(reason, queue) of the latest death in x-death."""
    death = props.headers["x-death"][0]
    return death["reason"], death["queue"]


def sleep_until(moment: float) -> None:
    time.sleep(max(0.0, moment - time.monotonic()))


# expiry and delivery


def test_message_within_queue_ttl_is_delivered(ch: BlockingChannel) -> None:
    queue = declare(ch, "ttl", **{"x-message-ttl": 5000})
    publish(ch, queue, b"fresh")

    assert drain(ch, queue) == [b"fresh"]


def test_expired_message_gives_get_empty(ch: BlockingChannel) -> None:
    queue = declare(ch, "ttl", **{"x-message-ttl": 100})
    publish(ch, queue, b"old")
    time.sleep(0.15)

    method, props, body = ch.basic_get(queue)
    assert (method, props, body) == (None, None, None)
    assert ready(ch, queue) == 0


def test_per_message_expiration_expires_only_that_message(ch: BlockingChannel) -> None:
    queue = declare(ch, "exp")
    publish(ch, queue, b"short", expiration="100")
    publish(ch, queue, b"none")
    publish(ch, queue, b"long", expiration="60000")
    time.sleep(0.15)

    method, props, body = ch.basic_get(queue, auto_ack=True)
    assert body == b"none"
    assert method.message_count == 1
    method, props, body = ch.basic_get(queue, auto_ack=True)
    assert body == b"long"
    # the property reaches the consumer as it was published
    assert props.expiration == "60000"


@pytest.mark.parametrize(
    ("queue_ttl", "expiration"), [(100, "60000"), (60000, "100")],
    ids=["queue-ttl-lower", "message-ttl-lower"],
)  # fmt: skip
def test_lower_of_queue_ttl_and_expiration_applies(
    ch: BlockingChannel, queue_ttl: int, expiration: str
) -> None:
    queue = declare(ch, "ttl", **{"x-message-ttl": queue_ttl})
    publish(ch, queue, b"m", expiration=expiration)
    time.sleep(0.15)

    assert ch.basic_get(queue)[0] is None


def test_consumer_attaching_after_expiry_receives_nothing(
    conn: BlockingConnection, ch: BlockingChannel
) -> None:
    queue = declare(ch, "ttl")
    for i in range(3):
        publish(ch, queue, b"old-%d" % i, expiration="100")
    time.sleep(0.15)

    assert receive(conn, queue, 1, timeout=0.3) == []
    publish(ch, queue, b"fresh")
    got = receive(conn, queue, 2, timeout=0.5)
    assert [body for _, _, body in got] == [b"fresh"]


def test_message_expiring_behind_an_unacked_one_is_never_delivered(
    conn: BlockingConnection, ch: BlockingChannel
) -> None:
    queue, dlq = declare_with_dlq(ch, "ttl")
    consumer = conn.channel()
    consumer.basic_qos(prefetch_count=1)
    got: list[Delivery] = []
    consumer.basic_consume(queue, lambda _c, m, p, b: got.append((m, p, b)))
    publish(ch, queue, b"held")
    publish(ch, queue, b"expiring", expiration="100")
    deadline = time.monotonic() + 0.3
    while time.monotonic() < deadline:
        conn.process_data_events(time_limit=0.02)
    assert [body for _, _, body in got] == [b"held"]

    consumer.basic_ack(got[0][0].delivery_tag)
    deadline = time.monotonic() + 0.3
    while time.monotonic() < deadline:
        conn.process_data_events(time_limit=0.02)
    assert [body for _, _, body in got] == [b"held"]
    assert drain(ch, dlq) == [b"expiring"]


# expiry runs on its own timer


def test_expired_message_is_dead_lettered_with_no_other_traffic(
    amqpd_session_broker: BrokerThread, ch: BlockingChannel
) -> None:
    queue, dlq = declare_with_dlq(ch, "ttl", **{"x-message-ttl": 100})
    # the watcher consumes only the dead-letter queue, on its own connection
    watcher = pika.BlockingConnection(pika.URLParameters(amqpd_session_broker.url))
    try:
        wch = watcher.channel()
        got: list[Delivery] = []
        wch.basic_consume(dlq, lambda _c, m, p, b: got.append((m, p, b)))
        publish(ch, queue, b"m")
        published = time.monotonic()
        deadline = published + 3.0
        while not got and time.monotonic() < deadline:
            watcher.process_data_events(time_limit=0.01)
        elapsed = time.monotonic() - published
    finally:
        watcher.close()

    assert len(got) == 1
    _method, props, body = got[0]
    assert body == b"m"
    assert death_reason(props) == ("expired", queue)
    assert 0.09 <= elapsed < 2.0
    assert ready(ch, queue) == 0


def test_expiry_reaches_a_message_behind_the_head(
    conn: BlockingConnection, ch: BlockingChannel
) -> None:
    queue, dlq = declare_with_dlq(ch, "ttl")
    publish(ch, queue, b"head", expiration="60000")
    publish(ch, queue, b"second", expiration="100")

    got = receive(conn, dlq, 1, timeout=3.0)
    assert [body for _, _, body in got] == [b"second"]
    assert death_reason(got[0][1]) == ("expired", queue)
    assert drain(ch, queue) == [b"head"]


# x-message-ttl 0 and expiration "0"


@pytest.mark.parametrize("where", ["queue", "message"])
def test_ttl_zero_without_consumer_dead_letters_at_once(
    ch: BlockingChannel, where: str
) -> None:
    arguments = {"x-message-ttl": 0} if where == "queue" else {}
    queue, dlq = declare_with_dlq(ch, "ttl0", **arguments)
    props = {"expiration": "0"} if where == "message" else {}
    publish(ch, queue, b"m", **props)

    assert ready(ch, queue) == 0
    _method, props_out, body = ch.basic_get(dlq, auto_ack=True)
    assert body == b"m"
    assert death_reason(props_out) == ("expired", queue)


@pytest.mark.parametrize("where", ["queue", "message"])
def test_ttl_zero_is_delivered_to_a_waiting_consumer(
    conn: BlockingConnection, ch: BlockingChannel, where: str
) -> None:
    arguments = {"x-message-ttl": 0} if where == "queue" else {}
    queue, dlq = declare_with_dlq(ch, "ttl0", **arguments)
    consumer = conn.channel()
    consumer.basic_qos(prefetch_count=1)
    got: list[Delivery] = []
    consumer.basic_consume(queue, lambda _c, m, p, b: got.append((m, p, b)))
    props = {"expiration": "0"} if where == "message" else {}
    publish(ch, queue, b"first", **props)
    # the consumer's one slot is taken: this one cannot wait, it expires
    publish(ch, queue, b"second", **props)
    deadline = time.monotonic() + 2.0
    while not got and time.monotonic() < deadline:
        conn.process_data_events(time_limit=0.02)

    assert [body for _, _, body in got] == [b"first"]
    assert drain(ch, dlq) == [b"second"]
    assert ready(ch, queue) == 0


# requeue keeps the deadline


def test_message_requeued_after_its_deadline_is_dead_lettered_at_once(
    conn: BlockingConnection, ch: BlockingChannel
) -> None:
    queue, dlq = declare_with_dlq(ch, "ttl", **{"x-message-ttl": 200})
    publish(ch, queue, b"m")
    getter = conn.channel()
    method, _props, _body = getter.basic_get(queue)
    assert method is not None
    time.sleep(0.25)

    getter.basic_nack(method.delivery_tag, requeue=True)
    assert getter.basic_get(queue)[0] is None
    method, props, body = ch.basic_get(dlq, auto_ack=True)
    assert body == b"m"
    assert death_reason(props) == ("expired", queue)


def test_message_requeued_before_its_deadline_expires_at_the_original_one(
    conn: BlockingConnection, ch: BlockingChannel
) -> None:
    queue, dlq = declare_with_dlq(ch, "ttl", **{"x-message-ttl": 400})
    publish(ch, queue, b"m")
    published = time.monotonic()
    getter = conn.channel()
    method, _props, _body = getter.basic_get(queue)
    assert method is not None
    sleep_until(published + 0.2)
    getter.basic_nack(method.delivery_tag, requeue=True)

    # had requeueing restarted the TTL, the message would live until +0.6 s
    sleep_until(published + 0.45)
    assert getter.basic_get(queue)[0] is None
    assert drain(ch, dlq) == [b"m"]


# the expiration property


@pytest.mark.parametrize(
    ("expiration", "why"),
    [
        ("abc", "no_integer"),
        ("", "no_integer"),
        (" 10", "no_integer"),
        ("-5", "{value_negative,-5}"),
        ("10abc", '{leftover_string,"abc"}'),
        ("1.5", '{leftover_string,".5"}'),
        ("1_0", '{leftover_string,"_0"}'),
        ("315360000001", "{value_too_large,315360000001}"),
    ],
)
def test_invalid_expiration_closes_only_its_channel_with_406(
    conn: BlockingConnection, ch: BlockingChannel, expiration: str, why: str
) -> None:
    queue = declare(ch, "exp")
    bad = conn.channel()
    bad.confirm_delivery()

    with pytest.raises(ChannelClosedByBroker) as info:
        publish(bad, queue, b"bad", expiration=expiration)
    assert info.value.reply_code == 406
    assert info.value.reply_text == (
        f"PRECONDITION_FAILED - invalid expiration '{expiration}': {why}"
    )
    assert conn.is_open
    assert ready(ch, queue) == 0
    publish(ch, queue, b"good")
    assert drain(ch, queue) == [b"good"]


@pytest.mark.parametrize("expiration", ["+60000", "0060000", "-0", "315360000000"])
def test_expiration_in_rabbitmq_integer_forms_is_accepted(
    ch: BlockingChannel, expiration: str
) -> None:
    queue = declare(ch, "exp")
    publish(ch, queue, b"m", expiration=expiration)

    method, props, body = ch.basic_get(queue, auto_ack=True)
    if expiration == "-0":
        # zero: expired at once, there being no consumer
        assert method is None
        return
    assert body == b"m"
    assert props.expiration == expiration
