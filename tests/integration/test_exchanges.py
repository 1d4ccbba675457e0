"""Exchange declaration and deletion as a pika client sees them.

Reply codes and texts follow RabbitMQ 3.10, checked against a real node:
reserved names, the default exchange, the predeclared ``amq.*`` exchanges,
equivalence on redeclare, internal and auto-delete exchanges.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pika
import pytest
from pika.adapters.blocking_connection import BlockingChannel, BlockingConnection
from pika.exceptions import (
    ChannelClosedByBroker,
    ConnectionClosedByBroker,
    UnroutableError,
)

from amqpd.testing import BrokerThread

PREDECLARED = [
    ("amq.direct", "direct"),
    ("amq.fanout", "fanout"),
    ("amq.topic", "topic"),
    ("amq.headers", "headers"),
    ("amq.match", "headers"),
]


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def conn(amqpd_session_broker: BrokerThread) -> Iterator[BlockingConnection]:
    connection = pika.BlockingConnection(pika.URLParameters(amqpd_session_broker.url))
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


def exists(conn: BlockingConnection, exchange: str) -> bool:
    ch = conn.channel()
    try:
        ch.exchange_declare(exchange, passive=True)
    except ChannelClosedByBroker as exc:
        assert exc.reply_code == 404
        return False
    ch.close()
    return True


# declare


def test_passive_declare_of_missing_exchange_closes_channel_with_404(
    conn: BlockingConnection,
) -> None:
    name = unique("missing")
    err = refused(conn, lambda ch: ch.exchange_declare(name, passive=True))
    assert err.reply_code == 404
    assert err.reply_text == f"NOT_FOUND - no exchange '{name}' in vhost '/'"
    assert conn.channel().is_open


def test_declare_with_all_flags_and_arguments_is_idempotent(
    conn: BlockingConnection,
) -> None:
    ch = conn.channel()
    name = unique("flags")
    options: dict[str, Any] = dict(
        exchange_type="topic", durable=True, auto_delete=True, internal=True,
        arguments={"alternate-exchange": "ae", "x-custom": 7},
    )  # fmt: skip
    assert isinstance(
        ch.exchange_declare(name, **options).method, pika.spec.Exchange.DeclareOk
    )
    ch.exchange_declare(name, **options)
    ch.exchange_declare(name, passive=True)
    ch.exchange_delete(name)
    assert not exists(conn, name)


@pytest.mark.parametrize(
    ("field", "first", "second", "received", "current"),
    [
        ("type", {"exchange_type": "direct"}, {"exchange_type": "fanout"},
         "fanout", "direct"),
        ("durable", {}, {"durable": True}, "true", "false"),
        ("auto_delete", {"auto_delete": True}, {}, "false", "true"),
        ("internal", {"internal": True}, {}, "false", "true"),
        ("alternate-exchange", {"arguments": {"alternate-exchange": "a"}},
         {"arguments": {"alternate-exchange": "b"}}, "b", "a"),
    ],
)  # fmt: skip
def test_redeclare_exchange_with_different_property_fails_406(
    conn: BlockingConnection,
    field: str,
    first: dict[str, Any],
    second: dict[str, Any],
    received: str,
    current: str,
) -> None:
    name = unique("inequivalent")
    conn.channel().exchange_declare(name, **first)
    err = refused(conn, lambda ch: ch.exchange_declare(name, **second))
    assert err.reply_code == 406
    assert err.reply_text == (
        f"PRECONDITION_FAILED - inequivalent arg '{field}' for exchange "
        f"'{name}' in vhost '/': received '{received}' but current is '{current}'"
    )
    assert exists(conn, name)


def test_redeclare_exchange_dropping_alternate_exchange_fails_406(
    conn: BlockingConnection,
) -> None:
    name = unique("drop-ae")
    conn.channel().exchange_declare(name, arguments={"alternate-exchange": "a"})
    err = refused(conn, lambda ch: ch.exchange_declare(name))
    assert err.reply_code == 406
    assert err.reply_text == (  # RabbitMQ 3.10.8's text
        f"PRECONDITION_FAILED - inequivalent arg 'alternate-exchange' for exchange "
        f"'{name}' in vhost '/': received none but current is the value 'a' of "
        "type 'longstr'"
    )


def test_redeclare_exchange_with_other_plain_argument_is_accepted(
    conn: BlockingConnection,
) -> None:
    # RabbitMQ compares only alternate-exchange among exchange arguments
    ch = conn.channel()
    name = unique("plain-args")
    ch.exchange_declare(name, arguments={"x-custom": 1})
    ch.exchange_declare(name, arguments={"x-custom": 2, "x-other": "v"})
    ch.exchange_declare(name)
    assert ch.is_open


def test_declare_with_unknown_type_closes_connection_503(
    conn: BlockingConnection,
) -> None:
    ch = conn.channel()
    with pytest.raises(ConnectionClosedByBroker) as info:
        ch.exchange_declare(unique("bogus"), exchange_type="bogus")
    assert info.value.reply_code == 503
    assert info.value.reply_text == "COMMAND_INVALID - unknown exchange type 'bogus'"


def test_declare_exchange_with_amq_prefix_is_refused_403(
    conn: BlockingConnection,
) -> None:
    name = unique("amq.foo")
    err = refused(conn, lambda ch: ch.exchange_declare(name))
    assert err.reply_code == 403
    assert err.reply_text == (
        f"ACCESS_REFUSED - exchange name '{name}' contains reserved prefix 'amq.*'"
    )
    assert not exists(conn, name)


# the predeclared exchanges


@pytest.mark.parametrize(("name", "type_name"), PREDECLARED)
def test_predeclared_exchange_exists_with_its_type(
    conn: BlockingConnection, name: str, type_name: str
) -> None:
    ch = conn.channel()
    ch.exchange_declare(name, passive=True)
    ch.exchange_declare(name, exchange_type=type_name, durable=True)
    assert ch.is_open


@pytest.mark.parametrize(("name", "type_name"), PREDECLARED)
def test_predeclared_exchange_redeclared_with_other_type_fails_406(
    conn: BlockingConnection, name: str, type_name: str
) -> None:
    other = "fanout" if type_name != "fanout" else "direct"
    err = refused(conn, lambda ch: ch.exchange_declare(name, other, durable=True))
    assert err.reply_code == 406
    assert err.reply_text == (
        f"PRECONDITION_FAILED - inequivalent arg 'type' for exchange '{name}' "
        f"in vhost '/': received '{other}' but current is '{type_name}'"
    )


def test_predeclared_exchange_redeclared_not_durable_fails_406(
    conn: BlockingConnection,
) -> None:
    err = refused(conn, lambda ch: ch.exchange_declare("amq.direct", "direct"))
    assert err.reply_code == 406
    assert "inequivalent arg 'durable'" in err.reply_text


@pytest.mark.parametrize(("name", "type_name"), PREDECLARED)
def test_deleting_predeclared_exchange_is_refused_403(
    conn: BlockingConnection, name: str, type_name: str
) -> None:
    err = refused(conn, lambda ch: ch.exchange_delete(name))
    assert err.reply_code == 403
    assert err.reply_text == (
        f"ACCESS_REFUSED - deletion of system exchange '{name}' in vhost '/' "
        "not allowed"
    )
    assert exists(conn, name)


# the default exchange

DEFAULT_REFUSED = "ACCESS_REFUSED - operation not permitted on the default exchange"


def test_publish_to_default_exchange_routes_by_queue_name(
    conn: BlockingConnection,
) -> None:
    ch = conn.channel()
    ch.confirm_delivery()  # published means routed
    queue = ch.queue_declare(unique("by-name"), exclusive=True).method.queue
    ch.basic_publish("", queue, b"direct to the queue")
    ch.basic_publish("", unique("nobody"), b"dropped")
    method, _props, body = ch.basic_get(queue, auto_ack=True)
    assert body == b"direct to the queue"
    assert method.exchange == "" and method.routing_key == queue
    assert method.message_count == 0


@pytest.mark.parametrize(
    "action",
    [
        pytest.param(lambda ch: ch.exchange_declare(""), id="declare"),
        pytest.param(lambda ch: ch.exchange_declare("", passive=True),
                     id="passive-declare"),
        pytest.param(lambda ch: ch.exchange_delete(""), id="delete"),
        pytest.param(lambda ch: ch.exchange_bind("amq.direct", "", "k"),
                     id="exchange-bind-source"),
        pytest.param(lambda ch: ch.exchange_bind("", "amq.direct", "k"),
                     id="exchange-bind-destination"),
        pytest.param(lambda ch: ch.exchange_unbind("amq.direct", "", "k"),
                     id="exchange-unbind"),
    ],
)  # fmt: skip
def test_default_exchange_refuses_changes_403(
    conn: BlockingConnection, action: Callable[[BlockingChannel], Any]
) -> None:
    err = refused(conn, action)
    assert err.reply_code == 403
    assert err.reply_text == DEFAULT_REFUSED


@pytest.mark.parametrize("method", ["queue_bind", "queue_unbind"])
def test_binding_queue_to_default_exchange_is_refused_403(
    conn: BlockingConnection, method: str
) -> None:
    def action(ch: BlockingChannel) -> None:
        queue = ch.queue_declare("", exclusive=True).method.queue
        getattr(ch, method)(queue, "", queue)

    err = refused(conn, action)
    assert err.reply_code == 403
    assert err.reply_text == DEFAULT_REFUSED


# delete


def test_delete_exchange_if_unused_with_queue_binding_fails_406(
    conn: BlockingConnection,
) -> None:
    ch = conn.channel()
    name = unique("in-use")
    ch.exchange_declare(name)
    queue = ch.queue_declare("", exclusive=True).method.queue
    ch.queue_bind(queue, name, "k")
    err = refused(conn, lambda c: c.exchange_delete(name, if_unused=True))
    assert err.reply_code == 406
    assert err.reply_text == (
        f"PRECONDITION_FAILED - exchange '{name}' in vhost '/' in use"
    )
    assert exists(conn, name)
    ch.queue_unbind(queue, name, "k")
    ch.exchange_delete(name, if_unused=True)
    assert not exists(conn, name)


def test_delete_exchange_if_unused_with_exchange_binding_fails_406(
    conn: BlockingConnection,
) -> None:
    ch = conn.channel()
    source, dest = unique("src"), unique("dst")
    ch.exchange_declare(source)
    ch.exchange_declare(dest)
    ch.exchange_bind(dest, source, "k")
    err = refused(conn, lambda c: c.exchange_delete(source, if_unused=True))
    assert err.reply_code == 406
    assert "in use" in err.reply_text
    # being only a destination is not being used, as in RabbitMQ
    ch.exchange_delete(dest, if_unused=True)
    assert not exists(conn, dest)
    ch.exchange_delete(source, if_unused=True)
    assert not exists(conn, source)


@pytest.mark.parametrize("if_unused", [False, True])
def test_delete_missing_exchange_answers_delete_ok(
    conn: BlockingConnection, if_unused: bool
) -> None:
    ch = conn.channel()
    reply = ch.exchange_delete(unique("never-declared"), if_unused=if_unused)
    assert isinstance(reply.method, pika.spec.Exchange.DeleteOk)
    assert ch.is_open


def test_deleted_exchange_loses_its_bindings(conn: BlockingConnection) -> None:
    ch = conn.channel()
    ch.confirm_delivery()  # published means routed
    name = unique("recreated")
    ch.exchange_declare(name, "fanout")
    queue = ch.queue_declare("", exclusive=True).method.queue
    ch.queue_bind(queue, name)
    ch.exchange_delete(name)
    ch.exchange_declare(name, "fanout")
    with pytest.raises(UnroutableError):
        ch.basic_publish(name, "", b"m", mandatory=True)
    assert ch.queue_declare(queue, passive=True).method.message_count == 0


# internal


def test_publish_to_internal_exchange_is_refused_403(
    conn: BlockingConnection,
) -> None:
    name = unique("internal")
    conn.channel().exchange_declare(name, "fanout", internal=True)

    def publish(ch: BlockingChannel) -> None:
        ch.basic_publish(name, "k", b"m")
        ch.queue_declare("", exclusive=True)  # a round trip to see the close

    err = refused(conn, publish)
    assert err.reply_code == 403
    assert err.reply_text == (
        f"ACCESS_REFUSED - cannot publish to internal exchange '{name}' in vhost '/'"
    )


def test_internal_exchange_routes_messages_from_exchange_bindings(
    conn: BlockingConnection,
) -> None:
    ch = conn.channel()
    ch.confirm_delivery()  # published means routed
    front, inner = unique("front"), unique("inner")
    ch.exchange_declare(front, "direct")
    ch.exchange_declare(inner, "fanout", internal=True)
    ch.exchange_bind(inner, front, "k")
    queue = ch.queue_declare("", exclusive=True).method.queue
    ch.queue_bind(queue, inner)
    ch.basic_publish(front, "k", b"through the internal exchange")
    ch.basic_publish(front, "other", b"not bound")
    method, _props, body = ch.basic_get(queue, auto_ack=True)
    assert body == b"through the internal exchange"
    assert method.exchange == front and method.message_count == 0


# auto-delete


def test_auto_delete_exchange_stays_until_a_binding_comes_and_goes(
    conn: BlockingConnection,
) -> None:
    ch = conn.channel()
    name = unique("auto")
    ch.exchange_declare(name, auto_delete=True)
    assert exists(conn, name)
    queue = ch.queue_declare("", exclusive=True).method.queue
    ch.queue_bind(queue, name, "a")
    ch.queue_bind(queue, name, "b")
    ch.queue_unbind(queue, name, "a")
    assert exists(conn, name)
    ch.queue_unbind(queue, name, "b")
    assert not exists(conn, name)


def test_auto_delete_exchange_goes_when_its_last_queue_is_deleted(
    conn: BlockingConnection,
) -> None:
    ch = conn.channel()
    name = unique("auto-q")
    ch.exchange_declare(name, auto_delete=True)
    queue = ch.queue_declare("", exclusive=True).method.queue
    ch.queue_bind(queue, name, "a")
    ch.queue_delete(queue)
    assert not exists(conn, name)


def test_auto_delete_exchange_goes_when_its_exchange_binding_is_removed(
    conn: BlockingConnection,
) -> None:
    # only the source of a binding counts as using it, as in RabbitMQ
    ch = conn.channel()
    source, dest = unique("auto-src"), unique("auto-dst")
    ch.exchange_declare(source, auto_delete=True)
    ch.exchange_declare(dest, auto_delete=True)
    ch.exchange_bind(dest, source, "k")
    ch.exchange_unbind(dest, source, "k")
    assert not exists(conn, source)
    assert exists(conn, dest)


def test_auto_delete_exchange_goes_with_its_exclusive_queue_connection(
    amqpd_session_broker: BrokerThread, conn: BlockingConnection
) -> None:
    name = unique("auto-conn")
    other = pika.BlockingConnection(pika.URLParameters(amqpd_session_broker.url))
    ch = other.channel()
    ch.exchange_declare(name, auto_delete=True)
    queue = ch.queue_declare("", exclusive=True).method.queue
    ch.queue_bind(queue, name, "k")
    other.close()
    assert not exists(conn, name)


# headers bindings


@pytest.mark.parametrize(
    ("x_match", "detail"),
    [("some", "x-match"), (1, "x-match")],
)
def test_headers_binding_with_invalid_x_match_fails_406(
    conn: BlockingConnection, x_match: object, detail: str
) -> None:
    name = unique("headers")
    conn.channel().exchange_declare(name, "headers")

    def bind(ch: BlockingChannel) -> None:
        queue = ch.queue_declare("", exclusive=True).method.queue
        ch.queue_bind(queue, name, "", arguments={"x-match": x_match})

    err = refused(conn, bind)
    assert err.reply_code == 406
    assert err.reply_text.startswith("PRECONDITION_FAILED - ")
    assert detail in err.reply_text
