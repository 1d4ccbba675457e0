"""Publisher confirms and transactions.

Confirms: every publish on a confirm channel is acked once the broker has
taken it; acks may cover many publishes (multiple=true) and a basic.return
for an unroutable mandatory message comes before the ack that covers it.
Transactions: publishes and acks wait for tx.commit; tx.rollback drops the
publishes and undoes the acks, as in RabbitMQ.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pika
import pytest
from amqp_wire import RawClient
from pamqp import commands as spec
from pamqp import frame
from pamqp.body import ContentBody
from pamqp.header import ContentHeader
from pika.adapters.blocking_connection import BlockingChannel

from amqpd.testing import BrokerThread


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
def raw_confirm_channel(broker: BrokerThread) -> Iterator[tuple[RawClient, str]]:
    """A raw connection with channel 1 in confirm mode and an exclusive queue."""
    with raw_channel(broker) as client:
        client.send_method(1, spec.Queue.Declare(queue="", exclusive=True))
        queue = client.expect(spec.Queue.DeclareOk, 1).queue
        client.send_method(1, spec.Confirm.Select())
        client.expect(spec.Confirm.SelectOk, 1)
        yield client, queue


def read_confirms(client: RawClient, last_tag: int) -> list[Any]:
    """Every frame up to the ack or nack that covers ``last_tag``."""
    frames: list[Any] = []
    for _ in range(10_000):
        _channel, received = client.recv_frame()
        frames.append(received)
        if (
            isinstance(received, spec.Basic.Ack | spec.Basic.Nack)
            and received.delivery_tag >= last_tag
        ):
            return frames
    raise AssertionError(f"no confirm for tag {last_tag} in {len(frames)} frames")


def exclusive_queue(ch: BlockingChannel) -> str:
    return str(ch.queue_declare("", exclusive=True).method.queue)


def ready_count(ch: BlockingChannel, queue: str) -> int:
    return int(ch.queue_declare(queue, passive=True).method.message_count)


def expect_channel_close(ch: BlockingChannel, action: Any) -> Any:
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as info:
        action()
    return info.value


# confirms


def test_pika_confirm_channel_publishes_and_reports_unroutable(
    amqpd_session_broker: BrokerThread,
) -> None:
    with pika_channel(amqpd_session_broker) as ch:
        queue = exclusive_queue(ch)
        ch.confirm_delivery()
        ch.basic_publish("", queue, b"one")
        ch.basic_publish("", "no-such-queue-anywhere", b"lost")  # acked: not mandatory
        with pytest.raises(pika.exceptions.UnroutableError) as info:
            ch.basic_publish("", "no-such-queue-anywhere", b"back", mandatory=True)
        assert ready_count(ch, queue) == 1

    (returned,) = info.value.messages
    assert returned.method.reply_code == 312
    assert returned.method.reply_text == "NO_ROUTE"
    assert returned.body == b"back"


def test_many_quick_publishes_get_fewer_acks_with_multiple(
    amqpd_session_broker: BrokerThread,
) -> None:
    with raw_confirm_channel(amqpd_session_broker) as (client, queue):
        one = b"".join((
            frame.marshal(spec.Basic.Publish(exchange="", routing_key=queue), 1),
            frame.marshal(ContentHeader(0, 1, spec.Basic.Properties()), 1),
            frame.marshal(ContentBody(b"x"), 1),
        ))  # fmt: skip
        client.send(one * 100)
        frames = read_confirms(client, 100)
        client.send_method(1, spec.Queue.Declare(queue=queue, passive=True))
        declare_ok = client.expect(spec.Queue.DeclareOk, 1)

    assert all(isinstance(f, spec.Basic.Ack) for f in frames)
    tags = [f.delivery_tag for f in frames]
    assert tags[-1] == 100 and len(tags) < 100
    assert tags == sorted(set(tags))
    previous = 0
    for ack in frames:
        assert ack.multiple == (ack.delivery_tag - previous > 1)
        previous = ack.delivery_tag
    assert any(ack.multiple for ack in frames)
    assert declare_ok.message_count == 100


def test_return_of_unroutable_mandatory_message_comes_before_its_ack(
    amqpd_session_broker: BrokerThread,
) -> None:
    with raw_confirm_channel(amqpd_session_broker) as (client, queue):
        client.publish(1, "", "nowhere-at-all", b"first", mandatory=True)
        client.publish(1, "", queue, b"routed", mandatory=True)
        client.publish(1, "amq.direct", "nowhere", b"third", mandatory=True)
        frames = read_confirms(client, 3)

    kinds = [type(f) for f in frames]
    returns = [i for i, k in enumerate(kinds) if k is spec.Basic.Return]
    assert len(returns) == 2
    bodies = [frames[i + 2].value for i in returns]
    assert bodies == [b"first", b"third"]
    for i in returns:
        ret = frames[i]
        assert (ret.reply_code, ret.reply_text) == (312, "NO_ROUTE")
        assert isinstance(frames[i + 1], ContentHeader)
    first_ret = frames[returns[0]]
    assert (first_ret.exchange, first_ret.routing_key) == ("", "nowhere-at-all")
    # each return is written before any ack covering its publish
    acks = [(i, f) for i, f in enumerate(frames) if isinstance(f, spec.Basic.Ack)]
    for position, seq in zip(returns, (1, 3), strict=True):
        covering = [i for i, ack in acks if ack.delivery_tag >= seq]
        assert covering and position < covering[0]
    assert not any(isinstance(f, spec.Basic.Nack) for f in frames)


def test_single_publish_gets_single_ack_without_multiple(
    amqpd_session_broker: BrokerThread,
) -> None:
    with raw_confirm_channel(amqpd_session_broker) as (client, queue):
        acks = []
        for _ in range(3):
            client.publish(1, "", queue, b"one at a time")
            acks.append(client.expect(spec.Basic.Ack, 1))

    assert [(a.delivery_tag, a.multiple) for a in acks] == [
        (1, False), (2, False), (3, False),
    ]  # fmt: skip


def test_confirm_numbering_starts_at_select_and_nowait_sends_no_reply(
    amqpd_session_broker: BrokerThread,
) -> None:
    with raw_channel(amqpd_session_broker) as client:
        client.send_method(1, spec.Queue.Declare(queue="", exclusive=True))
        queue = client.expect(spec.Queue.DeclareOk, 1).queue
        client.publish(1, "", queue, b"before select")
        client.send_method(1, spec.Confirm.Select(nowait=True))
        client.publish(1, "", queue, b"after select")
        ack = client.expect(spec.Basic.Ack, 1)

    assert (ack.delivery_tag, ack.multiple) == (1, False)


def test_confirm_select_on_transactional_channel_closes_it_406(
    amqpd_session_broker: BrokerThread,
) -> None:
    with pika_channel(amqpd_session_broker) as ch:
        ch.tx_select()
        error = expect_channel_close(ch, ch.confirm_delivery)

    assert error.reply_code == 406
    assert error.reply_text == (
        "PRECONDITION_FAILED - cannot switch from tx to confirm mode"
    )


# transactions


def test_tx_select_on_confirm_channel_closes_it_406(
    amqpd_session_broker: BrokerThread,
) -> None:
    with pika_channel(amqpd_session_broker) as ch:
        ch.confirm_delivery()
        error = expect_channel_close(ch, ch.tx_select)

    assert error.reply_code == 406
    assert error.reply_text == (
        "PRECONDITION_FAILED - cannot switch from confirm to tx mode"
    )


@pytest.mark.parametrize("method", ["tx_commit", "tx_rollback"])
def test_commit_or_rollback_without_select_closes_channel_406(
    amqpd_session_broker: BrokerThread, method: str
) -> None:
    with pika_channel(amqpd_session_broker) as ch:
        error = expect_channel_close(ch, getattr(ch, method))

    assert error.reply_code == 406
    assert error.reply_text == "PRECONDITION_FAILED - channel is not transactional"


def test_published_messages_appear_only_after_commit(
    amqpd_session_broker: BrokerThread,
) -> None:
    with pika_channel(amqpd_session_broker) as ch:
        queue = exclusive_queue(ch)
        tx = ch.connection.channel()
        tx.tx_select()
        tx.tx_select()  # a second select is harmless
        for body in (b"1", b"2"):
            tx.basic_publish("", queue, body)
        assert ready_count(ch, queue) == 0

        tx.tx_commit()
        assert ready_count(ch, queue) == 2
        tx.basic_publish("", queue, b"3")  # the channel stays transactional
        assert ready_count(ch, queue) == 2
        tx.tx_commit()
        bodies = [ch.basic_get(queue, auto_ack=True)[2] for _ in range(3)]

    assert bodies == [b"1", b"2", b"3"]


def test_rollback_discards_published_messages(
    amqpd_session_broker: BrokerThread,
) -> None:
    with pika_channel(amqpd_session_broker) as ch:
        queue = exclusive_queue(ch)
        tx = ch.connection.channel()
        tx.tx_select()
        tx.basic_publish("", queue, b"dropped")
        tx.tx_rollback()
        tx.basic_publish("", queue, b"kept")
        tx.tx_commit()

        method, _props, body = ch.basic_get(queue, auto_ack=True)
    assert body == b"kept" and method.message_count == 0


def test_ack_in_transaction_applies_only_on_commit(
    amqpd_session_broker: BrokerThread,
) -> None:
    with pika_channel(amqpd_session_broker) as ch:
        queue = exclusive_queue(ch)
        for body in (b"1", b"2"):
            ch.basic_publish("", queue, body)
        tx = ch.connection.channel()
        tx.tx_select()
        tag1 = tx.basic_get(queue)[0].delivery_tag
        tag2 = tx.basic_get(queue)[0].delivery_tag
        tx.basic_ack(tag1)
        tx.tx_commit()
        tx.basic_ack(tag2)  # never committed
        tx.close()

        method, _props, body = ch.basic_get(queue, auto_ack=True)
        assert (body, method.redelivered, method.message_count) == (b"2", True, 0)


def test_rollback_undoes_acks_and_the_message_can_be_acked_again(
    amqpd_session_broker: BrokerThread,
) -> None:
    with pika_channel(amqpd_session_broker) as ch:
        queue = exclusive_queue(ch)
        for body in (b"1", b"2"):
            ch.basic_publish("", queue, body)
        tx = ch.connection.channel()
        tx.tx_select()
        tag1 = tx.basic_get(queue)[0].delivery_tag
        tag2 = tx.basic_get(queue)[0].delivery_tag
        tx.basic_ack(tag2, multiple=True)
        tx.tx_rollback()
        assert ready_count(ch, queue) == 0  # both still unacked on tx

        tx.basic_ack(tag1)  # no 406: the rollback gave the tag back
        tx.tx_commit()
        tx.close()

        method, _props, body = ch.basic_get(queue, auto_ack=True)
        assert (body, method.redelivered, method.message_count) == (b"2", True, 0)


def test_double_ack_within_one_transaction_closes_channel_406(
    amqpd_session_broker: BrokerThread,
) -> None:
    with pika_channel(amqpd_session_broker) as ch:
        queue = exclusive_queue(ch)
        ch.basic_publish("", queue, b"1")
        tx = ch.connection.channel()
        tx.tx_select()
        tag = tx.basic_get(queue)[0].delivery_tag
        tx.basic_ack(tag)
        tx.basic_ack(tag)
        error = expect_channel_close(tx, tx.tx_commit)

        assert error.reply_code == 406
        assert error.reply_text == f"PRECONDITION_FAILED - unknown delivery tag {tag}"
        # the uncommitted ack died with the channel: the message is back
        method, _props, body = ch.basic_get(queue, auto_ack=True)
        assert (body, method.redelivered) == (b"1", True)


def test_reject_with_requeue_in_transaction_applies_on_commit(
    amqpd_session_broker: BrokerThread,
) -> None:
    with pika_channel(amqpd_session_broker) as ch:
        queue = exclusive_queue(ch)
        ch.basic_publish("", queue, b"1")
        tx = ch.connection.channel()
        tx.tx_select()
        tag = tx.basic_get(queue)[0].delivery_tag
        tx.basic_reject(tag, requeue=True)
        assert ready_count(ch, queue) == 0
        tx.tx_commit()
        assert ready_count(ch, queue) == 1

        method, _props, body = ch.basic_get(queue, auto_ack=True)
        assert (body, method.redelivered) == (b"1", True)


def test_nack_without_requeue_in_transaction_drops_on_commit(
    amqpd_session_broker: BrokerThread,
) -> None:
    with pika_channel(amqpd_session_broker) as ch:
        queue = exclusive_queue(ch)
        ch.basic_publish("", queue, b"1")
        tx = ch.connection.channel()
        tx.tx_select()
        tag = tx.basic_get(queue)[0].delivery_tag
        tx.basic_nack(tag, requeue=False)
        tx.tx_commit()
        tx.close()

        assert ready_count(ch, queue) == 0


def test_mandatory_unroutable_in_transaction_is_returned_before_commit_ok(
    amqpd_session_broker: BrokerThread,
) -> None:
    with raw_channel(amqpd_session_broker) as client:
        client.send_method(1, spec.Tx.Select())
        client.expect(spec.Tx.SelectOk, 1)
        client.publish(1, "", "nowhere-at-all", b"back", mandatory=True)
        client.send_method(1, spec.Tx.Commit())
        frames = [client.recv_frame()[1] for _ in range(4)]

    assert [type(f) for f in frames] == [
        spec.Basic.Return, ContentHeader, ContentBody, spec.Tx.CommitOk,
    ]  # fmt: skip
    assert frames[0].reply_code == 312 and frames[2].value == b"back"


def confirm_outcomes(client: RawClient, count: int) -> dict[int, str]:
    """Read confirms until publishes 1..count each have one: "ack" or "nack".

    A multiple confirm covers every earlier tag not yet confirmed.
    """
    outcomes: dict[int, str] = {}
    for _ in range(1000):
        if len(outcomes) == count:
            return outcomes
        received = client.expect(spec.Basic.Ack | spec.Basic.Nack, 1)
        kind = "ack" if isinstance(received, spec.Basic.Ack) else "nack"
        tag = received.delivery_tag
        if not received.multiple:
            assert tag not in outcomes, f"tag {tag} confirmed twice"
            outcomes[tag] = kind
            continue
        for earlier in range(1, tag + 1):
            outcomes.setdefault(earlier, kind)
    raise AssertionError(f"confirms incomplete: {outcomes}")


def test_publishes_a_full_queue_refuses_are_nacked_the_rest_acked(
    amqpd_session_broker: BrokerThread,
) -> None:
    with raw_confirm_channel(amqpd_session_broker) as (client, _queue):
        client.send_method(1, spec.Queue.Declare(
            queue="", exclusive=True,
            arguments={"x-max-length": 2, "x-overflow": "reject-publish"},
        ))  # fmt: skip
        full = client.expect(spec.Queue.DeclareOk, 1).queue
        for i in range(5):
            client.publish(1, "", full, b"%d" % i)
        client.publish(1, "", "no-queue-by-this-name", b"unroutable")
        outcomes = confirm_outcomes(client, 6)
        client.send_method(1, spec.Queue.Declare(queue=full, passive=True))
        declare_ok = client.expect(spec.Queue.DeclareOk, 1)

    assert outcomes == {1: "ack", 2: "ack", 3: "nack", 4: "nack", 5: "nack", 6: "ack"}
    assert declare_ok.message_count == 2
