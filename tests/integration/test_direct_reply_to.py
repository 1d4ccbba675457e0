"""Direct reply-to (``amq.rabbitmq.reply-to``) as clients see it.

A requester consumes the pseudo-queue ``amq.rabbitmq.reply-to`` in no-ack
mode and publishes requests with ``reply_to=amq.rabbitmq.reply-to``; the
broker rewrites that to an address naming the requester's channel. A
server publishing to that address through the default exchange reaches the
requester's consumer directly. Codes and texts were checked against
RabbitMQ 3.10.
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

REPLY_TO = "amq.rabbitmq.reply-to"
Delivery = tuple[Any, Any, bytes]  # method, properties, body


def connect(broker: BrokerThread) -> BlockingConnection:
    return pika.BlockingConnection(pika.URLParameters(broker.url))


@pytest.fixture
def conn(amqpd_session_broker: BrokerThread) -> Iterator[BlockingConnection]:
    connection = connect(amqpd_session_broker)
    yield connection
    if connection.is_open:
        connection.close()


@pytest.fixture
def requests(conn: BlockingConnection) -> Iterator[str]:
    """A request queue the test's 'server' reads with basic.get."""
    name = f"rpc-{uuid.uuid4().hex[:12]}"
    conn.channel().queue_declare(name)
    yield name
    if conn.is_open:
        conn.channel().queue_delete(name)


def reply_consumer(
    ch: BlockingChannel, tag: str | None = None
) -> tuple[str, list[Delivery]]:
    got: list[Delivery] = []
    ctag = ch.basic_consume(
        REPLY_TO,
        lambda _c, m, p, body: got.append((m, p, body)),
        auto_ack=True,
        consumer_tag=tag,
    )
    return ctag, got


def pump_until(
    conns: list[BlockingConnection], done: Callable[[], bool], timeout: float = 2.0
) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            pytest.fail("timed out")
        for c in conns:
            c.process_data_events(time_limit=0.005)


def settle(conns: list[BlockingConnection], seconds: float = 0.1) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for c in conns:
            c.process_data_events(time_limit=0.005)


def take(ch: BlockingChannel, queue: str) -> Delivery:
    deadline = time.monotonic() + 2.0
    while True:
        method, props, body = ch.basic_get(queue, auto_ack=True)
        if method is not None:
            return method, props, body
        if time.monotonic() > deadline:
            pytest.fail(f"nothing in {queue}")
        time.sleep(0.005)


def request(ch: BlockingChannel, queue: str, body: bytes, **props: Any) -> None:
    ch.basic_publish("", queue, body, pika.BasicProperties(reply_to=REPLY_TO, **props))


def closed_by_broker(
    conn: BlockingConnection, action: Callable[[BlockingChannel], Any]
) -> ChannelClosedByBroker:
    """Run ``action`` then a round trip on a new channel; the channel must be
    closed by the broker, the connection must stay open."""
    ch = conn.channel()
    with pytest.raises(ChannelClosedByBroker) as info:
        action(ch)
        ch.queue_declare("", exclusive=True)
    assert conn.is_open
    return info.value


# the reply consumer


def test_reply_consumer_with_acknowledgements_is_refused_406(
    conn: BlockingConnection,
) -> None:
    err = closed_by_broker(
        conn, lambda ch: ch.basic_consume(REPLY_TO, lambda *a: None, auto_ack=False)
    )
    assert (err.reply_code, err.reply_text) == (
        406, "PRECONDITION_FAILED - reply consumer cannot acknowledge",
    )  # fmt: skip


def test_second_reply_consumer_on_a_channel_is_refused_406(
    conn: BlockingConnection,
) -> None:
    def twice(ch: BlockingChannel) -> None:
        reply_consumer(ch)
        reply_consumer(ch)

    err = closed_by_broker(conn, twice)
    assert (err.reply_code, err.reply_text) == (
        406, "PRECONDITION_FAILED - reply consumer already set",
    )  # fmt: skip


