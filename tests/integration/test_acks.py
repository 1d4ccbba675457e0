"""Acknowledgements as clients see them: ack, nack, reject, recover, and what
happens to unacked messages when their channel or connection goes away.

Requeued messages go back to their original places in the queue, ahead of
anything published later, and come again with redelivered=true (RabbitMQ's
classic queues do the same).
"""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pika
import pytest
from amqp_wire import RawClient
from pamqp import commands as spec
from pamqp.body import ContentBody
from pamqp.header import ContentHeader
from pika.adapters.asyncio_connection import AsyncioConnection
from pika.adapters.blocking_connection import BlockingChannel

from amqpd.testing import BrokerThread

Got = tuple[bytes, bool]  # body, redelivered


@contextmanager
def pika_channel(broker: BrokerThread) -> Iterator[BlockingChannel]:
    conn = pika.BlockingConnection(pika.URLParameters(broker.url))
    try:
        yield conn.channel()
    finally:
        if conn.is_open:
            conn.close()


@contextmanager
def raw_channel(broker: BrokerThread) -> Iterator[RawClient]:
    """A raw connection with channel 1 open (no Nagle delay on our side)."""
    with RawClient(broker.port) as client:
        client.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        client.handshake()
        client.open_channel(1)
        yield client


@contextmanager
def shared_queue(broker: BrokerThread) -> Iterator[str]:
    """A queue several connections can use; deleted afterwards."""
    name = f"acks-{uuid.uuid4().hex[:12]}"
    with pika_channel(broker) as ch:
        ch.queue_declare(name)
    try:
        yield name
    finally:
        with pika_channel(broker) as ch:
            ch.queue_delete(name)


def exclusive_queue(ch: BlockingChannel) -> str:
    return str(ch.queue_declare("", exclusive=True).method.queue)


def publish_numbers(ch: BlockingChannel, queue: str, first: int, last: int) -> None:
    for i in range(first, last + 1):
        ch.basic_publish("", queue, str(i).encode())


def get_tags(ch: BlockingChannel, queue: str, count: int) -> dict[bytes, int]:
    """basic.get ``count`` messages without ack: body -> delivery tag."""
    tags = {}
    for _ in range(count):
        method, _props, body = ch.basic_get(queue)
        assert method is not None
        tags[body] = method.delivery_tag
    return tags


def drain(ch: BlockingChannel, queue: str) -> list[Got]:
    """Every ready message, in queue order, taken with auto-ack."""
    got = []
    while True:
        method, _props, body = ch.basic_get(queue, auto_ack=True)
        if method is None:
            return got
        got.append((body, method.redelivered))


def ready_count(ch: BlockingChannel, queue: str) -> int:
    return int(ch.queue_declare(queue, passive=True).method.message_count)


# ack


def test_acked_messages_do_not_come_back_when_channel_closes(
    amqpd_session_broker: BrokerThread,
) -> None:
    with pika_channel(amqpd_session_broker) as ch:
        queue = exclusive_queue(ch)
        publish_numbers(ch, queue, 1, 3)
        tags = get_tags(ch, queue, 3)
        ch.basic_ack(tags[b"2"])
        other = ch.connection.channel()
        ch.close()

        assert drain(other, queue) == [(b"1", True), (b"3", True)]


def test_ack_multiple_acks_every_tag_up_to_the_given_one(
    amqpd_session_broker: BrokerThread,
) -> None:
    with pika_channel(amqpd_session_broker) as ch:
        queue = exclusive_queue(ch)
        publish_numbers(ch, queue, 1, 5)
        tags = get_tags(ch, queue, 5)
        ch.basic_ack(tags[b"3"], multiple=True)
        other = ch.connection.channel()
        ch.close()

        assert drain(other, queue) == [(b"4", True), (b"5", True)]


def test_ack_multiple_with_tag_zero_acks_everything_unacked(
    amqpd_session_broker: BrokerThread,
) -> None:
    with pika_channel(amqpd_session_broker) as ch:
        queue = exclusive_queue(ch)
        publish_numbers(ch, queue, 1, 4)
        get_tags(ch, queue, 4)
        ch.basic_ack(0, multiple=True)
        other = ch.connection.channel()
        ch.close()

        assert drain(other, queue) == []


