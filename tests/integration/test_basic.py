"""basic.consume, basic.cancel, basic.get, basic.qos and no-wait methods, as
real clients see them.

Ordering in these tests rests on one fact: the broker handles the frames of
a connection in order and dispatches inline, so once the reply to a
synchronous method sent after some publishes is in, every delivery those
publishes caused has already been written before it.
"""

from __future__ import annotations

import re
import socket
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pika
import pytest
from amqp_wire import RawClient
from pamqp import commands as spec
from pamqp.body import ContentBody
from pamqp.header import ContentHeader
from pika.adapters.blocking_connection import BlockingChannel

from amqpd.testing import BrokerThread

Delivery = tuple[str, int, bool, bytes]  # consumer tag, delivery tag, redelivered
OnMessage = Callable[
    [BlockingChannel, pika.spec.Basic.Deliver, pika.BasicProperties, bytes], None
]


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
    with RawClient(broker.port) as client:
        client.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        client.handshake()
        client.open_channel(1)
        yield client


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def exclusive_queue(ch: BlockingChannel) -> str:
    return str(ch.queue_declare("", exclusive=True).method.queue)


def recorder(log: list[Delivery]) -> OnMessage:
    def on_message(
        _ch: BlockingChannel,
        method: pika.spec.Basic.Deliver,
        _props: pika.BasicProperties,
        body: bytes,
    ) -> None:
        log.append((method.consumer_tag, method.delivery_tag, method.redelivered, body))

    return on_message


def settle(ch: BlockingChannel, queue: str) -> tuple[int, int]:
    """A synchronous round trip; then run the callbacks of what came before.

    Returns the queue's (ready message count, consumer count).
    """
    ok = ch.queue_declare(queue, passive=True).method
    ch.connection.process_data_events(0)
    return ok.message_count, ok.consumer_count


def publish_numbers(ch: BlockingChannel, queue: str, count: int) -> None:
    for i in range(1, count + 1):
        ch.basic_publish("", queue, str(i).encode())


# consume


def test_consume_without_tag_gets_server_generated_ctag(
    amqpd_session_broker: BrokerThread,
) -> None:
    with raw_channel(amqpd_session_broker) as client:
        client.send_method(1, spec.Queue.Declare(queue="", exclusive=True))
        queue = client.expect(spec.Queue.DeclareOk, 1).queue
        tags = []
        for _ in range(2):
            client.send_method(1, spec.Basic.Consume(queue=queue))
            tags.append(client.expect(spec.Basic.ConsumeOk, 1).consumer_tag)

    for tag in tags:
        assert re.fullmatch(r"amq\.ctag-[A-Za-z0-9_-]{22}", tag), tag
    assert tags[0] != tags[1]


def test_consumer_tag_given_by_client_is_used(
    amqpd_session_broker: BrokerThread,
) -> None:
    with pika_channel(amqpd_session_broker) as ch:
        queue = exclusive_queue(ch)
        log: list[Delivery] = []
        tag = ch.basic_consume(queue, recorder(log), consumer_tag="my-tag")
        ch.basic_publish("", queue, b"x")
        settle(ch, queue)

    assert tag == "my-tag"
    assert log == [("my-tag", 1, False, b"x")]


def test_no_ack_consumer_takes_messages_for_good(
    amqpd_session_broker: BrokerThread,
) -> None:
    queue = unique("noack")
    with pika_channel(amqpd_session_broker) as ch:
        ch.queue_declare(queue)
        log: list[Delivery] = []
        ch.basic_consume(queue, recorder(log), auto_ack=True)
        publish_numbers(ch, queue, 3)
        assert settle(ch, queue) == (0, 1)
        ch.close()  # nothing was unacked, so nothing comes back

    with pika_channel(amqpd_session_broker) as ch:
        assert settle(ch, queue) == (0, 0)
        ch.queue_delete(queue)
    assert [(d[1], d[3]) for d in log] == [(1, b"1"), (2, b"2"), (3, b"3")]


