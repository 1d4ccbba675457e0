"""Queue declaration, binding, purge and deletion as clients see them.

Reply codes and texts follow RabbitMQ 3.10, checked against a real node:
server-named queues, equivalence on redeclare (integer widths included),
exclusive and auto-delete queues, and the channel's last declared queue.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import aio_pika
import pika
import pytest
from pika.adapters.blocking_connection import BlockingChannel, BlockingConnection
from pika.compat import long
from pika.exceptions import ChannelClosedByBroker

from amqpd.testing import BrokerThread

LOCKED = (
    "RESOURCE_LOCKED - cannot obtain exclusive access to locked queue '{}' in "
    "vhost '/'. It could be originally declared on another connection or the "
    "exclusive property value does not match that of the original declaration."
)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def connect(broker: BrokerThread) -> BlockingConnection:
    return pika.BlockingConnection(pika.URLParameters(broker.url))


@pytest.fixture
def conn(amqpd_session_broker: BrokerThread) -> Iterator[BlockingConnection]:
    connection = connect(amqpd_session_broker)
    yield connection
    if connection.is_open:
        connection.close()


@pytest.fixture
def other(amqpd_session_broker: BrokerThread) -> Iterator[BlockingConnection]:
    """A second connection, for exclusivity checks."""
    connection = connect(amqpd_session_broker)
    yield connection
    if connection.is_open:
        connection.close()


def refused(
    conn: BlockingConnection, action: Callable[[BlockingChannel], Any]
) -> ChannelClosedByBroker:
    """Run ``action`` on a new channel; it must close that channel only."""
    ch = conn.channel()
    with pytest.raises(ChannelClosedByBroker) as info:
        action(ch)
    assert conn.is_open
    return info.value


def confirming(conn: BlockingConnection) -> BlockingChannel:
    """A channel in confirm mode: once basic_publish returns, the message is
    in its queues (RabbitMQ gives no such promise without confirms)."""
    ch = conn.channel()
    ch.confirm_delivery()
    return ch


def counts(conn: BlockingConnection, queue: str) -> tuple[int, int]:
    """(ready messages, consumers) from a passive declare."""
    ok = conn.channel().queue_declare(queue, passive=True).method
    return ok.message_count, ok.consumer_count


def exists(conn: BlockingConnection, queue: str) -> bool:
    ch = conn.channel()
    try:
        ch.queue_declare(queue, passive=True)
    except ChannelClosedByBroker as exc:
        assert exc.reply_code == 404
        return False
    ch.close()
    return True


def publish(ch: BlockingChannel, queue: str, count: int) -> None:
    for i in range(count):
        ch.basic_publish("", queue, f"m{i}".encode())


# declare


def test_server_named_queue_gets_amq_gen_prefix(conn: BlockingConnection) -> None:
    ch = conn.channel()
    first = ch.queue_declare("", exclusive=True).method
    second = ch.queue_declare("", exclusive=True).method.queue
    assert re.fullmatch(r"amq\.gen-[A-Za-z0-9_-]{22}", first.queue)
    assert first.message_count == 0 and first.consumer_count == 0
    assert second != first.queue
    assert exists(conn, first.queue)


def test_passive_declare_of_missing_queue_closes_channel_with_404(
    conn: BlockingConnection,
) -> None:
    name = unique("missing")
    err = refused(conn, lambda ch: ch.queue_declare(name, passive=True))
    assert err.reply_code == 404
    assert err.reply_text == f"NOT_FOUND - no queue '{name}' in vhost '/'"
    assert not exists(conn, name)


def test_declare_queue_with_amq_prefix_is_refused_403(
    conn: BlockingConnection,
) -> None:
    name = unique("amq.x")
    err = refused(conn, lambda ch: ch.queue_declare(name))
    assert err.reply_code == 403
    assert err.reply_text == (
        f"ACCESS_REFUSED - queue name '{name}' contains reserved prefix 'amq.*'"
    )
    assert not exists(conn, name)


def test_declare_ok_counts_ready_messages_and_consumers(
    conn: BlockingConnection,
) -> None:
    ch = confirming(conn)
    queue = ch.queue_declare(unique("counts"), exclusive=True).method.queue
    publish(ch, queue, 3)
    redeclared = ch.queue_declare(queue, exclusive=True).method
    assert (redeclared.message_count, redeclared.consumer_count) == (3, 0)
    ch.basic_get(queue)  # unacked is not ready
    assert counts(conn, queue) == (2, 0)
    consumer_ch = conn.channel()
    consumer_ch.basic_qos(prefetch_count=1)
    consumer_ch.basic_consume(queue, lambda *a: None)
    assert counts(conn, queue) == (1, 1)
    consumer_ch.basic_consume(queue, lambda *a: None)
    assert counts(conn, queue) == (0, 2)


def test_declare_with_flags_and_arguments_is_idempotent(
    conn: BlockingConnection,
) -> None:
    ch = conn.channel()
    name = unique("flags")
    arguments = {"x-max-length": 10, "x-message-ttl": 60000, "x-custom": "v"}
    for _ in range(2):
        ok = ch.queue_declare(
            name, durable=True, auto_delete=True, arguments=arguments
        ).method
        assert ok.queue == name
    ch.queue_declare(name, passive=True)
    assert ch.queue_delete(name).method.message_count == 0


@pytest.mark.parametrize(
    ("field", "first", "second", "received", "current"),
    [
        ("durable", {}, {"durable": True}, "'true'", "'false'"),
        ("auto_delete", {"auto_delete": True}, {}, "'false'", "'true'"),
        ("x-max-length", {"arguments": {"x-max-length": 5}},
         {"arguments": {"x-max-length": 6}}, "'6'", "'5'"),
        # RabbitMQ 3.10.8's texts: the value and its type where the types
        # differ or one side is missing
        ("x-message-ttl", {"arguments": {"x-message-ttl": 1000}},
         {"arguments": {"x-message-ttl": "1000"}},
         "the value '1000' of type 'longstr'", "the value '1000' of type 'signedint'"),
        ("x-dead-letter-exchange", {}, {"arguments": {"x-dead-letter-exchange": "d"}},
         "the value 'd' of type 'longstr'", "none"),
        ("x-expires", {"arguments": {"x-expires": 9000}}, {},
         "none", "the value '9000' of type 'signedint'"),
    ],
)  # fmt: skip
def test_redeclare_queue_with_different_property_fails_406(
    conn: BlockingConnection,
    field: str,
    first: dict[str, Any],
    second: dict[str, Any],
    received: str,
    current: str,
) -> None:
    name = unique("inequivalent")
    conn.channel().queue_declare(name, **first)
    err = refused(conn, lambda ch: ch.queue_declare(name, **second))
    assert err.reply_code == 406
    prefix = (
        f"PRECONDITION_FAILED - inequivalent arg '{field}' for queue '{name}' "
        "in vhost '/': received "
    )
    assert err.reply_text == f"{prefix}{received} but current is {current}"
    assert counts(conn, name) == (0, 0)
    conn.channel().queue_delete(name)


def test_redeclare_queue_with_other_plain_argument_is_accepted(
    conn: BlockingConnection,
) -> None:
    # RabbitMQ compares only the x- arguments it knows
    ch = conn.channel()
    name = unique("plain-args")
    ch.queue_declare(name, exclusive=True, arguments={"x-custom": 1})
    ch.queue_declare(name, exclusive=True, arguments={"x-custom": 2, "other": 3})
    ch.queue_declare(name, exclusive=True)
    assert ch.is_open


def test_passive_declare_ignores_flags_and_arguments(
    conn: BlockingConnection,
) -> None:
    ch = conn.channel()
    name = unique("passive")
    ch.queue_declare(name, exclusive=True, arguments={"x-max-length": 5})
    ok = ch.queue_declare(
        name, passive=True, durable=True, arguments={"x-max-length": 6}
    ).method
    assert ok.queue == name


def test_redeclare_with_long_long_ttl_equals_int_ttl(
    conn: BlockingConnection,
) -> None:
    # pika sends an int as 'I' (32-bit) and pika.compat.long as 'l' (64-bit);
    # RabbitMQ compares integer arguments by value whatever their width
    ch = conn.channel()
    name = unique("ttl-width")
    ch.queue_declare(name, exclusive=True, arguments={"x-message-ttl": 1000})
    ch.queue_declare(name, exclusive=True, arguments={"x-message-ttl": long(1000)})
    ch.queue_declare(name, exclusive=True, arguments={"x-message-ttl": 1000})
    err = refused(
        conn,
        lambda c: c.queue_declare(
            name, exclusive=True, arguments={"x-message-ttl": long(1001)}
        ),
    )
    assert err.reply_code == 406
    assert "inequivalent arg 'x-message-ttl'" in err.reply_text


async def test_redeclare_with_short_ttl_equals_int_and_long_long_ttl(
    amqpd_broker: BrokerThread,
) -> None:
    # aio-pika (pamqp) sends 1000 as a 16-bit 's', pika as 'I' and 'l'
    name = unique("ttl-short")
    arguments: dict[str, Any] = {"x-message-ttl": 1000, "x-max-length": 100}
    connection = await aio_pika.connect(amqpd_broker.url)
    async with connection:
        channel = await connection.channel()
        await channel.declare_queue(name, arguments=arguments)
        blocking = connect(amqpd_broker)
        try:
            ch = blocking.channel()
            ch.queue_declare(name, arguments=arguments)
            ch.queue_declare(
                name,
                arguments={"x-message-ttl": long(1000), "x-max-length": long(100)},
            )
        finally:
            blocking.close()
        await channel.declare_queue(name, arguments=arguments)
        with pytest.raises(aio_pika.exceptions.ChannelPreconditionFailed) as info:
            await channel.declare_queue(
                name, arguments={"x-message-ttl": 999, "x-max-length": 100}
            )
        assert "inequivalent arg 'x-message-ttl'" in str(info.value)


# bind and unbind


def test_bind_and_unbind_change_what_reaches_the_queue(
    conn: BlockingConnection,
) -> None:
    ch = confirming(conn)
    exchange = unique("bind")
    ch.exchange_declare(exchange, "direct")
    queue = ch.queue_declare("", exclusive=True).method.queue
    ch.basic_publish(exchange, "k", b"before")
    ch.queue_bind(queue, exchange, "k")
    ch.queue_bind(queue, exchange, "k")  # the same binding again: no double
    ch.basic_publish(exchange, "k", b"bound")
    ch.queue_unbind(queue, exchange, "k")
    ch.basic_publish(exchange, "k", b"after")
    method, _props, body = ch.basic_get(queue, auto_ack=True)
    assert body == b"bound" and method.message_count == 0


def test_unbind_of_missing_binding_answers_unbind_ok(
    conn: BlockingConnection,
) -> None:
    ch = conn.channel()
    queue = ch.queue_declare("", exclusive=True).method.queue
    ok = ch.queue_unbind(queue, "amq.direct", unique("never-bound"))
    assert isinstance(ok.method, pika.spec.Queue.UnbindOk)


@pytest.mark.parametrize(
    ("missing", "what"), [("exchange", "exchange"), ("queue", "queue")]
)
def test_bind_naming_missing_object_fails_404(
    conn: BlockingConnection, missing: str, what: str
) -> None:
    absent = unique("absent")

    def bind(ch: BlockingChannel) -> None:
        queue = ch.queue_declare("", exclusive=True).method.queue
        if missing == "exchange":
            ch.queue_bind(queue, absent, "k")
        else:
            ch.queue_bind(absent, "amq.direct", "k")

    err = refused(conn, bind)
    assert err.reply_code == 404
    assert err.reply_text == f"NOT_FOUND - no {what} '{absent}' in vhost '/'"


# purge and delete


def test_purge_returns_ready_count_and_leaves_unacked(
    conn: BlockingConnection,
) -> None:
    ch = confirming(conn)
    queue = ch.queue_declare("", exclusive=True).method.queue
    publish(ch, queue, 4)
    method, _props, _body = ch.basic_get(queue)
    assert ch.queue_purge(queue).method.message_count == 3
    assert counts(conn, queue) == (0, 0)
    ch.basic_reject(method.delivery_tag, requeue=True)
    assert counts(conn, queue) == (1, 0)
    assert ch.queue_purge(queue).method.message_count == 1


def test_purge_of_missing_queue_fails_404(conn: BlockingConnection) -> None:
    name = unique("missing")
    err = refused(conn, lambda ch: ch.queue_purge(name))
    assert err.reply_code == 404
    assert err.reply_text == f"NOT_FOUND - no queue '{name}' in vhost '/'"


def test_delete_returns_ready_count(conn: BlockingConnection) -> None:
    ch = confirming(conn)
    queue = ch.queue_declare(unique("delete"), exclusive=True).method.queue
    publish(ch, queue, 3)
    ch.basic_get(queue)  # unacked is not counted
    assert ch.queue_delete(queue).method.message_count == 2
    assert not exists(conn, queue)


def test_delete_if_unused_with_consumer_fails_406(
    conn: BlockingConnection,
) -> None:
    ch = conn.channel()
    queue = ch.queue_declare(unique("in-use"), exclusive=True).method.queue
    tag = ch.basic_consume(queue, lambda *a: None)
    err = refused(conn, lambda c: c.queue_delete(queue, if_unused=True))
    assert err.reply_code == 406
    assert err.reply_text == (
        f"PRECONDITION_FAILED - queue '{queue}' in vhost '/' in use"
    )
    assert counts(conn, queue) == (0, 1)
    ch.basic_cancel(tag)
    assert ch.queue_delete(queue, if_unused=True).method.message_count == 0


def test_delete_if_empty_with_messages_fails_406(conn: BlockingConnection) -> None:
    ch = confirming(conn)
    queue = ch.queue_declare(unique("not-empty"), exclusive=True).method.queue
    publish(ch, queue, 2)
    err = refused(conn, lambda c: c.queue_delete(queue, if_empty=True))
    assert err.reply_code == 406
    assert err.reply_text == (
        f"PRECONDITION_FAILED - queue '{queue}' in vhost '/' not empty"
    )
    assert counts(conn, queue) == (2, 0)
    ch.queue_purge(queue)
    assert ch.queue_delete(queue, if_empty=True).method.message_count == 0


def test_delete_missing_queue_answers_delete_ok_zero(
    conn: BlockingConnection,
) -> None:
    ch = conn.channel()
    ok = ch.queue_delete(unique("never-declared"), if_unused=True, if_empty=True)
    assert isinstance(ok.method, pika.spec.Queue.DeleteOk)
    assert ok.method.message_count == 0
    assert ch.is_open


def test_deleted_queue_loses_its_bindings(conn: BlockingConnection) -> None:
    ch = confirming(conn)
    exchange, name = unique("fan"), unique("recreated")
    ch.exchange_declare(exchange, "fanout")
    ch.queue_declare(name, exclusive=True)
    ch.queue_bind(name, exchange)
    ch.queue_delete(name)
    ch.queue_declare(name, exclusive=True)
    ch.basic_publish(exchange, "", b"m")
    assert counts(conn, name) == (0, 0)


# exclusive queues


def test_exclusive_queue_is_deleted_with_its_connection(
    amqpd_session_broker: BrokerThread, conn: BlockingConnection
) -> None:
    owner = connect(amqpd_session_broker)
    ch = confirming(owner)
    queue = ch.queue_declare(unique("excl"), exclusive=True).method.queue
    ch.queue_bind(queue, "amq.fanout")
    publish(ch, queue, 2)
    owner.channel().queue_declare(queue, passive=True)  # other channel: fine
    owner.close()
    assert not exists(conn, queue)
    ch = confirming(conn)
    ch.queue_declare(queue)  # the name is free again, without old bindings
    ch.basic_publish("amq.fanout", "", b"m")
    assert counts(conn, queue) == (0, 0)
    ch.queue_delete(queue)


@pytest.mark.parametrize(
    "action",
    [
        pytest.param(lambda ch, q: ch.queue_declare(q), id="declare"),
        pytest.param(lambda ch, q: ch.queue_declare(q, exclusive=True),
                     id="declare-exclusive"),
        pytest.param(lambda ch, q: ch.queue_declare(q, passive=True),
                     id="passive-declare"),
        pytest.param(lambda ch, q: ch.basic_consume(q, lambda *a: None),
                     id="consume"),
        pytest.param(lambda ch, q: ch.queue_bind(q, "amq.direct", "k"), id="bind"),
        pytest.param(lambda ch, q: ch.queue_purge(q), id="purge"),
        pytest.param(lambda ch, q: ch.basic_get(q), id="get"),
        pytest.param(lambda ch, q: ch.queue_delete(q), id="delete"),
    ],
)  # fmt: skip
def test_exclusive_queue_is_locked_for_other_connections_405(
    conn: BlockingConnection,
    other: BlockingConnection,
    action: Callable[[BlockingChannel, str], Any],
) -> None:
    ch = confirming(conn)
    queue = ch.queue_declare(unique("locked"), exclusive=True).method.queue
    publish(ch, queue, 1)
    err = refused(other, lambda c: action(c, queue))
    assert err.reply_code == 405
    assert err.reply_text == LOCKED.format(queue)
    assert counts(conn, queue) == (1, 0)


def test_exclusive_queue_redeclared_not_exclusive_by_owner_fails_405(
    conn: BlockingConnection,
) -> None:
    queue = conn.channel().queue_declare(unique("ex"), exclusive=True).method.queue
    err = refused(conn, lambda ch: ch.queue_declare(queue))
    assert err.reply_code == 405
    assert err.reply_text == LOCKED.format(queue)


def test_shared_queue_redeclared_exclusive_fails_405(
    conn: BlockingConnection,
) -> None:
    name = unique("shared")
    conn.channel().queue_declare(name)
    err = refused(conn, lambda ch: ch.queue_declare(name, exclusive=True))
    assert err.reply_code == 405
    assert err.reply_text == LOCKED.format(name)
    conn.channel().queue_delete(name)


# auto-delete queues


def test_auto_delete_queue_waits_for_a_first_consumer(
    conn: BlockingConnection,
) -> None:
    ch = confirming(conn)
    queue = ch.queue_declare(unique("auto"), auto_delete=True).method.queue
    publish(ch, queue, 1)
    assert counts(conn, queue) == (1, 0)
    first = ch.basic_consume(queue, lambda *a: None, auto_ack=True)
    second = ch.basic_consume(queue, lambda *a: None, auto_ack=True)
    ch.basic_cancel(first)
    assert counts(conn, queue) == (0, 1)
    ch.basic_cancel(second)
    assert not exists(conn, queue)


def test_auto_delete_queue_goes_when_consumer_channel_closes(
    conn: BlockingConnection,
) -> None:
    queue = conn.channel().queue_declare(unique("auto-ch"), auto_delete=True)
    name = queue.method.queue
    ch = conn.channel()
    ch.basic_consume(name, lambda *a: None)
    assert counts(conn, name) == (0, 1)
    ch.close()
    assert not exists(conn, name)


def test_auto_delete_queue_goes_when_consumer_connection_closes(
    amqpd_session_broker: BrokerThread, conn: BlockingConnection
) -> None:
    name = conn.channel().queue_declare(unique("auto-conn"), auto_delete=True)
    queue = name.method.queue
    consumer = connect(amqpd_session_broker)
    consumer.channel().basic_consume(queue, lambda *a: None)
    assert counts(conn, queue) == (0, 1)
    consumer.close()
    assert not exists(conn, queue)


# the channel's last declared queue


def test_empty_queue_name_means_last_declared_queue(
    conn: BlockingConnection,
) -> None:
    ch = confirming(conn)
    queue = ch.queue_declare("", exclusive=True).method.queue
    ch.queue_bind("", "amq.direct", queue)
    ch.basic_publish("amq.direct", queue, b"one")
    ch.basic_publish("amq.direct", queue, b"two")
    method, _props, body = ch.basic_get("", auto_ack=True)
    assert body == b"one" and method.message_count == 1
    got: list[bytes] = []
    tag = ch.basic_consume("", lambda c, m, p, b: got.append(b), auto_ack=True)
    conn.process_data_events(time_limit=0)
    while not got:
        conn.process_data_events(time_limit=0.05)
    assert got == [b"two"]
    ch.basic_cancel(tag)
    ch.queue_unbind("", "amq.direct", queue)
    ch.basic_publish("amq.direct", queue, b"unbound")
    publish(ch, queue, 1)
    assert ch.queue_purge("").method.message_count == 1
    assert ch.queue_delete("").method.message_count == 0
    assert not exists(conn, queue)


def test_last_declared_queue_is_per_channel(conn: BlockingConnection) -> None:
    first = confirming(conn)
    a = first.queue_declare("", exclusive=True).method.queue
    second = conn.channel()
    b = second.queue_declare("", exclusive=True).method.queue
    first.basic_publish("", a, b"for a")
    _method, _props, body = first.basic_get("", auto_ack=True)
    assert body == b"for a"
    assert second.basic_get("", auto_ack=True) == (None, None, None)
    assert b != a


@pytest.mark.parametrize(
    "action",
    [
        pytest.param(lambda ch: ch.basic_get(""), id="get"),
        pytest.param(lambda ch: ch.basic_consume("", lambda *a: None),
                     id="consume"),
        pytest.param(lambda ch: ch.queue_bind("", "amq.direct", "k"), id="bind"),
        pytest.param(lambda ch: ch.queue_purge(""), id="purge"),
        pytest.param(lambda ch: ch.queue_delete(""), id="delete"),
    ],
)  # fmt: skip
def test_empty_queue_name_without_declared_queue_fails_404(
    conn: BlockingConnection, action: Callable[[BlockingChannel], Any]
) -> None:
    err = refused(conn, action)
    assert err.reply_code == 404
    assert err.reply_text == "NOT_FOUND - no previously declared queue"
