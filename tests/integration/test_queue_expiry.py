"""Queue expiry (x-expires) as pika clients see it.

A queue with no consumers that nobody uses (no basic.get, no declare of it,
passive or not) is deleted once the interval has passed; while a consumer
is attached it stays, and the interval starts again when the last consumer
leaves. Publishing to it is not use. Checked against RabbitMQ 3.10.

Whether the queue still exists is asked with a queue.bind (and unbind) to
amq.direct: a passive declare would itself count as use and postpone the
expiry, in RabbitMQ as here.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pika
import pytest
from pika.adapters.blocking_connection import BlockingChannel, BlockingConnection
from pika.exceptions import ChannelClosedByBroker

from amqpd.testing import BrokerThread

PROBE_KEY = "queue-expiry-probe"
DECLARED: list[str] = []  # deleted when the test's connection is torn down


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def connect(broker: BrokerThread) -> BlockingConnection:
    return pika.BlockingConnection(pika.URLParameters(broker.url))


@pytest.fixture
def conn(amqpd_session_broker: BrokerThread) -> Iterator[BlockingConnection]:
    connection = connect(amqpd_session_broker)
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


def exists(conn: BlockingConnection, queue: str) -> bool:
    """Whether the queue is there, asked in a way that is not use."""
    probe = conn.channel()
    try:
        probe.queue_bind(queue, "amq.direct", PROBE_KEY)
        # the queue may expire in between: then the unbind finds it gone
        probe.queue_unbind(queue, "amq.direct", PROBE_KEY)
    except ChannelClosedByBroker as exc:
        assert exc.reply_code == 404
        return False
    probe.close()
    return True


def gone_after(
    conn: BlockingConnection, queue: str, since: float, timeout: float = 3.0
) -> float:
    """Seconds from ``since`` until the queue was found gone."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not exists(conn, queue):
            return time.monotonic() - since
        conn.process_data_events(time_limit=0.02)
    raise AssertionError(f"queue {queue} still there after {timeout}s")


def pump(conn: BlockingConnection, seconds: float) -> None:
    """Let time pass while the connection handles its events."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        conn.process_data_events(time_limit=0.02)


def assert_not_found(conn: BlockingConnection, queue: str) -> None:
    with pytest.raises(ChannelClosedByBroker) as info:
        conn.channel().queue_declare(queue, passive=True)
    assert info.value.reply_code == 404
    assert info.value.reply_text == f"NOT_FOUND - no queue '{queue}' in vhost '/'"


def test_unused_queue_is_deleted_after_the_interval(
    conn: BlockingConnection, ch: BlockingChannel
) -> None:
    queue = declare(ch, "expires", **{"x-expires": 200})
    declared = time.monotonic()

    elapsed = gone_after(conn, queue, declared)
    assert 0.19 <= elapsed < 2.0
    assert_not_found(conn, queue)


def _get(ch: BlockingChannel, queue: str) -> None:
    assert ch.basic_get(queue)[0] is None


def _redeclare(ch: BlockingChannel, queue: str) -> None:
    ch.queue_declare(queue, arguments={"x-expires": 300})


def _passive(ch: BlockingChannel, queue: str) -> None:
    ch.queue_declare(queue, passive=True)


@pytest.mark.parametrize(
    "use", [_get, _redeclare, _passive], ids=["basic.get", "redeclare", "passive"]
)
def test_use_postpones_queue_expiry(
    conn: BlockingConnection,
    ch: BlockingChannel,
    use: Callable[[BlockingChannel, str], None],
) -> None:
    queue = declare(ch, "expires", **{"x-expires": 300})
    started = time.monotonic()
    while time.monotonic() - started < 0.9:  # three intervals
        time.sleep(0.1)
        use(ch, queue)
    last_use = time.monotonic()
    assert exists(conn, queue)

    elapsed = gone_after(conn, queue, last_use)
    assert 0.29 <= elapsed < 2.0


def test_publishing_does_not_postpone_queue_expiry(
    conn: BlockingConnection, ch: BlockingChannel
) -> None:
    queue = declare(ch, "expires", **{"x-expires": 300})
    declared = time.monotonic()
    deadline = declared + 3.0
    while exists(conn, queue):
        assert time.monotonic() < deadline, "queue kept alive by publishing"
        ch.basic_publish("", queue, b"m")
        time.sleep(0.05)

    assert 0.29 <= time.monotonic() - declared < 2.0


@pytest.mark.parametrize("leave", ["cancel", "channel close"])
def test_consumer_keeps_queue_and_expiry_starts_when_the_last_leaves(
    conn: BlockingConnection, ch: BlockingChannel, leave: str
) -> None:
    queue = declare(ch, "expires", **{"x-expires": 200})
    first, second = conn.channel(), conn.channel()
    tags = [c.basic_consume(queue, lambda *_: None) for c in (first, second)]
    pump(conn, 0.5)
    assert exists(conn, queue)

    first.basic_cancel(tags[0])
    pump(conn, 0.3)
    assert exists(conn, queue)

    if leave == "cancel":
        second.basic_cancel(tags[1])
    else:
        second.close()
    left = time.monotonic()
    elapsed = gone_after(conn, queue, left)
    assert 0.19 <= elapsed < 2.0


def test_expired_queue_does_not_dead_letter_its_messages(
    conn: BlockingConnection, ch: BlockingChannel
) -> None:
    dlq = declare(ch, "expires-dlq")
    queue = declare(
        ch, "expires", **{
            "x-expires": 150, "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": dlq,
        },
    )  # fmt: skip
    ch.basic_publish("", queue, b"one")
    ch.basic_publish("", queue, b"two")

    gone_after(conn, queue, time.monotonic())
    assert ch.queue_declare(dlq, passive=True).method.message_count == 0


@pytest.mark.parametrize("value", [0, -1, "1"])
def test_invalid_x_expires_is_refused_with_406(
    conn: BlockingConnection, value: object
) -> None:
    name = unique("expires")
    with pytest.raises(ChannelClosedByBroker) as info:
        conn.channel().queue_declare(name, arguments={"x-expires": value})
    assert info.value.reply_code == 406
    assert info.value.reply_text.startswith(
        f"PRECONDITION_FAILED - invalid arg 'x-expires' for queue '{name}' in "
        "vhost '/': "
    )
    assert not exists(conn, name)


def test_expires_policy_applies_to_a_queue_without_the_argument(
    amqpd_broker: BrokerThread,
) -> None:
    assert amqpd_broker.broker is not None
    node = amqpd_broker.broker.node
    queue = unique("policy-expires")
    connection = connect(amqpd_broker)
    try:
        connection.channel().queue_declare(queue)
        amqpd_broker.call(
            lambda: node.set_policy("/", "expire-fast", "^policy-expires-",
                                    {"expires": 200}, apply_to="queues")
        )  # fmt: skip
        applied = time.monotonic()

        elapsed = gone_after(connection, queue, applied)
        assert 0.19 <= elapsed < 2.0
    finally:
        connection.close()