def test_second_consumer_on_exclusively_consumed_queue_is_refused(
    amqpd_session_broker: BrokerThread,
) -> None:
    with pika_channel(amqpd_session_broker) as ch:
        queue = exclusive_queue(ch)
        log: list[Delivery] = []
        ch.basic_consume(queue, recorder(log), exclusive=True, consumer_tag="only")
        other = ch.connection.channel()
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as info:
            other.basic_consume(queue, recorder(log))

        assert info.value.reply_code == 403
        assert info.value.reply_text == (
            f"ACCESS_REFUSED - queue '{queue}' in vhost '/' in exclusive use"
        )
        # the exclusive consumer still gets the messages
        ch.basic_publish("", queue, b"after")
        assert settle(ch, queue) == (0, 1)
    assert log == [("only", 1, False, b"after")]


def test_exclusive_consumer_is_refused_when_queue_has_consumers(
    amqpd_session_broker: BrokerThread,
) -> None:
    with pika_channel(amqpd_session_broker) as ch:
        queue = exclusive_queue(ch)
        ch.basic_consume(queue, recorder([]))
        other = ch.connection.channel()
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as info:
            other.basic_consume(queue, recorder([]), exclusive=True)
        assert settle(ch, queue) == (0, 1)

    assert info.value.reply_code == 403
    assert "in exclusive use" in info.value.reply_text


def test_cancel_answers_cancel_ok_and_stops_deliveries(
    amqpd_session_broker: BrokerThread,
) -> None:
    with raw_channel(amqpd_session_broker) as client:
        client.send_method(1, spec.Queue.Declare(queue="", exclusive=True))
        queue = client.expect(spec.Queue.DeclareOk, 1).queue
        client.send_method(1, spec.Basic.Consume(queue=queue, consumer_tag="c1"))
        client.expect(spec.Basic.ConsumeOk, 1)
        client.send_method(1, spec.Basic.Cancel(consumer_tag="c1"))
        cancel_ok = client.expect(spec.Basic.CancelOk, 1)
        client.publish(1, "", queue, b"later")
        client.send_method(1, spec.Queue.Declare(queue=queue, passive=True))
        declare_ok = client.expect(spec.Queue.DeclareOk, 1)

    assert cancel_ok.consumer_tag == "c1"
    assert (declare_ok.message_count, declare_ok.consumer_count) == (1, 0)


def test_cancel_with_pika_leaves_later_messages_in_queue(
    amqpd_session_broker: BrokerThread,
) -> None:
    with pika_channel(amqpd_session_broker) as ch:
        queue = exclusive_queue(ch)
        log: list[Delivery] = []
        tag = ch.basic_consume(queue, recorder(log), auto_ack=True)
        ch.basic_publish("", queue, b"before")
        settle(ch, queue)
        ch.basic_cancel(tag)
        ch.basic_publish("", queue, b"after")
        assert settle(ch, queue) == (1, 0)
        method, _props, body = ch.basic_get(queue, auto_ack=True)

    assert [d[3] for d in log] == [b"before"]
    assert body == b"after" and method.message_count == 0


def test_reusing_consumer_tag_on_a_channel_closes_connection_530(
    amqpd_broker: BrokerThread,
) -> None:
    with raw_channel(amqpd_broker) as client:
        client.send_method(1, spec.Queue.Declare(queue="", exclusive=True))
        queue = client.expect(spec.Queue.DeclareOk, 1).queue
        client.send_method(1, spec.Basic.Consume(queue=queue, consumer_tag="dup"))
        client.expect(spec.Basic.ConsumeOk, 1)
        client.send_method(1, spec.Basic.Consume(queue=queue, consumer_tag="dup"))
        close = client.expect_close()

    assert close.reply_code == 530
    assert close.reply_text == "NOT_ALLOWED - attempt to reuse consumer tag 'dup'"
    assert (close.class_id, close.method_id) == (60, 20)


