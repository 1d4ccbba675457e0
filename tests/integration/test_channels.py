"""Channels over real sockets: open and close, channel_max, unopened and
closing channels, and channel errors that leave other channels alone."""

from __future__ import annotations

import uuid
from typing import Any

import pika
import pika.exceptions
import pytest
from amqp_wire import RawClient, raw_frame
from pamqp import commands as spec

from amqpd.protocol.connection import ConnectionMachine
from amqpd.server.driver import ConnectionDriver
from amqpd.testing import BrokerThread


def params(broker: BrokerThread, **options: Any) -> pika.ConnectionParameters:
    return pika.ConnectionParameters("127.0.0.1", broker.port, **options)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def open_channels(broker: BrokerThread) -> list[int]:
    def collect() -> list[int]:
        assert broker.broker is not None
        (driver,) = broker.broker.node.connections
        assert isinstance(driver, ConnectionDriver)
        machine: ConnectionMachine = driver.conn
        return sorted(machine.channels)

    return broker.call(collect)


def close_method() -> spec.Channel.Close:
    return spec.Channel.Close(reply_code=200, reply_text="", class_id=0, method_id=0)


# open and close


def test_pika_opens_and_closes_channels(amqpd_broker: BrokerThread) -> None:
    conn = pika.BlockingConnection(params(amqpd_broker))
    channels = [conn.channel() for _ in range(5)]
    assert open_channels(amqpd_broker) == [1, 2, 3, 4, 5]
    channels[1].close()
    channels[3].close()
    assert channels[1].is_closed and channels[0].is_open
    assert open_channels(amqpd_broker) == [1, 3, 5]
    again = conn.channel()  # pika reuses the lowest free number
    assert again.channel_number == 2
    again.queue_declare("", exclusive=True)
    conn.close()


def test_raw_channel_close_gets_close_ok_and_the_number_is_free_again(
    amqpd_session_broker: BrokerThread,
) -> None:
    with RawClient(amqpd_session_broker.port) as client:
        client.handshake()
        client.open_channel(7)
        client.send_method(7, close_method())
        client.expect(spec.Channel.CloseOk, 7)
        client.open_channel(7)


def test_channel_at_channel_max_opens(amqpd_session_broker: BrokerThread) -> None:
    conn = pika.BlockingConnection(params(amqpd_session_broker, channel_max=5))
    channel = conn.channel(channel_number=5)
    channel.queue_declare("", exclusive=True)
    conn.close()


def test_channel_above_channel_max_is_530(amqpd_session_broker: BrokerThread) -> None:
    conn = pika.BlockingConnection(params(amqpd_session_broker, channel_max=5))
    with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as info:
        conn.channel(channel_number=7)
    assert (info.value.reply_code, info.value.reply_text) == (
        530, "NOT_ALLOWED - channel number 7 exceeds the negotiated channel_max 5",
    )  # fmt: skip


def test_channel_above_the_servers_channel_max_is_530(
    amqpd_session_broker: BrokerThread,
) -> None:
    with RawClient(amqpd_session_broker.port) as client:
        client.handshake()  # tune-ok channel_max 2047
        client.send_method(2048, spec.Channel.Open())
        close = client.expect_close()
    assert close.reply_code == 530
    assert close.reply_text == (
        "NOT_ALLOWED - channel number 2048 exceeds the negotiated channel_max 2047"
    )
    assert (close.class_id, close.method_id) == (20, 10)


def test_second_open_on_an_open_channel_is_504(
    amqpd_session_broker: BrokerThread,
) -> None:
    with RawClient(amqpd_session_broker.port) as client:
        client.handshake()
        client.open_channel(1)
        client.send_method(1, spec.Channel.Open())
        close = client.expect_close()
    assert (close.reply_code, close.reply_text) == (
        504, "CHANNEL_ERROR - second 'channel.open' seen",
    )  # fmt: skip
    assert (close.class_id, close.method_id) == (20, 10)


# unopened and closed channels


def test_method_on_an_unopened_channel_is_504(
    amqpd_session_broker: BrokerThread,
) -> None:
    with RawClient(amqpd_session_broker.port) as client:
        client.handshake()
        client.send_method(3, spec.Queue.Declare(queue="q"))
        close = client.expect_close()
    assert close.reply_code == 504
    assert close.reply_text == (
        "CHANNEL_ERROR - expected 'channel.open' on channel 3, got 'Queue.Declare'"
    )
    assert (close.class_id, close.method_id) == (50, 10)


def test_method_on_a_closed_channel_is_504(amqpd_session_broker: BrokerThread) -> None:
    with RawClient(amqpd_session_broker.port) as client:
        client.handshake()
        client.open_channel(1)
        client.send_method(1, close_method())
        client.expect(spec.Channel.CloseOk, 1)
        client.send_method(1, spec.Basic.Qos(prefetch_count=1))
        close = client.expect_close()
    assert (close.reply_code, close.reply_text) == (
        504, "CHANNEL_ERROR - expected 'channel.open' on channel 1, got 'Basic.Qos'",
    )  # fmt: skip


def test_close_ok_for_a_channel_already_gone_is_504(
    amqpd_session_broker: BrokerThread,
) -> None:
    with RawClient(amqpd_session_broker.port) as client:
        client.handshake()
        client.send_method(5, spec.Channel.CloseOk())
        close = client.expect_close()
    assert close.reply_code == 504
    assert (close.class_id, close.method_id) == (20, 41)


