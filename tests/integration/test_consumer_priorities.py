"""Consumer priorities (the ``x-priority`` consume argument) as clients see
them.

A queue delivers to its highest-priority consumers while they have room
under their prefetch limit; lower-priority consumers get messages only while
every higher one is full. Consumers of the same priority share messages
round-robin. RabbitMQ 3.10 answers the same, checked against a real node,
as it does for the other consumer argument, ``x-cancel-on-ha-failover``.
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

Got = list[tuple[bytes, int]]  # body, delivery tag


@pytest.fixture
def conn(amqpd_session_broker: BrokerThread) -> Iterator[BlockingConnection]:
    connection = pika.BlockingConnection(pika.URLParameters(amqpd_session_broker.url))
    yield connection
    if connection.is_open:
        connection.close()


@pytest.fixture
def queue(conn: BlockingConnection) -> Iterator[str]:
    name = f"prio-{uuid.uuid4().hex[:12]}"
    ch = conn.channel()
    ch.queue_declare(name)
    yield name
    if conn.is_open:
        conn.channel().queue_delete(name)


def consumer(
    conn: BlockingConnection,
    queue: str,
    priority: int | None,
    prefetch: int = 0,
    tag: str = "",
) -> tuple[BlockingChannel, Got]:
    """A consumer on its own channel, recording (body, delivery tag)."""
    ch = conn.channel()
    if prefetch:
        ch.basic_qos(prefetch_count=prefetch)
    got: Got = []
    arguments = {} if priority is None else {"x-priority": priority}
    ch.basic_consume(
        queue,
        lambda _c, m, _p, body: got.append((body, m.delivery_tag)),
        arguments=arguments,
        consumer_tag=tag or None,
    )
    return ch, got


def publish(conn: BlockingConnection, queue: str, bodies: range) -> None:
    ch = conn.channel()
    for i in bodies:
        ch.basic_publish("", queue, str(i).encode())
    ch.close()


def pump_until(
    conn: BlockingConnection, done: Callable[[], bool], timeout: float = 2.0
) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            pytest.fail("timed out waiting for deliveries")
        conn.process_data_events(time_limit=0.01)


def settle(conn: BlockingConnection, seconds: float = 0.1) -> None:
    """Let anything still in flight arrive (to check nothing more does)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        conn.process_data_events(time_limit=0.01)


def bodies(got: Got) -> list[bytes]:
    return [body for body, _ in got]


def test_highest_priority_consumer_gets_every_message_while_it_has_room(
    conn: BlockingConnection, queue: str
) -> None:
    _, low = consumer(conn, queue, 1)
    _, high = consumer(conn, queue, 10)
    _, default = consumer(conn, queue, None)
    publish(conn, queue, range(1, 7))
    pump_until(conn, lambda: len(high) == 6)
    settle(conn)
    assert bodies(high) == [b"1", b"2", b"3", b"4", b"5", b"6"]
    assert low == [] and default == []


def test_lower_priority_consumer_gets_messages_only_while_higher_is_full(
    conn: BlockingConnection, queue: str
) -> None:
    _, low = consumer(conn, queue, 0)
    high_ch, high = consumer(conn, queue, 5, prefetch=2)
    publish(conn, queue, range(1, 6))
    pump_until(conn, lambda: len(high) + len(low) == 5)
    assert bodies(high) == [b"1", b"2"]
    assert bodies(low) == [b"3", b"4", b"5"]

    # room again on the higher consumer: new messages go there first
    high_ch.basic_ack(high[0][1])
    publish(conn, queue, range(6, 8))
    pump_until(conn, lambda: len(high) + len(low) == 7)
    assert bodies(high) == [b"1", b"2", b"6"]
    assert bodies(low) == [b"3", b"4", b"5", b"7"]


def test_consumers_of_equal_priority_share_messages_round_robin(
    conn: BlockingConnection, queue: str
) -> None:
    _, first = consumer(conn, queue, 7)
    _, lower = consumer(conn, queue, 3)
    _, second = consumer(conn, queue, 7)
    publish(conn, queue, range(1, 7))
    pump_until(conn, lambda: len(first) + len(second) == 6)
    settle(conn)
    assert bodies(first) == [b"1", b"3", b"5"]
    assert bodies(second) == [b"2", b"4", b"6"]
    assert lower == []