def _expect_channel_error(ch: BlockingChannel, settle_wrong: Any) -> Any:
    settle_wrong()
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as info:
        ch.basic_qos(prefetch_count=1)  # a round trip that sees the close
    return info.value


@pytest.mark.parametrize(
    "settle",
    [
        pytest.param(lambda ch: ch.basic_ack(7), id="ack"),
        pytest.param(lambda ch: ch.basic_nack(7), id="nack"),
        pytest.param(lambda ch: ch.basic_reject(7), id="reject"),
        pytest.param(lambda ch: ch.basic_ack(7, multiple=True), id="ack-multiple"),
        pytest.param(lambda ch: ch.basic_nack(7, multiple=True), id="nack-multiple"),
    ],
)
def test_unknown_delivery_tag_closes_channel_406(
    amqpd_session_broker: BrokerThread, settle: Any
) -> None:
    with pika_channel(amqpd_session_broker) as ch:
        queue = exclusive_queue(ch)
        publish_numbers(ch, queue, 1, 2)
        get_tags(ch, queue, 2)
        other = ch.connection.channel()
        error = _expect_channel_error(ch, lambda: settle(ch))

        assert error.reply_code == 406
        assert error.reply_text == "PRECONDITION_FAILED - unknown delivery tag 7"
        # the channel's unacked messages went back to the queue
        assert drain(other, queue) == [(b"1", True), (b"2", True)]


def test_acking_the_same_tag_twice_closes_channel_406(
    amqpd_session_broker: BrokerThread,
) -> None:
    with pika_channel(amqpd_session_broker) as ch:
        queue = exclusive_queue(ch)
        publish_numbers(ch, queue, 1, 1)
        tag = get_tags(ch, queue, 1)[b"1"]
        ch.basic_ack(tag)
        error = _expect_channel_error(ch, lambda: ch.basic_ack(tag))

    assert error.reply_code == 406
    assert error.reply_text == f"PRECONDITION_FAILED - unknown delivery tag {tag}"


def test_delivery_tags_count_up_per_channel(
    amqpd_session_broker: BrokerThread,
) -> None:
    with pika_channel(amqpd_session_broker) as ch:
        queue = exclusive_queue(ch)
        publish_numbers(ch, queue, 1, 4)
        first = ch.connection.channel()
        second = ch.connection.channel()
        tags = [
            get_tags(first, queue, 1)[b"1"],
            get_tags(second, queue, 1)[b"2"],
            get_tags(first, queue, 1)[b"3"],
            get_tags(second, queue, 1)[b"4"],
        ]
    assert tags == [1, 1, 2, 2]


# nack and reject


def test_nack_requeue_puts_messages_back_in_their_original_places(
    amqpd_session_broker: BrokerThread,
) -> None:
    with pika_channel(amqpd_session_broker) as ch:
        queue = exclusive_queue(ch)
        publish_numbers(ch, queue, 1, 5)
        tags = get_tags(ch, queue, 5)
        ch.basic_nack(tags[b"4"], requeue=True)
        ch.basic_nack(tags[b"2"], requeue=True)
        publish_numbers(ch, queue, 6, 6)
        ch.basic_nack(tags[b"3"], requeue=True)

        assert drain(ch, queue) == [
            (b"2", True), (b"3", True), (b"4", True), (b"6", False),
        ]  # fmt: skip


def test_requeued_message_goes_ahead_of_ready_ones_published_after_it(
    amqpd_session_broker: BrokerThread,
) -> None:
    with pika_channel(amqpd_session_broker) as ch:
        queue = exclusive_queue(ch)
        publish_numbers(ch, queue, 1, 5)
        tags = get_tags(ch, queue, 3)
        ch.basic_nack(tags[b"2"], requeue=True)
        publish_numbers(ch, queue, 6, 6)

        assert drain(ch, queue) == [
            (b"2", True), (b"4", False), (b"5", False), (b"6", False),
        ]  # fmt: skip


def test_nack_multiple_requeue_returns_all_up_to_tag(
    amqpd_session_broker: BrokerThread,
) -> None:
    with pika_channel(amqpd_session_broker) as ch:
        queue = exclusive_queue(ch)
        publish_numbers(ch, queue, 1, 5)
        tags = get_tags(ch, queue, 4)
        ch.basic_nack(tags[b"3"], multiple=True, requeue=True)

        assert drain(ch, queue) == [
            (b"1", True), (b"2", True), (b"3", True), (b"5", False),
        ]  # fmt: skip
        ch.basic_ack(tags[b"4"])  # still unacked, still ackable