def test_same_consumer_tag_on_two_channels_is_allowed(
    amqpd_session_broker: BrokerThread,
) -> None:
    with raw_channel(amqpd_session_broker) as client:
        client.open_channel(2)
        client.send_method(1, spec.Queue.Declare(queue="", exclusive=True))
        queue = client.expect(spec.Queue.DeclareOk, 1).queue
        for number in (1, 2):
            client.send_method(
                number, spec.Basic.Consume(queue=queue, consumer_tag="same")
            )
            assert client.expect(spec.Basic.ConsumeOk, number).consumer_tag == "same"


# get


def test_get_returns_messages_in_order_with_remaining_count(
    amqpd_session_broker: BrokerThread,
) -> None:
    with pika_channel(amqpd_session_broker) as ch:
        queue = exclusive_queue(ch)
        publish_numbers(ch, queue, 3)
        got = []
        for _ in range(3):
            method, _props, body = ch.basic_get(queue, auto_ack=True)
            got.append((body, method.message_count, method.redelivered))

    assert got == [(b"1", 2, False), (b"2", 1, False), (b"3", 0, False)]


def test_get_on_empty_queue_answers_get_empty(
    amqpd_session_broker: BrokerThread,
) -> None:
    with raw_channel(amqpd_session_broker) as client:
        client.send_method(1, spec.Queue.Declare(queue="", exclusive=True))
        queue = client.expect(spec.Queue.DeclareOk, 1).queue
        client.send_method(1, spec.Basic.Get(queue=queue))
        client.expect(spec.Basic.GetEmpty, 1)
        client.publish(1, "", queue, b"one")
        client.send_method(1, spec.Basic.Get(queue=queue, no_ack=True))
        get_ok = client.expect(spec.Basic.GetOk, 1)
        header = client.expect(ContentHeader, 1)
        body = client.expect(ContentBody, 1)
        client.send_method(1, spec.Basic.Get(queue=queue))
        client.expect(spec.Basic.GetEmpty, 1)

    assert (get_ok.delivery_tag, get_ok.redelivered) == (1, False)
    assert (get_ok.exchange, get_ok.routing_key) == ("", queue)
    assert get_ok.message_count == 0
    assert header.body_size == 3 and body.value == b"one"


def test_get_with_pika_returns_none_on_empty_queue(
    amqpd_session_broker: BrokerThread,
) -> None:
    with pika_channel(amqpd_session_broker) as ch:
        queue = exclusive_queue(ch)
        assert ch.basic_get(queue) == (None, None, None)


# qos


def test_per_consumer_prefetch_limits_each_consumer(
    amqpd_session_broker: BrokerThread,
) -> None:
    with pika_channel(amqpd_session_broker) as ch:
        queue = exclusive_queue(ch)
        ch.basic_qos(prefetch_count=2)
        log: list[Delivery] = []
        ch.basic_consume(queue, recorder(log), consumer_tag="a")
        ch.basic_consume(queue, recorder(log), consumer_tag="b")
        publish_numbers(ch, queue, 10)
        assert settle(ch, queue) == (6, 2)
        assert [(d[0], d[3]) for d in log] == [
            ("a", b"1"), ("b", b"2"), ("a", b"3"), ("b", b"4"),
        ]  # fmt: skip

        ch.basic_ack(1)  # a has room for one more
        assert settle(ch, queue) == (5, 2)
        assert (log[-1][0], log[-1][3]) == ("a", b"5")


