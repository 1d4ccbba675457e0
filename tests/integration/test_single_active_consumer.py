"""Single active consumer (queue argument ``x-single-active-consumer``) as
clients see it.

Only the first consumer registered on the queue gets messages. When it is
cancelled, or its channel or connection goes away, the next one in
registration order takes over; messages the old one left unacked come back
to their places first, so the new one sees them before the rest, marked
redelivered. Checked against RabbitMQ 3.10, with one difference: after a
basic.cancel of the active consumer, RabbitMQ 3.10's classic queues deliver
nothing to the next consumer until a message is requeued, while amqpd hands
over at once, as RabbitMQ's documentation describes.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pika
import pytest
from amqp_wire import RawClient
from pamqp import commands as spec
from pika.adapters.blocking_connection import BlockingChannel, BlockingConnection
from pika.exceptions import ChannelClosedByBroker

from amqpd.testing import BrokerThread

Got = list[tuple[bytes, bool, int]]  # body, redelivered, delivery tag


def connect(broker: BrokerThread) -> BlockingConnection:
    return pika.BlockingConnection(pika.URLParameters(broker.url))


@pytest.fixture
def conn(amqpd_session_broker: BrokerThread) -> Iterator[BlockingConnection]:
    connection = connect(amqpd_session_broker)
    yield connection
    if connection.is_open:
        connection.close()


@pytest.fixture
def queue(conn: BlockingConnection) -> Iterator[str]:
    """A single-active-consumer queue, deleted afterwards."""
    name = f"sac-{uuid.uuid4().hex[:12]}"
    conn.channel().queue_declare(name, arguments={"x-single-active-consumer": True})
    yield name
    if conn.is_open:
        conn.channel().queue_delete(name)


def consume(
    conn: BlockingConnection, queue: str, prefetch: int = 0, tag: str = ""
) -> tuple[BlockingChannel, Got]:
    ch = conn.channel()
    if prefetch:
        ch.basic_qos(prefetch_count=prefetch)
    got: Got = []
    ch.basic_consume(
        queue,
        lambda _c, m, _p, body: got.append((body, m.redelivered, m.delivery_tag)),
        consumer_tag=tag or None,
    )
    return ch, got


def publish(conn: BlockingConnection, queue: str, bodies: range) -> None:
    ch = conn.channel()
    for i in bodies:
        ch.basic_publish("", queue, str(i).encode())
    ch.close()


def pump_until(
    conns: list[BlockingConnection], done: Callable[[], bool], timeout: float = 2.0
) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            pytest.fail("timed out waiting for deliveries")
        for conn in conns:
            conn.process_data_events(time_limit=0.005)


def settle(conns: list[BlockingConnection], seconds: float = 0.1) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for conn in conns:
            conn.process_data_events(time_limit=0.005)


def seen(got: Got) -> list[tuple[bytes, bool]]:
    return [(body, redelivered) for body, redelivered, _ in got]


def test_only_the_first_registered_consumer_gets_messages(
    conn: BlockingConnection, queue: str
) -> None:
    _, first = consume(conn, queue)
    _, second = consume(conn, queue)
    _, third = consume(conn, queue)
    publish(conn, queue, range(1, 5))
    pump_until([conn], lambda: len(first) == 4)
    settle([conn])
    assert seen(first) == [(b"1", False), (b"2", False), (b"3", False), (b"4", False)]
    assert second == [] and third == []


def test_waiting_consumers_get_nothing_while_active_one_is_full(
    conn: BlockingConnection, queue: str
) -> None:
    _, active = consume(conn, queue, prefetch=1)
    _, waiting = consume(conn, queue)
    publish(conn, queue, range(1, 4))
    pump_until([conn], lambda: len(active) == 1)
    settle([conn])
    assert seen(active) == [(b"1", False)]
    assert waiting == []
    declared = conn.channel().queue_declare(queue, passive=True).method
    assert (declared.message_count, declared.consumer_count) == (2, 2)


def test_next_consumer_takes_over_when_active_one_cancels(
    conn: BlockingConnection, queue: str
) -> None:
    active_ch, active = consume(conn, queue, prefetch=2, tag="first")
    _, second = consume(conn, queue, tag="second")
    _, third = consume(conn, queue, tag="third")
    publish(conn, queue, range(1, 6))
    pump_until([conn], lambda: len(active) == 2)
    active_ch.basic_cancel("first")
    pump_until([conn], lambda: len(second) == 3)
    settle([conn])
    assert seen(second) == [(b"3", False), (b"4", False), (b"5", False)]
    assert third == []
    # a cancelled consumer's unacked messages stay with its channel
    active_ch.basic_ack(active[1][2], multiple=True)
    declared = conn.channel().queue_declare(queue, passive=True).method
    assert (declared.message_count, declared.consumer_count) == (0, 2)


def test_takeover_after_channel_error_gets_requeued_messages_first(
    conn: BlockingConnection, queue: str
) -> None:
    active_ch, active = consume(conn, queue, prefetch=3)
    _, second = consume(conn, queue)
    publish(conn, queue, range(1, 6))
    pump_until([conn], lambda: len(active) == 3)
    assert second == []
    # an unknown delivery tag closes the active consumer's channel (406)
    # without a basic.cancel first
    active_ch.basic_ack(99)
    pump_until([conn], lambda: len(second) == 5)
    assert active_ch.is_closed
    assert seen(second) == [
        (b"1", True), (b"2", True), (b"3", True), (b"4", False), (b"5", False),
    ]  # fmt: skip


def test_takeover_after_connection_loss_gets_requeued_messages_first(
    amqpd_session_broker: BrokerThread, conn: BlockingConnection, queue: str
) -> None:
    with RawClient(amqpd_session_broker.port) as raw:
        raw.handshake()
        raw.open_channel(1)
        raw.send_method(1, spec.Basic.Qos(prefetch_count=2))
        raw.expect(spec.Basic.QosOk, 1)
        raw.send_method(1, spec.Basic.Consume(queue=queue, consumer_tag="raw"))
        raw.expect(spec.Basic.ConsumeOk, 1)
        _, second = consume(conn, queue)
        publish(conn, queue, range(1, 5))
        assert raw.expect(spec.Basic.Deliver, 1).delivery_tag == 1
        settle([conn])
        assert second == []
    # the socket is gone without any close or cancel
    pump_until([conn], lambda: len(second) == 4)
    assert seen(second) == [(b"1", True), (b"2", True), (b"3", False), (b"4", False)]


def test_pika_close_cancels_first_so_the_next_consumer_takes_the_backlog_first(
    conn: BlockingConnection, queue: str
) -> None:
    # pika's channel.close() sends basic.cancel before channel.close: the
    # next consumer takes over at the cancel and gets the ready messages,
    # then the closed channel's unacked ones, redelivered
    active_ch, active = consume(conn, queue, prefetch=2)
    _, second = consume(conn, queue)
    publish(conn, queue, range(1, 5))
    pump_until([conn], lambda: len(active) == 2)
    active_ch.close()
    pump_until([conn], lambda: len(second) == 4)
    assert seen(second) == [(b"3", False), (b"4", False), (b"1", True), (b"2", True)]


def test_consumers_take_over_in_registration_order(
    conn: BlockingConnection, queue: str
) -> None:
    chans = [consume(conn, queue, prefetch=1, tag=f"c{i}") for i in range(3)]
    publish(conn, queue, range(1, 4))
    for expected, (ch, got) in enumerate(chans, start=1):
        pump_until([conn], lambda got=got: len(got) == 1)
        assert seen(got) == [(str(expected).encode(), False)]
        ch.basic_cancel(f"c{expected - 1}")
    settle([conn])
    assert [len(got) for _, got in chans] == [1, 1, 1]


def test_late_consumer_stays_idle_behind_the_active_one(
    conn: BlockingConnection, queue: str
) -> None:
    _, active = consume(conn, queue)
    publish(conn, queue, range(1, 3))
    pump_until([conn], lambda: len(active) == 2)
    _, late = consume(conn, queue)
    publish(conn, queue, range(3, 5))
    pump_until([conn], lambda: len(active) == 4)
    settle([conn])
    assert late == []


def test_queue_without_single_active_consumer_shares_round_robin(
    conn: BlockingConnection,
) -> None:
    name = f"sac-off-{uuid.uuid4().hex[:12]}"
    conn.channel().queue_declare(
        name, auto_delete=True, arguments={"x-single-active-consumer": False}
    )
    _, first = consume(conn, name)
    _, second = consume(conn, name)
    publish(conn, name, range(1, 5))
    pump_until([conn], lambda: len(first) + len(second) == 4)
    assert [b for b, _ in seen(first)] == [b"1", b"3"]
    assert [b for b, _ in seen(second)] == [b"2", b"4"]


@pytest.mark.parametrize(
    ("value", "kind"), [(1, "signedint"), ("true", "longstr")], ids=["int", "str"]
)
def test_non_boolean_single_active_consumer_is_refused_406(
    conn: BlockingConnection, value: Any, kind: str
) -> None:
    name = f"sac-bad-{uuid.uuid4().hex[:12]}"
    ch = conn.channel()
    with pytest.raises(ChannelClosedByBroker) as info:
        ch.queue_declare(name, arguments={"x-single-active-consumer": value})
    assert info.value.reply_code == 406
    assert info.value.reply_text == (
        f"PRECONDITION_FAILED - invalid arg 'x-single-active-consumer' for queue "
        f"'{name}' in vhost '/': {{unacceptable_type,{kind}}}"
    )
    with pytest.raises(ChannelClosedByBroker) as missing:
        conn.channel().queue_declare(name, passive=True)
    assert missing.value.reply_code == 404
