"""The broker-wide budget of message bodies held in memory: past it, bodies
go to the journal (persistent messages only durable queues hold) or to the
scratch file (all others), and come back for delivery."""

from __future__ import annotations

import os
from pathlib import Path

import pika
import pytest
from pika.adapters.blocking_connection import BlockingChannel

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


# persistent bodies: read back from the journal

PERSISTENT = pika.BasicProperties(delivery_mode=2)


def _pager(broker: BrokerThread) -> dict[str, int]:
    pager = broker.broker.node.pager if broker.broker else None
    assert pager is not None
    return broker.call(lambda: {
        "in_memory": pager.in_memory,
        "scratch": pager.paged,
        "scratch_messages": pager.paged_messages,
        "journal": pager.journal_paged,
        "journal_messages": pager.journal_paged_messages,
        "awaiting": pager.awaiting_fsync,
    })  # fmt: skip


def _scratch_bytes(broker: BrokerThread) -> int:
    scratch = broker.data_dir / "scratch"
    return sum(f.stat().st_size for f in scratch.iterdir())


def _drain(ch: BlockingChannel, queue: str, count: int) -> list[bytes]:
    ch.basic_qos(prefetch_count=100)
    received: list[bytes] = []
    for method, _props, body in ch.consume(queue, inactivity_timeout=5):
        assert method is not None, f"deliveries from {queue} stopped"
        received.append(body)
        ch.basic_ack(method.delivery_tag)
        if len(received) == count:
            break
    ch.cancel()
    return received


ALL_ZERO = {
    "in_memory": 0, "scratch": 0, "scratch_messages": 0,
    "journal": 0, "journal_messages": 0, "awaiting": 0,
}  # fmt: skip


def test_persistent_bodies_past_the_budget_come_back_from_the_journal() -> None:
    with BrokerThread(message_memory_budget=BUDGET) as broker:
        conn = pika.BlockingConnection(pika.URLParameters(broker.url))
        ch = conn.channel()
        ch.queue_declare("deep", durable=True)
        ch.confirm_delivery()
        count = 2000
        peak = 0
        for i in range(count):
            ch.basic_publish("", "deep", _body(i), PERSISTENT)
            if i % 250 == 0:
                peak = max(peak, _pager(broker)["in_memory"])
        # every confirm came after its fsync: nothing waits for one now
        acc = _pager(broker)
        assert max(peak, acc["in_memory"]) <= BUDGET
        assert acc["awaiting"] == 0
        assert acc["scratch"] == acc["scratch_messages"] == 0
        assert _scratch_bytes(broker) == 0  # not written twice
        assert acc["journal_messages"] >= count - BUDGET // BODY
        assert acc["in_memory"] + acc["journal"] == count * BODY

        assert _drain(ch, "deep", count) == [_body(i) for i in range(count)]
        assert _pager(broker) == ALL_ZERO
        conn.close()