def test_global_prefetch_limits_all_consumers_of_the_channel(
    amqpd_session_broker: BrokerThread,
) -> None:
    with pika_channel(amqpd_session_broker) as ch:
        queue = exclusive_queue(ch)
        ch.basic_qos(prefetch_count=3, global_qos=True)
        log: list[Delivery] = []
        ch.basic_consume(queue, recorder(log), consumer_tag="a")
        ch.basic_consume(queue, recorder(log), consumer_tag="b")
        publish_numbers(ch, queue, 10)
        assert settle(ch, queue) == (7, 2)
        assert [(d[0], d[3]) for d in log] == [("a", b"1"), ("b", b"2"), ("a", b"3")]

        ch.basic_ack(2)
        assert settle(ch, queue) == (6, 2)
        assert len(log) == 4 and log[-1][3] == b"4"


def test_global_and_per_consumer_prefetch_combine(
    amqpd_session_broker: BrokerThread,
) -> None:
    with pika_channel(amqpd_session_broker) as ch:
        queue = exclusive_queue(ch)
        ch.basic_qos(prefetch_count=1)
        ch.basic_qos(prefetch_count=3, global_qos=True)
        log: list[Delivery] = []
        for tag in ("a", "b", "c", "d"):
            ch.basic_consume(queue, recorder(log), consumer_tag=tag)
        publish_numbers(ch, queue, 10)
        assert settle(ch, queue) == (7, 4)

    assert [(d[0], d[3]) for d in log] == [("a", b"1"), ("b", b"2"), ("c", b"3")]


def test_prefetch_on_other_channel_does_not_limit(
    amqpd_session_broker: BrokerThread,
) -> None:
    with pika_channel(amqpd_session_broker) as ch:
        queue = exclusive_queue(ch)
        ch.connection.channel().basic_qos(prefetch_count=1, global_qos=True)
        log: list[Delivery] = []
        ch.basic_consume(queue, recorder(log))
        publish_numbers(ch, queue, 5)
        assert settle(ch, queue) == (0, 1)
    assert len(log) == 5


def test_consumers_get_messages_round_robin(
    amqpd_session_broker: BrokerThread,
) -> None:
    with pika_channel(amqpd_session_broker) as ch:
        queue = exclusive_queue(ch)
        log: list[Delivery] = []
        for tag in ("c1", "c2", "c3"):
            ch.basic_consume(queue, recorder(log), consumer_tag=tag)
        publish_numbers(ch, queue, 9)
        assert settle(ch, queue) == (0, 3)

    assert [(d[0], d[3]) for d in log] == [
        ("c1", b"1"), ("c2", b"2"), ("c3", b"3"),
        ("c1", b"4"), ("c2", b"5"), ("c3", b"6"),
        ("c1", b"7"), ("c2", b"8"), ("c3", b"9"),
    ]  # fmt: skip


def test_prefetch_one_gives_fair_dispatch_to_the_free_consumer(
    amqpd_session_broker: BrokerThread,
) -> None:
    with pika_channel(amqpd_session_broker) as ch:
        queue = exclusive_queue(ch)
        ch.basic_qos(prefetch_count=1)
        log: list[Delivery] = []
        ch.basic_consume(queue, recorder(log), consumer_tag="slow")
        ch.basic_consume(queue, recorder(log), consumer_tag="fast")
        publish_numbers(ch, queue, 6)
        settle(ch, queue)
        # "slow" never acks; "fast" acks each message as it comes
        for _ in range(10):
            fast = [d for d in log if d[0] == "fast"]
            ch.basic_ack(fast[-1][1])
            if settle(ch, queue)[0] == 0:
                break

        assert [(d[0], d[3]) for d in log] == [
            ("slow", b"1"), ("fast", b"2"), ("fast", b"3"), ("fast", b"4"),
            ("fast", b"5"), ("fast", b"6"),
        ]  # fmt: skip


def test_qos_with_prefetch_size_is_refused_540(amqpd_broker: BrokerThread) -> None:
    with pika_channel(amqpd_broker) as ch:
        with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as info:
            ch.basic_qos(prefetch_size=1000)

    assert info.value.reply_code == 540
    assert info.value.reply_text.startswith("NOT_IMPLEMENTED - prefetch_size")


