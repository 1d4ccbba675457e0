"""The broker-wide budget of message bodies held in memory: past it, bodies
go to the scratch file and come back for delivery."""

from __future__ import annotations

import pika

from amqpd.testing import BrokerThread

BUDGET = 64 * 1024
BODY = 1000


def _body(i: int) -> bytes:
    return (b"%08d" % i) * (BODY // 8)


def _accounting(broker: BrokerThread) -> tuple[int, int, int]:
    pager = broker.broker.node.pager if broker.broker else None
    assert pager is not None
    return broker.call(lambda: (pager.in_memory, pager.paged, pager.paged_messages))


def test_queue_filled_far_past_the_budget_stays_under_it_and_delivers_all() -> None:
    with BrokerThread(message_memory_budget=BUDGET) as broker:
        conn = pika.BlockingConnection(pika.URLParameters(broker.url))
        ch = conn.channel()
        ch.queue_declare("deep")
        ch.confirm_delivery()
        count = 2000  # 2 MB of bodies: 30 times the budget
        peak = 0
        for i in range(count):
            ch.basic_publish("", "deep", _body(i))
            if i % 250 == 0:
                peak = max(peak, _accounting(broker)[0])
        in_memory, paged, paged_messages = _accounting(broker)
        assert max(peak, in_memory) <= BUDGET
        assert in_memory + paged == count * BODY
        assert paged_messages >= count - BUDGET // BODY

        ch.basic_qos(prefetch_count=100)
        received: list[bytes] = []
        for method, _props, body in ch.consume("deep", inactivity_timeout=5):
            assert method is not None, "deliveries stopped"
            received.append(body)
            ch.basic_ack(method.delivery_tag)
            if len(received) == count:
                break
        ch.cancel()
        assert received == [_body(i) for i in range(count)]
        assert _accounting(broker) == (0, 0, 0)
        conn.close()


def test_paged_messages_survive_requeue_dead_lettering_and_fanout() -> None:
    with BrokerThread(message_memory_budget=BUDGET) as broker:
        conn = pika.BlockingConnection(pika.URLParameters(broker.url))
        ch = conn.channel()
        ch.exchange_declare("fan", "fanout")
        ch.queue_declare("dead")
        for name in ("a", "b"):
            ch.queue_declare(
                name,
                arguments={
                    "x-dead-letter-exchange": "",
                    "x-dead-letter-routing-key": "dead",
                },
            )
            ch.queue_bind(name, "fan")
        ch.confirm_delivery()
        count = 300  # 300 kB through two queues: paged from early on
        for i in range(count):
            ch.basic_publish("fan", "", _body(i))
        assert _accounting(broker)[2] > 0

        # queue a: every message requeued once, then acked
        tags = [ch.basic_get("a")[0].delivery_tag for _ in range(count)]
        ch.basic_nack(tags[-1], multiple=True, requeue=True)
        for i in range(count):
            method, _props, body = ch.basic_get("a")
            assert method is not None and method.redelivered and body == _body(i)
            ch.basic_ack(method.delivery_tag)
        # queue b: every message rejected into the dead-letter queue
        for i in range(count):
            method, _props, body = ch.basic_get("b")
            assert method is not None and body == _body(i)
            ch.basic_reject(method.delivery_tag, requeue=False)
        for i in range(count):
            method, props, body = ch.basic_get("dead", auto_ack=True)
            assert method is not None and body == _body(i)
            assert props.headers["x-death"][0]["reason"] == "rejected"
        assert _accounting(broker) == (0, 0, 0)
        conn.close()
