"""Queue length limits as pika clients see them: x-max-length and
x-max-length-bytes, with each x-overflow behaviour.

Limits count ready messages and their body bytes; unacked messages do not
count. drop-head (the default) drops the oldest ready message and
dead-letters it with reason maxlen; reject-publish refuses the new message
(basic.nack under publisher confirms, silence without); reject-publish-dlx
refuses it and dead-letters it too. Checked against RabbitMQ 3.10.
"""

from __future__ import annotations

import datetime
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pika
import pytest
from pika.adapters.blocking_connection import BlockingChannel, BlockingConnection
from pika.compat import long
from pika.exceptions import NackError

from amqpd.testing import BrokerThread

DECLARED: list[tuple[str, str]] = []  # (kind, name), deleted after each test


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def conn(amqpd_session_broker: BrokerThread) -> Iterator[BlockingConnection]:
    connection = pika.BlockingConnection(pika.URLParameters(amqpd_session_broker.url))
    yield connection
    if connection.is_open:
        cleanup = connection.channel()
        for kind, name in DECLARED:
            if kind == "queue":
                cleanup.queue_delete(name)
            else:
                cleanup.exchange_delete(name)
        connection.close()
    DECLARED.clear()


@pytest.fixture
def ch(conn: BlockingConnection) -> BlockingChannel:
    channel = conn.channel()
    channel.confirm_delivery()
    return channel


def declare(ch: BlockingChannel, prefix: str, **arguments: Any) -> str:
    name = unique(prefix)
    ch.queue_declare(name, arguments=arguments)
    DECLARED.append(("queue", name))
    return name


def with_dlq(ch: BlockingChannel, prefix: str, **arguments: Any) -> tuple[str, str]:
    dlq = declare(ch, prefix + "-dlq")
    arguments.update({"x-dead-letter-exchange": "", "x-dead-letter-routing-key": dlq})
    return declare(ch, prefix, **arguments), dlq


def drain(ch: BlockingChannel, queue: str) -> list[bytes]:
    bodies: list[bytes] = []
    for _ in range(100):
        method, _props, body = ch.basic_get(queue, auto_ack=True)
        if method is None:
            return bodies
        bodies.append(body)
    raise AssertionError("more than 100 messages")


def drain_deaths(ch: BlockingChannel, dlq: str) -> list[tuple[bytes, dict[str, Any]]]:
    """(body, the one x-death entry without its time) of each message."""
    out: list[tuple[bytes, dict[str, Any]]] = []
    for _ in range(100):
        method, props, body = ch.basic_get(dlq, auto_ack=True)
        if method is None:
            return out
        (death,) = props.headers["x-death"]
        death = dict(death)
        assert isinstance(death.pop("time"), datetime.datetime)
        assert type(death["count"]) is long
        out.append((body, death))
    raise AssertionError("more than 100 messages")


def maxlen_death(queue: str) -> dict[str, Any]:
    return {"count": 1, "reason": "maxlen", "queue": queue, "exchange": "",
            "routing-keys": [queue]}  # fmt: skip


def ready(ch: BlockingChannel, queue: str) -> int:
    count: int = ch.queue_declare(queue, passive=True).method.message_count
    return count


# drop-head


@pytest.mark.parametrize("overflow", [None, "drop-head"], ids=["default", "explicit"])
def test_drop_head_drops_the_oldest_and_dead_letters_it(
    ch: BlockingChannel, overflow: str | None
) -> None:
    arguments: dict[str, Any] = {"x-max-length": 3}
    if overflow is not None:
        arguments["x-overflow"] = overflow
    queue, dlq = with_dlq(ch, "maxlen", **arguments)
    for i in range(1, 6):
        ch.basic_publish("", queue, b"m%d" % i)

    assert drain(ch, queue) == [b"m3", b"m4", b"m5"]
    assert drain_deaths(ch, dlq) == [
        (b"m1", maxlen_death(queue)), (b"m2", maxlen_death(queue)),
    ]  # fmt: skip


def test_unacked_messages_do_not_count_toward_max_length(
    conn: BlockingConnection, ch: BlockingChannel
) -> None:
    queue, dlq = with_dlq(ch, "maxlen", **{"x-max-length": 2})
    ch.basic_publish("", queue, b"m1")
    getter = conn.channel()
    held = getter.basic_get(queue)[0]
    assert held is not None
    ch.basic_publish("", queue, b"m2")
    ch.basic_publish("", queue, b"m3")
    assert ready(ch, queue) == 2
    assert drain(ch, dlq) == []

    ch.basic_publish("", queue, b"m4")
    assert drain(ch, dlq) == [b"m2"]
    getter.basic_ack(held.delivery_tag)
    assert drain(ch, queue) == [b"m3", b"m4"]


def test_requeue_over_max_length_drops_the_head(
    conn: BlockingConnection, ch: BlockingChannel
) -> None:
    queue, dlq = with_dlq(ch, "maxlen", **{"x-max-length": 2})
    ch.basic_publish("", queue, b"m1")
    getter = conn.channel()
    held = getter.basic_get(queue)[0]
    ch.basic_publish("", queue, b"m2")
    ch.basic_publish("", queue, b"m3")

    # m1 comes back to its place at the head, one too many: it goes
    getter.basic_nack(held.delivery_tag, requeue=True)
    assert ready(getter, queue) == 2  # asked after the nack, on its channel
    assert drain(ch, queue) == [b"m2", b"m3"]
    assert drain_deaths(ch, dlq) == [(b"m1", maxlen_death(queue))]