# no-wait: the broker sends no reply, and the action still happens


def _sync_declare_queue(client: RawClient, queue: str) -> spec.Queue.DeclareOk:
    """The next frame must be the reply to this passive declare."""
    client.send_method(1, spec.Queue.Declare(queue=queue, passive=True))
    ok: spec.Queue.DeclareOk = client.expect(spec.Queue.DeclareOk, 1)
    return ok


def _sync_declare_exchange(client: RawClient, exchange: str) -> None:
    client.send_method(1, spec.Exchange.Declare(exchange=exchange, passive=True))
    client.expect(spec.Exchange.DeclareOk, 1)


def test_nowait_queue_methods_send_no_reply_and_take_effect(
    amqpd_session_broker: BrokerThread,
) -> None:
    queue = unique("nowait-q")
    with raw_channel(amqpd_session_broker) as client:
        client.send_method(1, spec.Queue.Declare(queue=queue, nowait=True))
        ok = _sync_declare_queue(client, queue)
        assert (ok.queue, ok.message_count, ok.consumer_count) == (queue, 0, 0)

        client.send_method(1, spec.Queue.Bind(
            queue=queue, exchange="amq.direct", routing_key=queue, nowait=True
        ))  # fmt: skip
        client.publish(1, "amq.direct", queue, b"routed")
        assert _sync_declare_queue(client, queue).message_count == 1

        client.send_method(1, spec.Queue.Purge(queue=queue, nowait=True))
        assert _sync_declare_queue(client, queue).message_count == 0

        client.send_method(1, spec.Queue.Delete(queue=queue, nowait=True))
        client.send_method(1, spec.Queue.Declare(queue=queue, passive=True))
        close = client.expect(spec.Channel.Close, 1)

    assert close.reply_code == 404
    assert close.reply_text == f"NOT_FOUND - no queue '{queue}' in vhost '/'"


def test_nowait_consume_and_cancel_send_no_reply_and_take_effect(
    amqpd_session_broker: BrokerThread,
) -> None:
    with raw_channel(amqpd_session_broker) as client:
        client.send_method(1, spec.Queue.Declare(queue="", exclusive=True))
        queue = client.expect(spec.Queue.DeclareOk, 1).queue
        client.send_method(1, spec.Basic.Consume(
            queue=queue, consumer_tag="nw", no_ack=True, nowait=True
        ))  # fmt: skip
        assert _sync_declare_queue(client, queue).consumer_count == 1

        client.publish(1, "", queue, b"hi")
        deliver = client.expect(spec.Basic.Deliver, 1)
        assert (deliver.consumer_tag, deliver.delivery_tag) == ("nw", 1)
        assert client.expect(ContentHeader, 1).body_size == 2
        assert client.expect(ContentBody, 1).value == b"hi"

        client.send_method(1, spec.Basic.Cancel(consumer_tag="nw", nowait=True))
        ok = _sync_declare_queue(client, queue)
        assert (ok.message_count, ok.consumer_count) == (0, 0)
        client.publish(1, "", queue, b"kept")
        assert _sync_declare_queue(client, queue).message_count == 1