def test_publish_with_reply_to_but_no_reply_consumer_fails_406(
    conn: BlockingConnection, requests: str
) -> None:
    err = closed_by_broker(conn, lambda ch: request(ch, requests, b"q"))
    assert (err.reply_code, err.reply_text) == (
        406, "PRECONDITION_FAILED - fast reply consumer does not exist",
    )  # fmt: skip
    declared = conn.channel().queue_declare(requests, passive=True).method
    assert declared.message_count == 0


def test_publish_with_reply_to_after_cancelling_reply_consumer_fails_406(
    conn: BlockingConnection, requests: str
) -> None:
    def cancel_then_request(ch: BlockingChannel) -> None:
        tag, _ = reply_consumer(ch)
        ch.basic_cancel(tag)
        request(ch, requests, b"q")

    err = closed_by_broker(conn, cancel_then_request)
    assert err.reply_text == "PRECONDITION_FAILED - fast reply consumer does not exist"


# addresses


def test_reply_to_is_rewritten_to_the_channels_address(
    conn: BlockingConnection, requests: str
) -> None:
    first, second = conn.channel(), conn.channel()
    reply_consumer(first)
    reply_consumer(second)
    request(first, requests, b"a", correlation_id="c1", content_type="text/plain")
    request(first, requests, b"b")
    request(second, requests, b"c")
    seen = [take(first, requests) for _ in range(3)]
    addresses = [props.reply_to for _, props, _ in seen]
    assert all(a.startswith(REPLY_TO + ".") for a in addresses)
    assert len(addresses[0]) > len(REPLY_TO) + 8
    assert addresses[0] == addresses[1] != addresses[2]
    _, props, body = seen[0]
    assert (body, props.correlation_id, props.content_type) == (
        b"a", "c1", "text/plain",
    )  # fmt: skip


def test_other_reply_to_values_are_left_alone(
    conn: BlockingConnection, requests: str
) -> None:
    ch = conn.channel()
    ch.basic_publish("", requests, b"q", pika.BasicProperties(reply_to="my-own-queue"))
    _, props, _ = take(ch, requests)
    assert props.reply_to == "my-own-queue"


def test_reply_reaches_requesters_consumer_with_its_consumer_tag(
    conn: BlockingConnection, requests: str
) -> None:
    requester = conn.channel()
    tag, replies = reply_consumer(requester, "my-replies")
    assert tag == "my-replies"
    request(requester, requests, b"question")
    server = conn.channel()
    _, props, _ = take(server, requests)
    for body in (b"answer-1", b"answer-2"):
        server.basic_publish(
            "", props.reply_to, body, pika.BasicProperties(correlation_id="x")
        )
    pump_until([conn], lambda: len(replies) == 2)
    got = [
        (m.consumer_tag, m.delivery_tag, m.redelivered, m.exchange, m.routing_key,
         p.correlation_id, body)
        for m, p, body in replies
    ]  # fmt: skip
    assert got == [
        ("my-replies", 1, False, "", props.reply_to, "x", b"answer-1"),
        ("my-replies", 2, False, "", props.reply_to, "x", b"answer-2"),
    ]


def test_replies_reach_only_their_own_requester(
    conn: BlockingConnection, requests: str
) -> None:
    alice, bob = conn.channel(), conn.channel()
    _, to_alice = reply_consumer(alice)
    _, to_bob = reply_consumer(bob)
    request(alice, requests, b"alice")
    request(bob, requests, b"bob")
    server = conn.channel()
    for _ in range(2):
        _, props, body = take(server, requests)
        server.basic_publish("", props.reply_to, b"re: " + body)
    pump_until([conn], lambda: len(to_alice) + len(to_bob) == 2)
    settle([conn])
    assert [body for _, _, body in to_alice] == [b"re: alice"]
    assert [body for _, _, body in to_bob] == [b"re: bob"]


# replies that cannot be delivered