def test_round_robin_within_priority_skips_full_consumers(
    conn: BlockingConnection, queue: str
) -> None:
    _, first = consumer(conn, queue, 2, prefetch=1)
    _, second = consumer(conn, queue, 2)
    _, lower = consumer(conn, queue, 1)
    publish(conn, queue, range(1, 6))
    pump_until(conn, lambda: len(first) + len(second) == 5)
    settle(conn)
    assert bodies(first) == [b"1"]
    assert bodies(second) == [b"2", b"3", b"4", b"5"]
    assert lower == []


def test_negative_priority_ranks_below_consumers_without_argument(
    conn: BlockingConnection, queue: str
) -> None:
    _, negative = consumer(conn, queue, -5)
    _, plain = consumer(conn, queue, None, prefetch=3)
    publish(conn, queue, range(1, 6))
    pump_until(conn, lambda: len(negative) + len(plain) == 5)
    assert bodies(plain) == [b"1", b"2", b"3"]
    assert bodies(negative) == [b"4", b"5"]


def test_ready_backlog_goes_to_higher_priority_consumer_that_arrives_later(
    conn: BlockingConnection, queue: str
) -> None:
    _, low = consumer(conn, queue, 0, prefetch=1)
    publish(conn, queue, range(1, 5))
    pump_until(conn, lambda: len(low) == 1)
    _, high = consumer(conn, queue, 9)
    pump_until(conn, lambda: len(high) == 3)
    settle(conn)
    assert bodies(low) == [b"1"]
    assert bodies(high) == [b"2", b"3", b"4"]


def test_requeued_message_goes_to_highest_priority_consumer_with_room(
    conn: BlockingConnection, queue: str
) -> None:
    low_ch, low = consumer(conn, queue, 0)
    _, high = consumer(conn, queue, 4, prefetch=1)
    publish(conn, queue, range(1, 3))
    pump_until(conn, lambda: len(high) + len(low) == 2)
    assert (bodies(high), bodies(low)) == ([b"1"], [b"2"])
    # the higher consumer is still full: the requeued message comes back to
    # the lower one, redelivered
    low_ch.basic_nack(low[0][1], requeue=True)
    pump_until(conn, lambda: len(low) == 2)
    assert bodies(low) == [b"2", b"2"]
    assert high == [(b"1", 1)]


@pytest.mark.parametrize(
    ("value", "kind"),
    [("high", "longstr"), (True, "bool")],
)
def test_non_integer_priority_is_refused_406(
    conn: BlockingConnection, queue: str, value: Any, kind: str
) -> None:
    ch = conn.channel()
    with pytest.raises(ChannelClosedByBroker) as info:
        ch.basic_consume(queue, lambda *a: None, arguments={"x-priority": value})
    assert info.value.reply_code == 406
    assert info.value.reply_text == (
        f"PRECONDITION_FAILED - invalid arg 'x-priority' for queue '{queue}' in "
        f"vhost '/': \"expected integer, got {kind}\""
    )
    assert conn.is_open


# x-cancel-on-ha-failover: a mirrored-queue argument of RabbitMQ. There is
# no mirroring here, so it is accepted (as a boolean) and has no effect.


def test_cancel_on_ha_failover_argument_is_accepted_on_consume(
    conn: BlockingConnection, queue: str
) -> None:
    ch = conn.channel()
    got: list[bytes] = []
    tag = ch.basic_consume(
        queue,
        lambda _c, _m, _p, body: got.append(body),
        auto_ack=True,
        arguments={"x-cancel-on-ha-failover": True},
        consumer_tag="ha-consumer",
    )
    assert tag == "ha-consumer"
    publish(conn, queue, range(1, 3))
    pump_until(conn, lambda: len(got) == 2)
    assert got == [b"1", b"2"]


def test_non_boolean_cancel_on_ha_failover_is_refused_406(
    conn: BlockingConnection, queue: str
) -> None:
    ch = conn.channel()
    with pytest.raises(ChannelClosedByBroker) as info:
        ch.basic_consume(
            queue, lambda *a: None, arguments={"x-cancel-on-ha-failover": "yes"}
        )
    assert info.value.reply_code == 406
    assert info.value.reply_text == (
        f"PRECONDITION_FAILED - invalid arg 'x-cancel-on-ha-failover' for queue "
        f"'{queue}' in vhost '/': {{unacceptable_type,longstr}}"
    )
