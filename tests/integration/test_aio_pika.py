"""The same broker through aio-pika (aiormq underneath): publish, consume,
acks, confirms, qos, get, requeue, exclusive queues and topic routing.
"""

from __future__ import annotations

import asyncio
import datetime
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from decimal import Decimal
from typing import Any

import aio_pika
import aiormq
import pytest
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractQueue

from amqpd.testing import BrokerThread

# a module mark (rather than the one conftest adds after collection) makes
# anyio parametrize every test over the asyncio and uvloop backends
pytestmark = pytest.mark.anyio

WAIT = 5.0


@asynccontextmanager
async def channel(
    broker: BrokerThread, *, confirms: bool = True
) -> AsyncIterator[AbstractChannel]:
    conn = await aio_pika.connect(broker.url)
    async with conn:
        yield await conn.channel(publisher_confirms=confirms, on_return_raises=True)


async def publish(ch: AbstractChannel, routing_key: str, *bodies: bytes) -> None:
    for body in bodies:
        await ch.default_exchange.publish(aio_pika.Message(body), routing_key)


class Inbox:
    """Collects deliveries of a consumer; ``take`` waits for the next ones."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[AbstractIncomingMessage] = asyncio.Queue()

    async def __call__(self, message: AbstractIncomingMessage) -> None:
        await self.queue.put(message)

    async def take(self, count: int) -> list[AbstractIncomingMessage]:
        return [await asyncio.wait_for(self.queue.get(), WAIT) for _ in range(count)]


async def ready_count(ch: AbstractChannel, queue: AbstractQueue) -> int:
    declared = await ch.declare_queue(queue.name, passive=True)
    assert declared.declaration_result.message_count is not None
    return declared.declaration_result.message_count


async def test_publish_consume_and_ack(amqpd_session_broker: BrokerThread) -> None:
    async with channel(amqpd_session_broker) as ch:
        queue = await ch.declare_queue("", exclusive=True)
        await publish(ch, queue.name, b"1", b"2", b"3")
        inbox = Inbox()
        tag = await queue.consume(inbox)
        got = await inbox.take(3)
        for message in got:
            await message.ack()
        await queue.cancel(tag)

        assert [m.body for m in got] == [b"1", b"2", b"3"]
        assert [m.delivery_tag for m in got] == [1, 2, 3]
        assert not any(m.redelivered for m in got)
        assert {m.consumer_tag for m in got} == {tag}
        assert tag.startswith("ctag")  # aiormq names its consumers itself
        assert await ready_count(ch, queue) == 0


async def test_properties_and_headers_round_trip(
    amqpd_session_broker: BrokerThread,
) -> None:
    headers: dict[str, Any] = {
        "str": "wörld", "int": -5, "big": 2**40, "float": 2.5, "bool": True,
        "list": [1, "a", 1.25], "dict": {"x": {"y": "z"}},
        "bytes": bytearray(b"\x00\xff"), "decimal": Decimal("1.23"), "none": None,
    }  # fmt: skip
    stamp = datetime.datetime(2024, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)
    async with channel(amqpd_session_broker) as ch:
        queue = await ch.declare_queue("", exclusive=True)
        await ch.default_exchange.publish(
            aio_pika.Message(
                b"{}",
                headers=headers,
                content_type="application/json",
                content_encoding="utf-8",
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                priority=4,
                correlation_id="cid",
                reply_to="rq",
                expiration=60,
                message_id="mid",
                timestamp=stamp,
                type="kind",
                user_id="guest",
                app_id="app",
            ),
            queue.name,
        )
        message = await queue.get(no_ack=True)

    assert message.body == b"{}"
    got = dict(message.headers)
    assert got["float"] == 2.5 and got["list"] == [1, "a", 1.25]
    assert got == headers
    assert (message.content_type, message.content_encoding) == (
        "application/json", "utf-8",
    )  # fmt: skip
    assert message.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
    assert (message.priority, message.correlation_id, message.reply_to) == (
        4, "cid", "rq",
    )  # fmt: skip
    assert (message.message_id, message.type, message.user_id) == (
        "mid", "kind", "guest",
    )  # fmt: skip
    assert message.timestamp == stamp and message.app_id == "app"
    assert message.expiration == 60


async def test_publisher_confirms_ack_and_return_unroutable(
    amqpd_session_broker: BrokerThread,
) -> None:
    async with channel(amqpd_session_broker) as ch:
        queue = await ch.declare_queue("", exclusive=True)
        confirmation = await ch.default_exchange.publish(
            aio_pika.Message(b"ok"), queue.name
        )
        assert isinstance(confirmation, aiormq.spec.Basic.Ack)
        assert confirmation.delivery_tag == 1

        with pytest.raises(aiormq.exceptions.PublishError) as info:
            await ch.default_exchange.publish(
                aio_pika.Message(b"lost"), "no-such-queue-here", mandatory=True
            )
        returned = info.value.message.delivery
        assert (returned.reply_code, returned.reply_text) == (312, "NO_ROUTE")
        assert info.value.message.body == b"lost"

        confirmations = await asyncio.gather(*(
            ch.default_exchange.publish(aio_pika.Message(b"%d" % i), queue.name)
            for i in range(50)
        ))  # fmt: skip
        assert all(isinstance(c, aiormq.spec.Basic.Ack) for c in confirmations)
        assert await ready_count(ch, queue) == 51


async def test_qos_prefetch_holds_back_until_ack(
    amqpd_session_broker: BrokerThread,
) -> None:
    async with channel(amqpd_session_broker) as ch:
        await ch.set_qos(prefetch_count=2)
        queue = await ch.declare_queue("", exclusive=True)
        await publish(ch, queue.name, *(b"%d" % i for i in range(1, 6)))
        inbox = Inbox()
        await queue.consume(inbox)
        first = await inbox.take(2)
        assert await ready_count(ch, queue) == 3
        assert inbox.queue.empty()

        await first[0].ack()
        (third,) = await inbox.take(1)
        assert await ready_count(ch, queue) == 2

    assert [m.body for m in first] == [b"1", b"2"]
    assert third.body == b"3"


async def test_get_returns_message_count_and_none_when_empty(
    amqpd_session_broker: BrokerThread,
) -> None:
    async with channel(amqpd_session_broker) as ch:
        queue = await ch.declare_queue("", exclusive=True)
        await publish(ch, queue.name, b"a", b"b")
        first = await queue.get()
        second = await queue.get(no_ack=True)
        empty = await queue.get(fail=False)
        await first.ack()
        with pytest.raises(aio_pika.exceptions.QueueEmpty):
            await queue.get()

    assert (first.body, first.message_count, first.delivery_tag) == (b"a", 1, 1)
    assert (second.body, second.message_count) == (b"b", 0)
    assert empty is None


async def test_nack_with_requeue_redelivers_in_original_place(
    amqpd_session_broker: BrokerThread,
) -> None:
    async with channel(amqpd_session_broker) as ch:
        queue = await ch.declare_queue("", exclusive=True)
        await publish(ch, queue.name, b"1", b"2", b"3")
        taken = [await queue.get() for _ in range(2)]
        await taken[1].nack(requeue=True)
        await taken[0].reject(requeue=True)
        await publish(ch, queue.name, b"4")
        again = [await queue.get(no_ack=True) for _ in range(4)]

    assert [(m.body, m.redelivered) for m in again] == [
        (b"1", True), (b"2", True), (b"3", False), (b"4", False),
    ]  # fmt: skip


async def test_nack_without_requeue_drops_message(
    amqpd_session_broker: BrokerThread,
) -> None:
    async with channel(amqpd_session_broker) as ch:
        queue = await ch.declare_queue("", exclusive=True)
        await publish(ch, queue.name, b"gone", b"kept")
        message = await queue.get()
        await message.nack(requeue=False)
        rest = await queue.get(no_ack=True)

        assert rest.body == b"kept" and rest.message_count == 0
        assert await queue.get(fail=False) is None


async def test_exclusive_queue_is_locked_to_its_connection(
    amqpd_session_broker: BrokerThread,
) -> None:
    async with channel(amqpd_session_broker) as owner:
        queue = await owner.declare_queue(f"excl-{uuid.uuid4().hex}", exclusive=True)
        async with channel(amqpd_session_broker) as other:
            with pytest.raises(aiormq.exceptions.ChannelLockedResource) as info:
                await other.declare_queue(queue.name, passive=True)
        assert "RESOURCE_LOCKED" in str(info.value)
        assert queue.name in str(info.value)
        name = queue.name

    # closing the owner's connection deleted the queue
    async with channel(amqpd_session_broker) as ch:
        with pytest.raises(aiormq.exceptions.ChannelNotFoundEntity):
            await ch.declare_queue(name, passive=True)


async def test_topic_exchange_routes_by_pattern(
    amqpd_session_broker: BrokerThread,
) -> None:
    async with channel(amqpd_session_broker) as ch:
        exchange = await ch.declare_exchange(
            f"topic-{uuid.uuid4().hex}", aio_pika.ExchangeType.TOPIC, auto_delete=True
        )
        star = await ch.declare_queue("", exclusive=True)
        hash_ = await ch.declare_queue("", exclusive=True)
        await star.bind(exchange, "stock.*.nyse")
        await hash_.bind(exchange, "stock.#")
        for key in ("stock.ibm.nyse", "stock.nyse", "stock.a.b.nyse", "bond.x.nyse"):
            # aio-pika publishes mandatory by default; bond.x.nyse routes nowhere
            await exchange.publish(aio_pika.Message(key.encode()), key, mandatory=False)

        async def bodies(queue: AbstractQueue) -> list[bytes]:
            out = []
            while (message := await queue.get(no_ack=True, fail=False)) is not None:
                out.append(message.body)
            return out

        assert await bodies(star) == [b"stock.ibm.nyse"]
        assert await bodies(hash_) == [
            b"stock.ibm.nyse", b"stock.nyse", b"stock.a.b.nyse",
        ]  # fmt: skip
        await star.unbind(exchange, "stock.*.nyse")
        await exchange.publish(aio_pika.Message(b"late"), "stock.ibm.nyse")
        assert await bodies(star) == []
        assert await bodies(hash_) == [b"late"]
        await exchange.delete()


async def test_unacked_messages_return_when_channel_closes(
    amqpd_session_broker: BrokerThread,
) -> None:
    conn = await aio_pika.connect(amqpd_session_broker.url)
    async with conn:
        keeper = await conn.channel()
        queue = await keeper.declare_queue("", exclusive=True)
        await publish(keeper, queue.name, b"1", b"2")
        consumer_ch = await conn.channel()
        consumer_queue = await consumer_ch.get_queue(queue.name)
        inbox = Inbox()
        await consumer_queue.consume(inbox)
        await inbox.take(2)
        await consumer_ch.close()
        again = [await queue.get(no_ack=True) for _ in range(2)]

    assert [(m.body, m.redelivered) for m in again] == [(b"1", True), (b"2", True)]