def test_nowait_exchange_methods_send_no_reply_and_take_effect(
    amqpd_session_broker: BrokerThread,
) -> None:
    source, dest = unique("nowait-src"), unique("nowait-dst")
    with raw_channel(amqpd_session_broker) as client:
        for name in (source, dest):
            client.send_method(1, spec.Exchange.Declare(
                exchange=name, exchange_type="fanout", nowait=True
            ))  # fmt: skip
            _sync_declare_exchange(client, name)
        client.send_method(1, spec.Queue.Declare(queue="", exclusive=True))
        queue = client.expect(spec.Queue.DeclareOk, 1).queue
        client.send_method(1, spec.Queue.Bind(queue=queue, exchange=dest))
        client.expect(spec.Queue.BindOk, 1)

        client.send_method(1, spec.Exchange.Bind(
            destination=dest, source=source, nowait=True
        ))  # fmt: skip
        client.publish(1, source, "", b"via-binding")
        assert _sync_declare_queue(client, queue).message_count == 1

        client.send_method(1, spec.Exchange.Unbind(
            destination=dest, source=source, nowait=True
        ))  # fmt: skip
        client.publish(1, source, "", b"dropped")
        assert _sync_declare_queue(client, queue).message_count == 1

        for name in (source, dest):
            client.send_method(1, spec.Exchange.Delete(exchange=name, nowait=True))
        client.send_method(1, spec.Exchange.Declare(exchange=dest, passive=True))
        close = client.expect(spec.Channel.Close, 1)
        client.send_method(1, spec.Channel.CloseOk())
        client.open_channel(1)
        client.send_method(1, spec.Exchange.Declare(exchange=source, passive=True))
        assert client.expect(spec.Channel.Close, 1).reply_code == 404

    assert close.reply_code == 404
    assert close.reply_text == f"NOT_FOUND - no exchange '{dest}' in vhost '/'"


def test_queue_unbind_always_replies(amqpd_session_broker: BrokerThread) -> None:
    with raw_channel(amqpd_session_broker) as client:
        client.send_method(1, spec.Queue.Declare(queue="", exclusive=True))
        queue = client.expect(spec.Queue.DeclareOk, 1).queue
        client.send_method(1, spec.Queue.Bind(
            queue=queue, exchange="amq.direct", routing_key="k"
        ))  # fmt: skip
        client.expect(spec.Queue.BindOk, 1)
        client.send_method(1, spec.Queue.Unbind(
            queue=queue, exchange="amq.direct", routing_key="k"
        ))  # fmt: skip
        client.expect(spec.Queue.UnbindOk, 1)
        client.publish(1, "amq.direct", "k", b"unrouted")
        assert _sync_declare_queue(client, queue).message_count == 0


def test_cancel_of_unknown_consumer_tag_still_answers_cancel_ok(
    amqpd_session_broker: BrokerThread,
) -> None:
    with raw_channel(amqpd_session_broker) as client:
        client.send_method(1, spec.Basic.Cancel(consumer_tag="never-was"))
        cancel_ok = client.expect(spec.Basic.CancelOk, 1)
        client.send_method(1, spec.Basic.Qos(prefetch_count=1))
        client.expect(spec.Basic.QosOk, 1)  # the channel is still open

    assert cancel_ok.consumer_tag == "never-was"


def test_deleting_a_consumed_queue_sends_basic_cancel_to_the_consumer(
    amqpd_session_broker: BrokerThread,
) -> None:
    queue = unique("cancel-notify")
    with raw_channel(amqpd_session_broker) as client:
        client.send_method(1, spec.Queue.Declare(queue=queue))
        client.expect(spec.Queue.DeclareOk, 1)
        client.send_method(1, spec.Basic.Consume(queue=queue, consumer_tag="gone"))
        client.expect(spec.Basic.ConsumeOk, 1)
        with pika_channel(amqpd_session_broker) as ch:
            ch.queue_delete(queue)
        cancel = client.expect(spec.Basic.Cancel, 1)

    assert cancel.consumer_tag == "gone"


def test_changing_consumer_prefetch_affects_only_later_consumers(
    amqpd_session_broker: BrokerThread,
) -> None:
    with pika_channel(amqpd_session_broker) as ch:
        queue = exclusive_queue(ch)
        ch.basic_qos(prefetch_count=1)
        log: list[Delivery] = []
        ch.basic_consume(queue, recorder(log), consumer_tag="old")
        ch.basic_qos(prefetch_count=3)
        publish_numbers(ch, queue, 6)
        assert settle(ch, queue) == (5, 1)
        ch.basic_consume(queue, recorder(log), consumer_tag="new")
        assert settle(ch, queue) == (2, 2)

    assert [(d[0], d[3]) for d in log] == [
        ("old", b"1"), ("new", b"2"), ("new", b"3"), ("new", b"4"),
    ]  # fmt: skip


