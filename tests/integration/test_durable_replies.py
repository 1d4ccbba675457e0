"""A declare-ok, bind-ok, delete-ok or purge-ok promises a stored change: a
kill -9 right after the reply keeps it."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pika
import pytest
from amqp_wire import RawClient, method_frame
from pamqp import commands as spec
from pamqp import frame
from pamqp.body import ContentBody
from pamqp.header import ContentHeader

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools"))
from crashloop import BrokerProcess, abandon, connect


@contextmanager
def _broker(data_dir: Path) -> Iterator[tuple[BrokerProcess, int]]:
    broker = BrokerProcess(data_dir)
    try:
        yield broker, broker.wait_ready()
    finally:
        broker.kill()


def _kill(broker: BrokerProcess, conn: pika.BlockingConnection) -> None:
    broker.kill()
    abandon(conn)  # the client notices the lost connection, frees its socket


@pytest.mark.parametrize("attempt", range(3))
def test_declarations_answered_before_a_kill_survive_it(
    tmp_path: Path, attempt: int
) -> None:
    data = tmp_path / "data"
    with _broker(data) as (proc, port):
        conn = connect(port)
        ch = conn.channel()
        ch.exchange_declare("dk.x", "direct", durable=True)
        ch.queue_declare("dk.q", durable=True, arguments={"x-max-priority": 5})
        ch.queue_bind("dk.q", "dk.x", "key")
        _kill(proc, conn)  # no pause: the replies above must already be stored
    with _broker(data) as (proc, port):
        conn = connect(port)
        ch = conn.channel()
        ch.exchange_declare("dk.x", "direct", durable=True, passive=True)
        # the same arguments: a queue restored without them would be 406
        ch.queue_declare("dk.q", durable=True, arguments={"x-max-priority": 5})
        ch.confirm_delivery()
        ch.basic_publish("dk.x", "key", b"routed", mandatory=True)
        assert ch.queue_declare("dk.q", passive=True).method.message_count == 1
        conn.close()


def test_delete_and_purge_answered_before_a_kill_stay_done(tmp_path: Path) -> None:
    data = tmp_path / "data"
    persistent = pika.BasicProperties(delivery_mode=2)
    with _broker(data) as (proc, port):
        conn = connect(port)
        ch = conn.channel()
        ch.confirm_delivery()
        for name in ("gone.q", "purged.q"):
            ch.queue_declare(name, durable=True)
            for i in range(100):
                ch.basic_publish("", name, b"m%d" % i, persistent)
        assert ch.queue_delete("gone.q").method.message_count == 100
        assert ch.queue_purge("purged.q").method.message_count == 100
        _kill(proc, conn)
    with _broker(data) as (proc, port):
        conn = connect(port)
        ch = conn.channel()
        assert ch.queue_declare("purged.q", passive=True).method.message_count == 0
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as info:
            ch.queue_declare("gone.q", passive=True)
        assert info.value.reply_code == 404
        conn.close()


def test_a_held_reply_is_not_overtaken_by_later_replies(tmp_path: Path) -> None:
    with _broker(tmp_path / "data") as (_proc, port), RawClient(port) as client:
        client.handshake()
        client.open_channel(1)
        for round_ in range(5):
            # a durable declare (held until stored) and a qos in one write
            client.send(
                method_frame(
                    1, spec.Queue.Declare(queue=f"order{round_}", durable=True)
                ),
                method_frame(1, spec.Basic.Qos(prefetch_count=round_ + 1)),
            )
            client.expect(spec.Queue.DeclareOk, 1)
            client.expect(spec.Basic.QosOk, 1)


def _persistent_publish(channel: int, routing_key: str, body: bytes) -> bytes:
    props = spec.Basic.Properties(delivery_mode=2)
    return b"".join((
        method_frame(channel, spec.Basic.Publish(exchange="", routing_key=routing_key)),
        frame.marshal(ContentHeader(0, len(body), props), channel),
        frame.marshal(ContentBody(body), channel),
    ))  # fmt: skip


@pytest.mark.parametrize("attempt", range(3))
def test_confirm_after_a_nowait_declaration_waits_until_it_is_stored(
    tmp_path: Path, attempt: int
) -> None:
    data = tmp_path / "data"
    arguments = {"x-max-priority": 5, "x-max-length": 1000}
    with _broker(data) as (proc, port), RawClient(port) as client:
        client.handshake()
        client.open_channel(1)
        client.send_method(1, spec.Confirm.Select())
        client.expect(spec.Confirm.SelectOk, 1)
        # no declare-ok to wait for: the declaration and the publish in
        # one write, and the kill as soon as the confirm is in
        client.send(
            method_frame(1, spec.Queue.Declare(
                queue="nw.q", durable=True, nowait=True, arguments=arguments
            )),
            _persistent_publish(1, "nw.q", b"kept"),
        )  # fmt: skip
        assert client.expect(spec.Basic.Ack, 1).delivery_tag == 1
        proc.kill()
    with _broker(data) as (proc, port):
        conn = connect(port)
        ch = conn.channel()
        # the same arguments: a queue restored without them would be 406
        declared = ch.queue_declare("nw.q", durable=True, arguments=arguments)
        assert declared.method.message_count == 1
        conn.close()


def test_sigterm_while_messages_expire_logs_no_error_and_loses_none(
    tmp_path: Path,
) -> None:
    # queue timers keep firing during shutdown unless they are stopped
    # first; then they expire messages into a journal that is closing
    data = tmp_path / "data"
    queues, per_queue = 10, 200
    arguments = {"x-dead-letter-exchange": "", "x-dead-letter-routing-key": "dlq"}
    proc = BrokerProcess(data)
    try:
        conn = connect(proc.wait_ready())
        ch = conn.channel()
        ch.queue_declare("dlq", durable=True)
        ch.confirm_delivery()
        for q in range(queues):
            ch.queue_declare(f"ttl{q}", durable=True, arguments=arguments)
            for i in range(per_queue):
                ttl = str(50 + (q * per_queue + i) % 700)  # expiring throughout
                props = pika.BasicProperties(delivery_mode=2, expiration=ttl)
                ch.basic_publish("", f"ttl{q}", b"m", props)
        conn.close()
        assert proc.stop() == 0
        errors = [ln for ln in proc.lines if "Traceback" in ln or " ERROR " in ln]
        assert errors == []
    finally:
        proc.kill()
    with _broker(data) as (_proc, port):
        conn = connect(port)
        ch = conn.channel()
        deadline = time.monotonic() + 10
        while ch.queue_declare("dlq", passive=True).method.message_count < (
            queues * per_queue
        ):
            assert time.monotonic() < deadline, "messages went missing"
            time.sleep(0.05)
        assert ch.queue_declare("dlq", passive=True).method.message_count == (
            queues * per_queue
        )
        conn.close()