def test_max_length_bytes_counts_body_bytes_only(ch: BlockingChannel) -> None:
    queue, dlq = with_dlq(ch, "maxbytes", **{"x-max-length-bytes": 25})
    big_header = pika.BasicProperties(headers={"pad": "x" * 1000})
    ch.basic_publish("", queue, b"a" * 10, big_header)
    ch.basic_publish("", queue, b"b" * 10, big_header)
    assert ready(ch, queue) == 2

    ch.basic_publish("", queue, b"c" * 10)  # 30 bytes > 25: the oldest goes
    assert drain(ch, queue) == [b"b" * 10, b"c" * 10]
    assert drain_deaths(ch, dlq) == [(b"a" * 10, maxlen_death(queue))]


def test_message_over_max_length_bytes_alone_is_dropped(ch: BlockingChannel) -> None:
    queue, dlq = with_dlq(ch, "maxbytes", **{"x-max-length-bytes": 5})
    ch.basic_publish("", queue, b"0123456789")
    ch.basic_publish("", queue, b"abc")

    assert drain(ch, queue) == [b"abc"]
    assert drain(ch, dlq) == [b"0123456789"]


def test_max_length_zero_drops_every_message(ch: BlockingChannel) -> None:
    queue, dlq = with_dlq(ch, "maxlen0", **{"x-max-length": 0})
    ch.basic_publish("", queue, b"m1")
    ch.basic_publish("", queue, b"m2")

    assert ready(ch, queue) == 0
    assert drain(ch, dlq) == [b"m1", b"m2"]


# reject-publish and reject-publish-dlx


def test_reject_publish_nacks_the_new_message_under_confirms(
    ch: BlockingChannel,
) -> None:
    queue, dlq = with_dlq(
        ch, "reject", **{"x-max-length": 2, "x-overflow": "reject-publish"}
    )
    ch.basic_publish("", queue, b"m1")
    ch.basic_publish("", queue, b"m2")
    with pytest.raises(NackError):
        ch.basic_publish("", queue, b"m3")

    assert drain(ch, queue) == [b"m1", b"m2"]
    assert drain(ch, dlq) == []  # reject-publish does not dead-letter


def test_reject_publish_without_confirms_drops_silently(
    conn: BlockingConnection, ch: BlockingChannel
) -> None:
    queue = declare(ch, "reject", **{"x-max-length": 1, "x-overflow": "reject-publish"})
    plain = conn.channel()
    plain.basic_publish("", queue, b"m1")
    plain.basic_publish("", queue, b"m2")

    # without confirms nothing says when the publishes arrived: look twice
    deadline = time.monotonic() + 2.0
    while ready(plain, queue) == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.1)
    assert ready(plain, queue) == 1
    assert plain.is_open
    assert drain(ch, queue) == [b"m1"]


def test_reject_publish_accepts_again_once_there_is_room(ch: BlockingChannel) -> None:
    queue = declare(ch, "reject", **{"x-max-length": 1, "x-overflow": "reject-publish"})
    ch.basic_publish("", queue, b"m1")
    with pytest.raises(NackError):
        ch.basic_publish("", queue, b"m2")
    assert drain(ch, queue) == [b"m1"]

    ch.basic_publish("", queue, b"m3")
    assert drain(ch, queue) == [b"m3"]


def test_reject_publish_by_bytes(ch: BlockingChannel) -> None:
    queue = declare(
        ch, "reject", **{"x-max-length-bytes": 5, "x-overflow": "reject-publish"}
    )
    with pytest.raises(NackError):
        ch.basic_publish("", queue, b"0123456789")
    ch.basic_publish("", queue, b"abc")
    ch.basic_publish("", queue, b"de")
    with pytest.raises(NackError):
        ch.basic_publish("", queue, b"f")

    assert drain(ch, queue) == [b"abc", b"de"]


def test_reject_publish_dlx_nacks_and_dead_letters(ch: BlockingChannel) -> None:
    queue, dlq = with_dlq(
        ch, "reject-dlx", **{"x-max-length": 1, "x-overflow": "reject-publish-dlx"}
    )
    ch.basic_publish("", queue, b"m1")
    with pytest.raises(NackError):
        ch.basic_publish("", queue, b"m2")

    assert drain(ch, queue) == [b"m1"]
    assert drain_deaths(ch, dlq) == [(b"m2", maxlen_death(queue))]


def test_publish_refused_by_one_of_two_queues_is_nacked_and_kept_by_the_other(
    ch: BlockingChannel,
) -> None:
    fanout = unique("fan")
    ch.exchange_declare(fanout, "fanout")
    DECLARED.append(("exchange", fanout))
    full = declare(ch, "full", **{"x-max-length": 0, "x-overflow": "reject-publish"})
    roomy = declare(ch, "roomy")
    ch.queue_bind(full, fanout)
    ch.queue_bind(roomy, fanout)

    with pytest.raises(NackError):
        ch.basic_publish(fanout, "", b"m")
    assert drain(ch, roomy) == [b"m"]
    assert ready(ch, full) == 0
