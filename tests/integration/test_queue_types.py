"""Queue types (the ``x-queue-type`` argument) as clients see them.

``classic`` is the default, and naming it changes nothing. ``quorum`` is
accepted with RabbitMQ's declaration rules (durable, not exclusive, not
auto-delete, no ``x-max-priority``); on one node a quorum queue is a durable
queue that counts deliveries (``x-delivery-count`` on redeliveries).
``stream`` and unknown types are refused with 406. Texts were checked
against RabbitMQ 3.10; where amqpd says something else, the test says so.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pika
import pytest
from pika.adapters.blocking_connection import BlockingChannel, BlockingConnection
from pika.exceptions import ChannelClosedByBroker

from amqpd.testing import BrokerThread

QUORUM = {"x-queue-type": "quorum"}


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
def quorum(conn: BlockingConnection) -> Iterator[str]:
    name = unique("qq")
    conn.channel().queue_declare(name, durable=True, arguments=QUORUM)
    yield name
    if conn.is_open:
        conn.channel().queue_delete(name)


def refused(
    conn: BlockingConnection, action: Callable[[BlockingChannel], Any]
) -> ChannelClosedByBroker:
    """Run ``action`` on a new channel; it must close that channel only."""
    ch = conn.channel()
    with pytest.raises(ChannelClosedByBroker) as info:
        action(ch)
    assert conn.is_open
    return info.value


def exists(conn: BlockingConnection, name: str) -> bool:
    try:
        conn.channel().queue_declare(name, passive=True)
    except ChannelClosedByBroker as exc:
        assert exc.reply_code == 404
        return False
    return True


def get(ch: BlockingChannel, queue: str) -> tuple[Any, Any, bytes]:
    deadline = time.monotonic() + 2.0
    while True:
        method, props, body = ch.basic_get(queue)
        if method is not None:
            return method, props, body
        if time.monotonic() > deadline:
            pytest.fail(f"no message in {queue}")
        time.sleep(0.005)


# classic


def test_queue_declared_without_type_accepts_redeclare_naming_classic(
    conn: BlockingConnection,
) -> None:
    name = unique("classic")
    ch = conn.channel()
    ch.queue_declare(name, auto_delete=True)
    ch.basic_publish("", name, b"m")
    again = ch.queue_declare(
        name, auto_delete=True, arguments={"x-queue-type": "classic"}
    )
    assert again.method.message_count == 1
    ch.queue_delete(name)


def test_queue_declared_classic_accepts_redeclare_without_type(
    conn: BlockingConnection,
) -> None:
    name = unique("classic")
    ch = conn.channel()
    ch.queue_declare(name, arguments={"x-queue-type": "classic"})
    assert ch.queue_declare(name).method.queue == name
    ch.queue_delete(name)


def test_classic_queue_redeclared_as_quorum_fails_406(
    conn: BlockingConnection,
) -> None:
    name = unique("classic")
    conn.channel().queue_declare(name, durable=True)
    err = refused(
        conn, lambda ch: ch.queue_declare(name, durable=True, arguments=QUORUM)
    )
    assert err.reply_code == 406
    assert err.reply_text.startswith(
        f"PRECONDITION_FAILED - inequivalent arg 'x-queue-type' for queue '{name}' "
        "in vhost '/'"
    )
    conn.channel().queue_delete(name)


# quorum: declaration rules


@pytest.mark.parametrize(
    ("flags", "prop"),
    [
        ({"durable": False}, "non-durable"),
        ({"durable": True, "exclusive": True}, "exclusive-owner"),
        ({"durable": True, "auto_delete": True}, "auto-delete"),
    ],
    ids=["non-durable", "exclusive", "auto-delete"],
)
def test_quorum_queue_refuses_property_406(
    conn: BlockingConnection, flags: dict[str, bool], prop: str
) -> None:
    name = unique("qq")
    err = refused(conn, lambda ch: ch.queue_declare(name, arguments=QUORUM, **flags))
    assert err.reply_code == 406
    assert err.reply_text == (
        f"PRECONDITION_FAILED - invalid property '{prop}' for queue '{name}' in "
        "vhost '/'"
    )
    assert not exists(conn, name)


def test_quorum_queue_refuses_max_priority_406(conn: BlockingConnection) -> None:
    name = unique("qq")
    err = refused(
        conn,
        lambda ch: ch.queue_declare(
            name, durable=True, arguments={**QUORUM, "x-max-priority": 5}
        ),
    )
    assert err.reply_code == 406
    assert err.reply_text.startswith(
        f"PRECONDITION_FAILED - invalid arg 'x-max-priority' for queue '{name}' in "
        "vhost '/'"
    )
    assert not exists(conn, name)


def test_quorum_queue_refuses_reject_publish_dlx_406(conn: BlockingConnection) -> None:
    # RabbitMQ 3.10 accepts this declaration, logs a warning and runs the
    # queue with drop-head; amqpd refuses it rather than ignore the setting
    name = unique("qq")
    err = refused(
        conn,
        lambda ch: ch.queue_declare(
            name, durable=True, arguments={**QUORUM, "x-overflow": "reject-publish-dlx"}
        ),
    )
    assert err.reply_code == 406
    assert err.reply_text == (
        f"PRECONDITION_FAILED - invalid arg 'x-overflow' for queue '{name}' in "
        "vhost '/': reject-publish-dlx is not supported by quorum queues"
    )


def test_quorum_queue_accepts_reject_publish_and_single_active_consumer(
    conn: BlockingConnection,
) -> None:
    name = unique("qq")
    arguments = {
        **QUORUM, "x-overflow": "reject-publish", "x-max-length": 1,
        "x-single-active-consumer": True,
    }  # fmt: skip
    ch = conn.channel()
    ok = ch.queue_declare(name, durable=True, arguments=arguments).method
    assert (ok.queue, ok.message_count, ok.consumer_count) == (name, 0, 0)
    ch.confirm_delivery()
    ch.basic_publish("", name, b"kept")
    with pytest.raises(pika.exceptions.NackError):
        ch.basic_publish("", name, b"refused")
    assert ch.queue_delete(name).method.message_count == 1


def test_quorum_queue_redeclared_without_type_fails_406(
    conn: BlockingConnection, quorum: str
) -> None:
    err = refused(conn, lambda ch: ch.queue_declare(quorum, durable=True))
    assert err.reply_code == 406
    assert err.reply_text.startswith(
        f"PRECONDITION_FAILED - inequivalent arg 'x-queue-type' for queue "
        f"'{quorum}' in vhost '/'"
    )
    ok = conn.channel().queue_declare(quorum, durable=True, arguments=QUORUM)
    assert ok.method.queue == quorum


# quorum: behaviour


def test_quorum_queue_redelivery_carries_delivery_count(
    conn: BlockingConnection, quorum: str
) -> None:
    ch = conn.channel()
    ch.basic_publish("", quorum, b"m", pika.BasicProperties(headers={"app": "x"}))
    first, props, _ = get(ch, quorum)
    # amqpd adds the header from the first redelivery on; RabbitMQ 3.10's
    # quorum queues also put x-delivery-count 0 on the first delivery
    assert (first.redelivered, props.headers) == (False, {"app": "x"})
    seen = []
    for _ in range(3):
        ch.basic_nack(first.delivery_tag, requeue=True)
        first, props, body = get(ch, quorum)
        seen.append((body, first.redelivered, props.headers))
    ch.basic_ack(first.delivery_tag)
    assert seen == [
        (b"m", True, {"app": "x", "x-delivery-count": 1}),
        (b"m", True, {"app": "x", "x-delivery-count": 2}),
        (b"m", True, {"app": "x", "x-delivery-count": 3}),
    ]


def test_quorum_queue_consumer_sees_delivery_count_after_requeue(
    conn: BlockingConnection, quorum: str
) -> None:
    ch = conn.channel()
    ch.basic_qos(prefetch_count=1)
    got: list[tuple[bool, Any]] = []

    def on_message(c: BlockingChannel, m: Any, p: Any, body: bytes) -> None:
        got.append((m.redelivered, p.headers))
        if len(got) == 1:
            c.basic_reject(m.delivery_tag, requeue=True)
        else:
            c.basic_ack(m.delivery_tag)

    ch.basic_consume(quorum, on_message)
    ch.basic_publish("", quorum, b"m")
    deadline = time.monotonic() + 2.0
    while len(got) < 2 and time.monotonic() < deadline:
        conn.process_data_events(time_limit=0.01)
    assert got == [(False, None), (True, {"x-delivery-count": 1})]


def test_quorum_queue_delivery_limit_dead_letters_with_reason(
    conn: BlockingConnection,
) -> None:
    name, dead = unique("qq"), unique("qq-dead")
    ch = conn.channel()
    ch.queue_declare(dead, auto_delete=True)
    ch.queue_declare(name, durable=True, arguments={
        **QUORUM, "x-delivery-limit": 1, "x-dead-letter-exchange": "",
        "x-dead-letter-routing-key": dead,
    })  # fmt: skip
    ch.basic_publish("", name, b"poison")
    for _ in range(2):
        method, _, _ = get(ch, name)
        ch.basic_nack(method.delivery_tag, requeue=True)
    assert ch.basic_get(name)[0] is None
    method, props, body = get(ch, dead)
    assert body == b"poison"
    assert props.headers["x-first-death-reason"] == "delivery_limit"
    assert props.headers["x-death"][0]["reason"] == "delivery_limit"
    assert "x-delivery-count" not in props.headers
    ch.queue_delete(name)


def test_quorum_queue_and_its_persistent_messages_survive_a_restart(
    tmp_path: Path,
) -> None:
    name = unique("qq")
    with BrokerThread(data_dir=tmp_path) as broker:
        conn = connect(broker)
        ch = conn.channel()
        ch.queue_declare(name, durable=True, arguments=QUORUM)
        ch.confirm_delivery()
        ch.basic_publish("", name, b"kept", pika.BasicProperties(delivery_mode=2))
        conn.close()
    with BrokerThread(data_dir=tmp_path) as broker:
        conn = connect(broker)
        ch = conn.channel()
        ok = ch.queue_declare(name, durable=True, arguments=QUORUM).method
        assert ok.message_count == 1
        _, _, body = get(ch, name)
        assert body == b"kept"
        conn.close()


# other types


def test_stream_queue_is_refused_406(conn: BlockingConnection) -> None:
    name = unique("stream")
    err = refused(
        conn,
        lambda ch: ch.queue_declare(
            name, durable=True, arguments={"x-queue-type": "stream"}
        ),
    )
    assert err.reply_code == 406
    assert err.reply_text == (
        f"PRECONDITION_FAILED - invalid arg 'x-queue-type' for queue '{name}' in "
        "vhost '/': stream queues are not supported by this broker yet; declare "
        "a classic or quorum queue"
    )
    assert not exists(conn, name)


def test_unknown_queue_type_is_refused_406(conn: BlockingConnection) -> None:
    name = unique("bogus")
    err = refused(
        conn,
        lambda ch: ch.queue_declare(name, arguments={"x-queue-type": "bogus"}),
    )
    assert err.reply_code == 406
    assert err.reply_text == (
        f"PRECONDITION_FAILED - invalid arg 'x-queue-type' for queue '{name}' in "
        "vhost '/': unknown queue type 'bogus'"
    )
    assert not exists(conn, name)


@pytest.mark.parametrize("mode", ["default", "lazy"])
def test_classic_queue_accepts_a_queue_mode(
    conn: BlockingConnection, mode: str
) -> None:
    name = unique("mode")
    ch = conn.channel()
    ch.queue_declare(name, arguments={"x-queue-mode": mode})
    assert exists(conn, name)


def test_unknown_queue_mode_is_refused_406_as_rabbitmq_does(
    conn: BlockingConnection,
) -> None:
    name = unique("mode")
    err = refused(
        conn, lambda ch: ch.queue_declare(name, arguments={"x-queue-mode": "bogus"})
    )
    assert err.reply_code == 406
    # RabbitMQ 3.10.8's text, quotes included
    assert err.reply_text == (
        f"PRECONDITION_FAILED - invalid arg 'x-queue-mode' for queue '{name}' in "
        "vhost '/': \"unsupported queue mode 'bogus'\""
    )
    assert not exists(conn, name)


# RabbitMQ 3.10's replies to bad queue arguments, word for word (from a
# probe of a real RabbitMQ 3.10.8; value_too_large, unacceptable_type and
# invalid_overflow from its argument checks' source)
@pytest.mark.parametrize(
    ("arguments", "key", "term"),
    [
        ({"x-max-priority": 256}, "x-max-priority", "{max_value_exceeded,256}"),
        ({"x-max-priority": -1}, "x-max-priority", "{value_negative,-1}"),
        ({"x-message-ttl": "60"}, "x-message-ttl", '"expected integer, got longstr"'),
        ({"x-message-ttl": 2**32}, "x-message-ttl", "{value_too_large,4294967296}"),
        ({"x-max-length": -1}, "x-max-length", "{value_negative,-1}"),
        ({"x-max-length-bytes": -2}, "x-max-length-bytes", "{value_negative,-2}"),
        ({"x-expires": 0}, "x-expires", "{value_zero,0}"),
        ({"x-expires": -3}, "x-expires", "{value_negative,-3}"),
        ({"x-dead-letter-routing-key": "k"}, "x-dead-letter-routing-key",
         "routing_key_but_no_dlx_defined"),
        ({"x-dead-letter-exchange": 5}, "x-dead-letter-exchange",
         "{unacceptable_type,signedint}"),
        ({"x-overflow": "drop-tail"}, "x-overflow", "invalid_overflow"),
    ],
)  # fmt: skip
def test_bad_queue_argument_gets_rabbitmqs_406_text(
    conn: BlockingConnection, arguments: dict[str, Any], key: str, term: str
) -> None:
    name = unique("badarg")
    err = refused(conn, lambda ch: ch.queue_declare(name, arguments=arguments))
    assert err.reply_code == 406
    assert err.reply_text == (
        f"PRECONDITION_FAILED - invalid arg '{key}' for queue '{name}' in "
        f"vhost '/': {term}"
    )
    assert not exists(conn, name)