def test_only_bodies_that_durable_queues_alone_hold_go_to_the_journal() -> None:
    with BrokerThread(message_memory_budget=BUDGET) as broker:
        conn = pika.BlockingConnection(pika.URLParameters(broker.url))
        ch = conn.channel()
        ch.confirm_delivery()
        ch.queue_declare("filler", durable=True)
        for i in range(BUDGET // BODY + 10):  # the budget is used up
            ch.basic_publish("", "filler", _body(i), PERSISTENT)
        ch.exchange_declare("both", "fanout", durable=True)
        ch.exchange_declare("durables", "fanout", durable=True)
        ch.queue_declare("durable-1", durable=True)
        ch.queue_declare("durable-2", durable=True)
        ch.queue_declare("transient", durable=False)
        ch.queue_bind("durable-1", "both")
        ch.queue_bind("transient", "both")
        ch.queue_bind("durable-1", "durables")
        ch.queue_bind("durable-2", "durables")
        before = _pager(broker)

        # a persistent message that a transient queue holds too: scratch,
        # since the journal lets go of it when the durable queue acks it
        for i in range(10):
            ch.basic_publish("both", "", _body(1000 + i), PERSISTENT)
        mixed = _pager(broker)
        assert mixed["scratch_messages"] - before["scratch_messages"] == 10
        # transient messages to a durable queue: scratch
        for i in range(10):
            ch.basic_publish("", "durable-2", _body(2000 + i))
        transient = _pager(broker)
        assert transient["scratch_messages"] - mixed["scratch_messages"] == 10
        # persistent messages to two durable queues: journal, once each
        for i in range(10):
            ch.basic_publish("durables", "", _body(3000 + i), PERSISTENT)
        durable = _pager(broker)
        assert durable["journal_messages"] - transient["journal_messages"] == 10
        assert durable["scratch_messages"] == transient["scratch_messages"]

        # the durable queue acks first; the transient queue still reads it
        both = [_body(1000 + i) for i in range(10)]
        assert _drain(ch, "durable-1", 20) == both + [
            _body(3000 + i) for i in range(10)
        ]
        assert _drain(ch, "transient", 10) == both
        assert _drain(ch, "durable-2", 20) == [_body(2000 + i) for i in range(10)] + [
            _body(3000 + i) for i in range(10)
        ]
        assert _drain(ch, "filler", BUDGET // BODY + 10) == [
            _body(i) for i in range(BUDGET // BODY + 10)
        ]
        assert _pager(broker) == ALL_ZERO
        conn.close()


def test_journal_paged_messages_survive_redelivery_and_dead_lettering() -> None:
    with BrokerThread(message_memory_budget=BUDGET) as broker:
        conn = pika.BlockingConnection(pika.URLParameters(broker.url))
        ch = conn.channel()
        ch.confirm_delivery()
        ch.queue_declare("dead", durable=True)
        ch.queue_declare("transient-dead", durable=False)
        ch.queue_declare(
            "work",
            durable=True,
            arguments={
                "x-queue-type": "quorum",  # counts deliveries
                "x-dead-letter-exchange": "",
                "x-dead-letter-routing-key": "dead",
            },
        )
        ch.queue_declare(
            "work-2",
            durable=True,
            arguments={
                "x-dead-letter-exchange": "",
                "x-dead-letter-routing-key": "transient-dead",
            },
        )
        count = 300
        for i in range(count):
            ch.basic_publish("", "work", _body(i), PERSISTENT)
            ch.basic_publish("", "work-2", _body(i), PERSISTENT)
        assert _pager(broker)["journal_messages"] > count

        # requeued once: the redelivery carries x-delivery-count, same body
        tags = [ch.basic_get("work")[0].delivery_tag for _ in range(count)]
        ch.basic_nack(tags[-1], multiple=True, requeue=True)
        for i in range(count):
            method, props, body = ch.basic_get("work")
            assert method is not None and method.redelivered and body == _body(i)
            assert props.headers["x-delivery-count"] == 1
            # rejected: dead-lettered to a durable queue (journaled again)
            ch.basic_reject(method.delivery_tag, requeue=False)
        for i in range(count):
            method, _props, body = ch.basic_get("work-2")
            assert method is not None and body == _body(i)
            # dead-lettered to a transient queue: the copy keeps its body
            ch.basic_reject(method.delivery_tag, requeue=False)
        for i in range(count):
            method, props, body = ch.basic_get("dead", auto_ack=True)
            assert method is not None and body == _body(i)
            assert props.headers["x-death"][0]["reason"] == "rejected"
        assert _drain(ch, "transient-dead", count) == [_body(i) for i in range(count)]
        assert _pager(broker) == ALL_ZERO
        conn.close()


def _key(tmp_path: Path) -> Path:
    key = tmp_path / "k1.key"
    key.write_bytes(os.urandom(32))
    return key


def test_bodies_come_back_from_a_compacted_encrypted_journal_after_a_restart(
    tmp_path: Path,
) -> None:
    options = {
        "data_dir": tmp_path / "data",
        "message_memory_budget": BUDGET,
        "journal_segment_size": 64 * 1024,
        "journal_keys": [f"k1={_key(tmp_path)}"],
    }
    count = 1500
    with BrokerThread(**options) as broker:
        conn = pika.BlockingConnection(pika.URLParameters(broker.url))
        ch = conn.channel()
        ch.confirm_delivery()
        ch.queue_declare("gone", durable=True)
        ch.queue_declare("kept", durable=True)
        for i in range(count):  # interleaved: acking "gone" leaves holes
            ch.basic_publish("", "gone", _body(i), PERSISTENT)
            ch.basic_publish("", "kept", _body(i), PERSISTENT)
        assert _drain(ch, "gone", count) == [_body(i) for i in range(count)]
        journal = broker.call(lambda: broker.broker.journal.statistics())  # type: ignore[union-attr]
        assert journal.compactions > 0
        # half of "kept" read back from the compacted segments now
        assert _drain(ch, "kept", count // 2) == [_body(i) for i in range(count // 2)]
        conn.close()

    with BrokerThread(**options) as broker:
        acc = _pager(broker)
        assert acc["in_memory"] <= BUDGET
        assert acc["journal_messages"] >= count // 2 - BUDGET // BODY
        assert acc["scratch_messages"] == 0
        conn = pika.BlockingConnection(pika.URLParameters(broker.url))
        ch = conn.channel()
        rest = _drain(ch, "kept", count - count // 2)
        assert rest == [_body(i) for i in range(count // 2, count)]
        assert _pager(broker) == ALL_ZERO
        conn.close()


def _damage_body(data_dir: Path, marker: bytes) -> None:
    """Flip one byte inside the journal record that holds ``marker``."""
    for segment in sorted((data_dir / "journal").glob("*.seg")):
        raw = segment.read_bytes()
        at = raw.find(marker)
        if at >= 0:
            with open(segment, "r+b") as file:
                file.seek(at + len(marker) // 2)
                file.write(b"\xff")
            return
    raise AssertionError("marker not found in the journal")


def test_a_body_damaged_on_disk_is_dropped_and_logged_not_fatal(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # compression off, so the body can be found in the segment
    options = {
        "data_dir": tmp_path / "data",
        "message_memory_budget": BUDGET,
        "journal_compress_threshold": 0,
    }
    count = 300
    damaged = [150, 151, 152]
    with BrokerThread(**options) as broker:
        conn = pika.BlockingConnection(pika.URLParameters(broker.url))
        ch = conn.channel()
        ch.confirm_delivery()
        for name in ("consumed", "got"):
            ch.queue_declare(name, durable=True)
            for i in range(count):
                ch.basic_publish("", name, _body(i), PERSISTENT)
        for i in damaged:
            _damage_body(broker.data_dir, _body(i))
            _damage_body(broker.data_dir, _body(i))  # its copy in "got" too

        with caplog.at_level("ERROR", logger="amqpd.queue"):
            received = _drain(ch, "consumed", count - len(damaged))
            got = []
            while (message := ch.basic_get("got", auto_ack=True))[0] is not None:
                got.append(message[2])
        expected = [_body(i) for i in range(count) if i not in damaged]
        assert received == expected and got == expected
        assert ch.is_open and conn.is_open
        assert ch.queue_declare("consumed", passive=True).method.message_count == 0
        lost = [r for r in caplog.records if "cannot be read back" in r.message]
        assert len(lost) == 2 * len(damaged)
        assert "fails its checksum" in lost[0].message
        conn.close()
