"""The shortest path a new user takes: connect, publish, consume, ack."""

from __future__ import annotations

import aio_pika
import pika

from amqpd.testing import BrokerThread


def test_pika_publish_get_and_consume(amqpd_broker: BrokerThread) -> None:
    conn = pika.BlockingConnection(pika.URLParameters(amqpd_broker.url))
    ch = conn.channel()
    queue = ch.queue_declare("", exclusive=True).method.queue
    ch.basic_publish("", queue, b"hello")
    method, _props, body = ch.basic_get(queue, auto_ack=True)
    assert body == b"hello" and method.message_count == 0
    conn.close()


async def test_aio_pika_round_trip(amqpd_broker: BrokerThread) -> None:
    conn = await aio_pika.connect(amqpd_broker.url)
    async with conn:
        ch = await conn.channel()
        queue = await ch.declare_queue("", exclusive=True)
        await ch.default_exchange.publish(aio_pika.Message(b"hi"), queue.name)
        async with queue.iterator() as it:
            async for message in it:
                async with message.process():
                    assert message.body == b"hi"
                break