def test_raising_global_prefetch_releases_more_deliveries(
    amqpd_session_broker: BrokerThread,
) -> None:
    with pika_channel(amqpd_session_broker) as ch:
        queue = exclusive_queue(ch)
        ch.basic_qos(prefetch_count=1, global_qos=True)
        log: list[Delivery] = []
        ch.basic_consume(queue, recorder(log))
        publish_numbers(ch, queue, 5)
        assert settle(ch, queue) == (4, 1)
        ch.basic_qos(prefetch_count=3, global_qos=True)
        assert settle(ch, queue) == (2, 1)
        ch.basic_qos(prefetch_count=0, global_qos=True)
        assert settle(ch, queue) == (0, 1)

    assert [d[3] for d in log] == [b"1", b"2", b"3", b"4", b"5"]


def test_publish_with_immediate_closes_connection_540(
    amqpd_broker: BrokerThread,
) -> None:
    with raw_channel(amqpd_broker) as client:
        client.publish(1, "", "anything", b"now", immediate=True)
        close = client.expect_close()

    assert close.reply_code == 540
    assert close.reply_text == "NOT_IMPLEMENTED - immediate=true"
    assert (close.class_id, close.method_id) == (60, 40)


def test_messages_taken_with_get_do_not_count_against_global_prefetch(
    amqpd_session_broker: BrokerThread,
) -> None:
    with pika_channel(amqpd_session_broker) as ch:
        queue = exclusive_queue(ch)
        publish_numbers(ch, queue, 3)
        ch.basic_qos(prefetch_count=1, global_qos=True)
        got = ch.basic_get(queue)
        log: list[Delivery] = []
        ch.basic_consume(queue, recorder(log))
        assert settle(ch, queue) == (1, 1)

    assert got[2] == b"1"
    assert [(d[1], d[3]) for d in log] == [(2, b"2")]


@pytest.mark.parametrize("global_qos", [False, True], ids=["consumer", "channel"])
def test_ack_in_open_transaction_does_not_free_prefetch_until_commit(
    amqpd_session_broker: BrokerThread, global_qos: bool
) -> None:
    with pika_channel(amqpd_session_broker) as publisher:
        queue = exclusive_queue(publisher)
        publish_numbers(publisher, queue, 3)
        ch = publisher.connection.channel()
        ch.tx_select()
        ch.basic_qos(prefetch_count=1, global_qos=global_qos)
        log: list[Delivery] = []
        ch.basic_consume(queue, recorder(log))
        assert settle(ch, queue) == (2, 1)
        ch.basic_ack(log[0][1])
        publisher.basic_publish("", queue, b"4")  # a chance to dispatch
        assert settle(ch, queue) == (3, 1)
        ch.tx_commit()
        assert settle(ch, queue) == (2, 1)

    assert [(d[1], d[3]) for d in log] == [(1, b"1"), (2, b"2")]


def test_nowait_methods_still_report_errors_by_closing_the_channel(
    amqpd_session_broker: BrokerThread,
) -> None:
    with raw_channel(amqpd_session_broker) as client:
        client.send_method(1, spec.Queue.Declare(queue="", exclusive=True))
        queue = client.expect(spec.Queue.DeclareOk, 1).queue
        client.send_method(1, spec.Queue.Bind(
            queue=queue, exchange="no-such-exchange", nowait=True
        ))  # fmt: skip
        close = client.expect(spec.Channel.Close, 1)

    assert close.reply_code == 404
    assert close.reply_text == "NOT_FOUND - no exchange 'no-such-exchange' in vhost '/'"
    assert (close.class_id, close.method_id) == (50, 20)