def test_nack_multiple_with_tag_zero_requeues_everything(
    amqpd_session_broker: BrokerThread,
) -> None:
    with pika_channel(amqpd_session_broker) as ch:
        queue = exclusive_queue(ch)
        publish_numbers(ch, queue, 1, 3)
        get_tags(ch, queue, 3)
        ch.basic_nack(0, multiple=True, requeue=True)

        assert drain(ch, queue) == [(b"1", True), (b"2", True), (b"3", True)]


def test_nack_without_requeue_drops_messages(
    amqpd_session_broker: BrokerThread,
) -> None:
    with pika_channel(amqpd_session_broker) as ch:
        queue = exclusive_queue(ch)
        publish_numbers(ch, queue, 1, 4)
        tags = get_tags(ch, queue, 4)
        ch.basic_nack(tags[b"2"], multiple=True, requeue=False)
        ch.basic_nack(tags[b"4"], requeue=False)
        other = ch.connection.channel()
        ch.close()

        assert drain(other, queue) == [(b"3", True)]


def test_reject_without_requeue_drops_message(
    amqpd_session_broker: BrokerThread,
) -> None:
    with pika_channel(amqpd_session_broker) as ch:
        queue = exclusive_queue(ch)
        publish_numbers(ch, queue, 1, 2)
        tags = get_tags(ch, queue, 2)
        ch.basic_reject(tags[b"1"], requeue=False)
        ch.basic_reject(tags[b"2"], requeue=True)

        assert drain(ch, queue) == [(b"2", True)]


def test_rejected_message_is_redelivered_to_consumer_with_flag_set(
    amqpd_session_broker: BrokerThread,
) -> None:
    with pika_channel(amqpd_session_broker) as ch:
        queue = exclusive_queue(ch)
        seen: list[tuple[bytes, int, bool]] = []

        def on_message(
            channel: BlockingChannel, method: Any, _props: Any, body: bytes
        ) -> None:
            seen.append((body, method.delivery_tag, method.redelivered))
            if not method.redelivered:
                channel.basic_reject(method.delivery_tag, requeue=True)
            else:
                channel.basic_ack(method.delivery_tag)

        ch.basic_consume(queue, on_message)
        publish_numbers(ch, queue, 1, 1)
        for _ in range(20):
            ch.connection.process_data_events(0.05)
            if len(seen) == 2:
                break
        assert ready_count(ch, queue) == 0

    assert seen == [(b"1", 1, False), (b"1", 2, True)]


# recover


def test_recover_requeue_true_redelivers_unacked_messages(
    amqpd_session_broker: BrokerThread,
) -> None:
    with pika_channel(amqpd_session_broker) as ch:
        queue = exclusive_queue(ch)
        publish_numbers(ch, queue, 1, 3)
        tags = get_tags(ch, queue, 2)
        ch.basic_recover(requeue=True)
        again = get_tags(ch, queue, 3)
        method, _props, _body = ch.basic_get(queue)

        assert tags == {b"1": 1, b"2": 2}
        assert again == {b"1": 3, b"2": 4, b"3": 5}
        assert method is None
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as info:
            ch.basic_ack(1)  # the old tags are gone
            ch.basic_qos(prefetch_count=1)
    assert info.value.reply_code == 406


def test_recover_requeue_true_redelivers_to_consumer(
    amqpd_session_broker: BrokerThread,
) -> None:
    with pika_channel(amqpd_session_broker) as ch:
        queue = exclusive_queue(ch)
        seen: list[tuple[bytes, int, bool]] = []
        ch.basic_consume(
            queue, lambda _c, m, _p, b: seen.append((b, m.delivery_tag, m.redelivered))
        )
        publish_numbers(ch, queue, 1, 2)
        ready_count(ch, queue)
        ch.basic_recover(requeue=True)
        ready_count(ch, queue)
        ch.connection.process_data_events(0)

    assert seen == [
        (b"1", 1, False),
        (b"2", 2, False),
        (b"1", 3, True),
        (b"2", 4, True),
    ]