def test_reply_after_requester_channel_closed_is_returned_if_mandatory(
    conn: BlockingConnection, requests: str
) -> None:
    requester = conn.channel()
    reply_consumer(requester)
    request(requester, requests, b"question")
    server = conn.channel()
    _, props, _ = take(server, requests)
    requester.close()
    returned: list[tuple[int, str, str, bytes]] = []
    server.add_on_return_callback(
        lambda _c, m, _p, body: returned.append(
            (m.reply_code, m.reply_text, m.routing_key, body)
        )
    )
    server.basic_publish("", props.reply_to, b"too late", mandatory=True)
    server.basic_publish("", props.reply_to, b"dropped")
    pump_until([conn], lambda: len(returned) == 1)
    settle([conn])
    assert returned == [(312, "NO_ROUTE", props.reply_to, b"too late")]
    assert server.is_open


def test_reply_after_requester_connection_closed_is_confirmed_and_dropped(
    amqpd_session_broker: BrokerThread, conn: BlockingConnection, requests: str
) -> None:
    client = connect(amqpd_session_broker)
    requester = client.channel()
    reply_consumer(requester)
    request(requester, requests, b"question")
    server = conn.channel()
    _, props, _ = take(server, requests)
    client.close()
    server.confirm_delivery()
    server.basic_publish("", props.reply_to, b"nobody listens")
    with pytest.raises(pika.exceptions.UnroutableError):
        server.basic_publish("", props.reply_to, b"returned", mandatory=True)


def test_reply_to_unknown_address_is_returned_if_mandatory(
    conn: BlockingConnection,
) -> None:
    ch = conn.channel()
    ch.confirm_delivery()
    address = REPLY_TO + ".no-such-channel"
    with pytest.raises(pika.exceptions.UnroutableError):
        ch.basic_publish("", address, b"lost", mandatory=True)
    ch.basic_publish("", address, b"lost")
    assert ch.is_open


# a whole RPC


def test_rpc_round_trip_between_two_connections(
    amqpd_session_broker: BrokerThread, conn: BlockingConnection, requests: str
) -> None:
    server_conn = connect(amqpd_session_broker)
    try:
        server = server_conn.channel()

        def serve(c: BlockingChannel, m: Any, p: Any, body: bytes) -> None:
            c.basic_publish(
                "", p.reply_to, body.upper(),
                pika.BasicProperties(correlation_id=p.correlation_id),
            )  # fmt: skip
            c.basic_ack(m.delivery_tag)

        server.basic_consume(requests, serve)
        client = conn.channel()
        _, replies = reply_consumer(client)
        for i in range(3):
            request(client, requests, f"ping {i}".encode(), correlation_id=str(i))
        pump_until([conn, server_conn], lambda: len(replies) == 3)
        assert [(p.correlation_id, body) for _, p, body in replies] == [
            ("0", b"PING 0"), ("1", b"PING 1"), ("2", b"PING 2"),
        ]  # fmt: skip
    finally:
        server_conn.close()


# declaring the pseudo-queue


@pytest.mark.parametrize("passive", [True, False], ids=["passive", "active"])
def test_declare_of_reply_to_pseudo_queue_answers_declare_ok(
    conn: BlockingConnection, passive: bool
) -> None:
    ok = conn.channel().queue_declare(REPLY_TO, passive=passive).method
    assert (ok.queue, ok.message_count, ok.consumer_count) == (REPLY_TO, 0, 1)


def test_passive_declare_of_live_reply_address_answers_declare_ok(
    conn: BlockingConnection, requests: str
) -> None:
    # (RabbitMQ 3.10 answers this with a 541 INTERNAL_ERROR)
    ch = conn.channel()
    reply_consumer(ch)
    request(ch, requests, b"q")
    _, props, _ = take(ch, requests)
    ok = conn.channel().queue_declare(props.reply_to, passive=True).method
    assert (ok.queue, ok.message_count, ok.consumer_count) == (props.reply_to, 0, 1)


def test_passive_declare_of_unknown_reply_address_fails_404(
    conn: BlockingConnection,
) -> None:
    address = REPLY_TO + ".abc"
    err = closed_by_broker(conn, lambda ch: ch.queue_declare(address, passive=True))
    assert (err.reply_code, err.reply_text) == (
        404, f"NOT_FOUND - no queue '{address}' in vhost '/'",
    )  # fmt: skip