def test_content_frame_on_an_unopened_channel_is_505(
    amqpd_session_broker: BrokerThread,
) -> None:
    with RawClient(amqpd_session_broker.port) as client:
        client.handshake()
        client.send(raw_frame(3, 9, b"body"))
        close = client.expect_close()
    assert (close.reply_code, close.reply_text) == (
        505,
        "UNEXPECTED_FRAME - expected a method frame on unopened channel 9, "
        "got frame type 3",
    )


def test_frames_after_the_servers_channel_close_are_ignored_until_close_ok(
    amqpd_session_broker: BrokerThread,
) -> None:
    missing, ignored = unique("missing"), unique("ignored")
    with RawClient(amqpd_session_broker.port) as client:
        client.handshake()
        client.open_channel(1)
        client.open_channel(2)
        client.send_method(1, spec.Queue.Declare(queue=missing, passive=True))
        close = client.expect(spec.Channel.Close, 1)
        assert (close.reply_code, close.reply_text) == (
            404, f"NOT_FOUND - no queue '{missing}' in vhost '/'",
        )  # fmt: skip
        assert (close.class_id, close.method_id) == (50, 10)
        # all of these are dropped: no answers, no queue, no connection error
        client.send_method(1, spec.Queue.Declare(queue=ignored))
        client.publish(1, "", ignored, b"dropped")
        client.send_method(1, spec.Basic.Get(queue=ignored))
        client.send_method(2, spec.Queue.Declare(queue=ignored, passive=True))
        close = client.expect(spec.Channel.Close, 2)
        assert close.reply_code == 404  # the queue was never declared
        client.send_method(1, spec.Channel.CloseOk())
        client.send_method(2, spec.Channel.CloseOk())
        client.open_channel(1)
        client.open_channel(2)


# channel errors stay on their channel


def test_pika_channel_error_closes_only_that_channel(
    amqpd_session_broker: BrokerThread,
) -> None:
    queue = unique("kept")
    conn = pika.BlockingConnection(params(amqpd_session_broker))
    failing, working = conn.channel(), conn.channel()
    working.queue_declare(queue, auto_delete=True)
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as info:
        failing.queue_declare("no-such-queue-here", passive=True)
    assert (info.value.reply_code, info.value.reply_text) == (
        404, "NOT_FOUND - no queue 'no-such-queue-here' in vhost '/'",
    )  # fmt: skip
    assert failing.is_closed and working.is_open and conn.is_open
    working.basic_publish("", queue, b"after")
    _method, _props, body = working.basic_get(queue, auto_ack=True)
    assert body == b"after"
    conn.close()


def test_pika_answers_the_servers_channel_close_and_the_broker_forgets_it(
    amqpd_broker: BrokerThread,
) -> None:
    conn = pika.BlockingConnection(params(amqpd_broker))
    failing, working = conn.channel(), conn.channel()
    with pytest.raises(pika.exceptions.ChannelClosedByBroker):
        failing.basic_consume("no-such-queue", lambda *args: None)
    working.queue_declare("", exclusive=True)  # a round trip after pika's close-ok
    assert open_channels(amqpd_broker) == [working.channel_number]
    conn.close()


def test_channel_error_does_not_disturb_a_consumer_on_another_channel(
    amqpd_session_broker: BrokerThread,
) -> None:
    queue = unique("consumed")
    conn = pika.BlockingConnection(params(amqpd_session_broker))
    consuming, failing = conn.channel(), conn.channel()
    consuming.queue_declare(queue, auto_delete=True)
    bodies: list[bytes] = []
    consuming.basic_consume(
        queue, lambda ch, m, p, body: bodies.append(body), auto_ack=True
    )
    consuming.basic_publish("", queue, b"before")
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as info:
        failing.exchange_declare("amq.nope", exchange_type="direct")
    assert info.value.reply_code == 403
    consuming.basic_publish("", queue, b"after")
    for _ in range(50):
        if len(bodies) == 2:
            break
        conn.process_data_events(time_limit=0.05)
    assert bodies == [b"before", b"after"]
    conn.close()


def test_closing_a_channel_requeues_its_unacked_messages(
    amqpd_session_broker: BrokerThread,
) -> None:
    queue = unique("requeued")
    conn = pika.BlockingConnection(params(amqpd_session_broker))
    first = conn.channel()
    first.queue_declare(queue, auto_delete=False)
    first.basic_publish("", queue, b"one")
    method, _props, _body = first.basic_get(queue)
    assert method.redelivered is False
    first.close()
    second = conn.channel()
    method, _props, body = second.basic_get(queue, auto_ack=True)
    assert (body, method.redelivered) == (b"one", True)
    second.queue_delete(queue)
    conn.close()


def test_connection_error_on_one_channel_closes_every_channel(
    amqpd_session_broker: BrokerThread,
) -> None:
    queue = unique("gone-with-consumer")
    with RawClient(amqpd_session_broker.port) as client:
        client.handshake()
        client.open_channel(1)
        client.send_method(1, spec.Queue.Declare(queue=queue, auto_delete=True))
        client.expect(spec.Queue.DeclareOk, 1)
        client.send_method(1, spec.Basic.Consume(queue=queue, no_ack=True))
        client.expect(spec.Basic.ConsumeOk, 1)
        client.open_channel(2)
        client.send_method(2, spec.Basic.Publish(routing_key=queue, immediate=True))
        close = client.expect_close()
    assert (close.reply_code, close.reply_text) == (
        540, "NOT_IMPLEMENTED - immediate=true",
    )  # fmt: skip
    assert (close.class_id, close.method_id) == (60, 40)

    def queues() -> list[str]:
        assert amqpd_session_broker.broker is not None
        return list(amqpd_session_broker.broker.node.vhosts["/"].queues)

    # channel 1's consumer went with the connection, and its auto-delete queue
    assert queue not in amqpd_session_broker.call(queues)