def test_recover_requeue_false_closes_connection_540(
    amqpd_broker: BrokerThread,
) -> None:
    with pika_channel(amqpd_broker) as ch:
        queue = exclusive_queue(ch)
        publish_numbers(ch, queue, 1, 1)
        get_tags(ch, queue, 1)
        with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as info:
            ch.basic_recover(requeue=False)

    assert info.value.reply_code == 540
    assert info.value.reply_text == "NOT_IMPLEMENTED - requeue=false"


# unacked messages of a closed channel or connection


def test_unacked_messages_of_closed_channel_are_requeued_in_order(
    amqpd_session_broker: BrokerThread,
) -> None:
    with pika_channel(amqpd_session_broker) as ch:
        queue = exclusive_queue(ch)
        consumer = ch.connection.channel()
        seen: list[bytes] = []
        consumer.basic_consume(queue, lambda _c, _m, _p, b: seen.append(b))
        publish_numbers(ch, queue, 1, 3)
        for _ in range(40):
            if len(seen) == 3:
                break
            ch.connection.process_data_events(0.05)
        consumer.basic_cancel(consumer.consumer_tags[0])
        publish_numbers(ch, queue, 4, 4)
        consumer.close()

        assert drain(ch, queue) == [
            (b"1", True), (b"2", True), (b"3", True), (b"4", False),
        ]  # fmt: skip


def test_unacked_messages_of_closed_connection_are_requeued_in_order(
    amqpd_session_broker: BrokerThread,
) -> None:
    with shared_queue(amqpd_session_broker) as queue:
        with pika_channel(amqpd_session_broker) as ch:
            publish_numbers(ch, queue, 1, 5)
            with pika_channel(amqpd_session_broker) as taker:
                tags = get_tags(taker, queue, 3)
                taker.basic_ack(tags[b"2"])
            publish_numbers(ch, queue, 6, 6)

            assert drain(ch, queue) == [
                (b"1", True), (b"3", True), (b"4", False), (b"5", False),
                (b"6", False),
            ]  # fmt: skip


def test_unacked_messages_of_dropped_socket_are_requeued(
    amqpd_session_broker: BrokerThread,
) -> None:
    with shared_queue(amqpd_session_broker) as queue:
        with pika_channel(amqpd_session_broker) as ch:
            publish_numbers(ch, queue, 1, 2)
            with raw_channel(amqpd_session_broker) as client:
                client.send_method(1, spec.Basic.Consume(queue=queue))
                client.expect(spec.Basic.ConsumeOk, 1)
                for _ in range(2):
                    client.expect(spec.Basic.Deliver, 1)
                    client.expect(ContentHeader, 1)
                    client.expect(ContentBody, 1)
            # the socket closed without connection.close
            for _ in range(100):
                if ready_count(ch, queue) == 2:
                    break
                ch.connection.sleep(0.01)

            assert drain(ch, queue) == [(b"1", True), (b"2", True)]


# pika's asyncio adapter


async def _consume_with_asyncio_adapter(url: str) -> list[tuple[bytes, int, bool]]:
    loop = asyncio.get_running_loop()
    done: asyncio.Future[list[tuple[bytes, int, bool]]] = loop.create_future()
    seen: list[tuple[bytes, int, bool]] = []

    def fail(*args: Any) -> None:
        if not done.done():
            done.set_exception(RuntimeError(repr(args)))

    def on_open(conn: AsyncioConnection) -> None:
        conn.channel(on_open_callback=on_channel)

    def on_channel(ch: Any) -> None:
        ch.add_on_close_callback(fail)
        ch.queue_declare("", exclusive=True, callback=lambda f: on_queue(ch, f))

    def on_queue(ch: Any, frame: Any) -> None:
        queue = frame.method.queue
        for i in (1, 2, 3):
            ch.basic_publish("", queue, str(i).encode())

        def on_message(ch: Any, method: Any, _props: Any, body: bytes) -> None:
            seen.append((body, method.delivery_tag, method.redelivered))
            if body == b"2" and not method.redelivered:
                ch.basic_nack(method.delivery_tag, requeue=True)
            elif len(seen) == 4:
                ch.basic_ack(0, multiple=True)
                ch.queue_declare(queue, passive=True, callback=on_count)

        ch.basic_qos(prefetch_count=10)
        ch.basic_consume(queue, on_message)

    def on_count(frame: Any) -> None:
        if not done.done():
            done.set_result([*seen, (b"ready", frame.method.message_count, False)])

    conn = AsyncioConnection(
        pika.URLParameters(url),
        on_open_callback=on_open,
        on_open_error_callback=fail,
        on_close_callback=fail,
        custom_ioloop=loop,
    )
    try:
        return await asyncio.wait_for(done, 5)
    finally:
        closed = loop.create_future()
        conn.add_on_close_callback(lambda *_: closed.set_result(None))
        conn.close()
        await asyncio.wait_for(closed, 5)


def test_pika_asyncio_adapter_consumes_nacks_and_acks(
    amqpd_session_broker: BrokerThread,
) -> None:
    result = asyncio.run(_consume_with_asyncio_adapter(amqpd_session_broker.url))

    assert result == [
        (b"1", 1, False), (b"2", 2, False), (b"3", 3, False), (b"2", 4, True),
        (b"ready", 0, False),
    ]  # fmt: skip


def test_ack_of_tag_zero_without_multiple_closes_channel_406(
    amqpd_session_broker: BrokerThread,
) -> None:
    with pika_channel(amqpd_session_broker) as ch:
        queue = exclusive_queue(ch)
        publish_numbers(ch, queue, 1, 1)
        get_tags(ch, queue, 1)
        error = _expect_channel_error(ch, lambda: ch.basic_ack(0))

    assert error.reply_code == 406
    assert error.reply_text == "PRECONDITION_FAILED - unknown delivery tag 0"


def test_messages_of_a_cancelled_consumer_can_still_be_acked(
    amqpd_session_broker: BrokerThread,
) -> None:
    with pika_channel(amqpd_session_broker) as ch:
        queue = exclusive_queue(ch)
        seen: list[int] = []
        tag = ch.basic_consume(queue, lambda _c, m, _p, _b: seen.append(m.delivery_tag))
        publish_numbers(ch, queue, 1, 2)
        ready_count(ch, queue)
        ch.connection.process_data_events(0)
        ch.basic_cancel(tag)
        ch.basic_ack(seen[0])
        other = ch.connection.channel()
        ch.close()

        assert seen == [1, 2]
        assert drain(other, queue) == [(b"2", True)]


def test_unacked_of_closed_channel_go_to_the_other_consumer_redelivered(
    amqpd_session_broker: BrokerThread,
) -> None:
    with pika_channel(amqpd_session_broker) as ch:
        queue = exclusive_queue(ch)
        first = ch.connection.channel()
        first.basic_qos(prefetch_count=2)
        first.basic_consume(queue, lambda *_: None)
        seen: list[Got] = []
        ch.basic_qos(prefetch_count=2)
        ch.basic_consume(queue, lambda _c, m, _p, b: seen.append((b, m.redelivered)))
        publish_numbers(ch, queue, 1, 4)  # 1 and 3 to first, 2 and 4 to ch
        ready_count(ch, queue)
        ch.connection.process_data_events(0)
        assert seen == [(b"2", False), (b"4", False)]

        ch.basic_ack(0, multiple=True)
        first.close()
        ready_count(ch, queue)
        ch.connection.process_data_events(0)

    assert seen[2:] == [(b"1", True), (b"3", True)]


def test_delivery_tags_restart_on_a_reopened_channel(
    amqpd_session_broker: BrokerThread,
) -> None:
    with raw_channel(amqpd_session_broker) as client:
        client.send_method(1, spec.Queue.Declare(queue="", exclusive=True))
        queue = client.expect(spec.Queue.DeclareOk, 1).queue
        tags = []
        for _ in range(2):
            client.publish(1, "", queue, b"x")
            client.send_method(1, spec.Basic.Get(queue=queue, no_ack=True))
            tags.append(client.expect(spec.Basic.GetOk, 1).delivery_tag)
            client.expect(ContentHeader, 1)
            client.expect(ContentBody, 1)
        client.send_method(1, spec.Channel.Close(200, "OK", 0, 0))
        client.expect(spec.Channel.CloseOk, 1)
        client.open_channel(1)
        client.publish(1, "", queue, b"y")
        client.send_method(1, spec.Basic.Get(queue=queue, no_ack=True))
        tags.append(client.expect(spec.Basic.GetOk, 1).delivery_tag)

    assert tags == [1, 2, 1]
