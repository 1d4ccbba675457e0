"""The broker inside another program: ``async with Broker``, BrokerThread and
the pytest fixtures that test suites use."""

from __future__ import annotations

import socket
from pathlib import Path

import aio_pika
import anyio
import pika
import pytest
from aiormq.exceptions import ConnectionClosed
from amqp_wire import RawClient
from pamqp import commands as spec
from pamqp.body import ContentBody
from pamqp.header import ContentHeader
from pika.exceptions import AMQPConnectionError, ChannelClosedByBroker

import amqpd
from amqpd.config import Config
from amqpd.server.lifecycle import LOCK_NAME, StartupError
from amqpd.testing import BrokerThread


def ready_counts(thread: BrokerThread) -> dict[str, int]:
    """Ready messages per queue of vhost '/', read on the broker's loop."""
    broker = thread.broker
    assert broker is not None
    queues = broker.node.vhosts["/"].queues
    return thread.call(lambda: {name: q.message_count for name, q in queues.items()})


async def test_async_with_broker_serves_clients_at_its_url() -> None:
    async with amqpd.Broker(port=0) as broker:
        assert broker.port > 0
        assert broker.url == f"amqp://guest:guest@127.0.0.1:{broker.port}/"
        assert broker.addresses == [f"127.0.0.1:{broker.port}"]

        conn = await aio_pika.connect(broker.url)
        async with conn:
            ch = await conn.channel()
            queue = await ch.declare_queue("", exclusive=True)
            await ch.default_exchange.publish(aio_pika.Message(b"inside"), queue.name)
            message = await queue.get(timeout=5)
            assert message is not None
            assert message.body == b"inside"
            await message.ack()


async def test_broker_without_data_dir_removes_its_temp_dir_at_exit() -> None:
    async with amqpd.Broker(port=0) as broker:
        data_dir = broker.data_dir
        assert data_dir.name.startswith("amqpd-")
        assert (data_dir / LOCK_NAME).exists()

    assert not data_dir.exists()


async def test_broker_with_data_dir_keeps_it_at_exit(tmp_path: Path) -> None:
    data_dir = tmp_path / "broker"
    async with amqpd.Broker(port=0, data_dir=data_dir) as broker:
        assert broker.data_dir == data_dir

    assert (data_dir / LOCK_NAME).exists()


async def test_broker_exit_closes_clients_with_connection_forced() -> None:
    reasons: list[BaseException | None] = []
    closed = anyio.Event()

    def on_close(_conn: object, exc: BaseException | None) -> None:
        reasons.append(exc)
        closed.set()

    async with amqpd.Broker(port=0) as broker:
        conn = await aio_pika.connect(broker.url)
        conn.close_callbacks.add(on_close)
        await conn.channel()

    try:
        with anyio.fail_after(5):
            await closed.wait()
    finally:
        await conn.close()
    reason = reasons[0]
    assert isinstance(reason, ConnectionClosed)
    assert reason.errno == 320
    assert reason.strerror.startswith("CONNECTION_FORCED - ")


async def test_broker_exit_frees_the_port() -> None:
    async with amqpd.Broker(port=0) as broker:
        port = broker.port

    with socket.socket() as sock:
        assert sock.connect_ex(("127.0.0.1", port)) != 0


async def test_second_broker_on_the_same_data_dir_fails_to_start(
    tmp_path: Path,
) -> None:
    async with amqpd.Broker(port=0, data_dir=tmp_path):
        with pytest.raises(StartupError) as caught:
            async with amqpd.Broker(port=0, data_dir=tmp_path):
                pass

    assert str(caught.value) == (
        f"data directory {tmp_path} is in use by another amqpd (lock held)"
    )


async def test_broker_on_a_taken_port_fails_and_releases_its_lock(
    tmp_path: Path,
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(StartupError) as caught:
            async with amqpd.Broker(port=port, data_dir=tmp_path):
                pass

    assert str(caught.value) == (
        f"cannot listen on 127.0.0.1:{port}: Address already in use"
    )
    async with amqpd.Broker(port=0, data_dir=tmp_path):
        pass  # the failed start left no lock behind


def test_broker_options_override_the_config() -> None:
    base = Config(bind=["127.0.0.1"], heartbeat=10)
    broker = amqpd.Broker(base, port=0, host=["127.0.0.1", "::1"], channel_max=7)

    assert broker.config.bind == ["127.0.0.1", "::1"]
    assert broker.config.port == 0
    assert broker.config.heartbeat == 10
    assert broker.config.channel_max == 7
    assert base.port == 5672  # the caller's Config is left alone


def test_broker_thread_serves_a_blocking_client_and_stops() -> None:
    with BrokerThread(heartbeat=20) as thread:
        conn = pika.BlockingConnection(pika.URLParameters(thread.url))
        try:
            assert conn._impl.params.heartbeat == 20
            ch = conn.channel()
            ch.queue_declare("work")
            ch.basic_publish("", "work", b"one")
            assert ready_counts(thread) == {"work": 1}
        finally:
            conn.close()
        port = thread.port

    with pytest.raises(AMQPConnectionError):
        pika.BlockingConnection(
            pika.ConnectionParameters("127.0.0.1", port, connection_attempts=1)
        )


def test_function_fixture_gives_a_fresh_broker(amqpd_broker: BrokerThread) -> None:
    conn = pika.BlockingConnection(pika.URLParameters(amqpd_broker.url))
    try:
        ch = conn.channel()
        ok = ch.queue_declare("fixture-fresh", durable=True)
        assert ok.method.message_count == 0
        ch.basic_publish("", "fixture-fresh", b"x")
    finally:
        conn.close()

    assert ready_counts(amqpd_broker) == {"fixture-fresh": 1}
    assert amqpd_broker.url == f"amqp://guest:guest@127.0.0.1:{amqpd_broker.port}/"
    assert (amqpd_broker.data_dir / LOCK_NAME).exists()


def test_function_fixture_is_not_shared_between_tests(
    amqpd_broker: BrokerThread,
) -> None:
    # the previous test declared a durable queue; this broker never saw it
    conn = pika.BlockingConnection(pika.URLParameters(amqpd_broker.url))
    try:
        ch = conn.channel()
        with pytest.raises(ChannelClosedByBroker) as caught:
            ch.queue_declare("fixture-fresh", passive=True)
        assert caught.value.reply_code == 404
    finally:
        if conn.is_open:
            conn.close()


_session_ports: list[int] = []


@pytest.mark.parametrize("turn", [1, 2])
def test_session_fixture_is_one_broker_for_every_test(
    amqpd_session_broker: BrokerThread, turn: int
) -> None:
    _session_ports.append(amqpd_session_broker.port)
    assert set(_session_ports) == {amqpd_session_broker.port}

    conn = pika.BlockingConnection(pika.URLParameters(amqpd_session_broker.url))
    try:
        ch = conn.channel()
        name = f"embedding-session-{turn}"
        ch.queue_declare(name, auto_delete=True)
        ch.basic_publish("", name, b"s")
        _m, _p, body = ch.basic_get(name, auto_ack=True)
        assert body == b"s"
        ch.queue_delete(name)
    finally:
        conn.close()


async def test_fixture_serves_async_clients_too(amqpd_broker: BrokerThread) -> None:
    conn = await aio_pika.connect(amqpd_broker.url)
    async with conn:
        ch = await conn.channel()
        queue = await ch.declare_queue("", exclusive=True)
        await ch.default_exchange.publish(aio_pika.Message(b"async"), queue.name)
        message = await queue.get(timeout=5)
        assert message is not None
        assert message.body == b"async"
        await message.ack()


def test_shutdown_does_not_hand_requeued_messages_to_a_closing_connection() -> None:
    # the first connection's close requeues its unacked messages; the
    # second connection, closed in the same moment, must not receive them
    # (its acks would come after its own close and be ignored)
    with BrokerThread() as broker:
        holder, other = RawClient(broker.port), RawClient(broker.port)
        for client in (holder, other):
            client.handshake()
            client.open_channel(1)
            client.send_method(1, spec.Basic.Qos(prefetch_count=50))
            client.expect(spec.Basic.QosOk, 1)
        holder.send_method(1, spec.Queue.Declare(queue="shared"))
        holder.expect(spec.Queue.DeclareOk, 1)
        for i in range(10):
            holder.publish(1, "", "shared", b"m%d" % i)
        holder.send_method(1, spec.Basic.Consume(queue="shared", consumer_tag="h"))
        holder.expect(spec.Basic.ConsumeOk, 1)
        for _ in range(10):  # delivered, never acked
            holder.expect(spec.Basic.Deliver, 1)
            holder.expect(ContentHeader, 1)
            holder.expect(ContentBody, 1)
        other.send_method(1, spec.Basic.Consume(queue="shared", consumer_tag="o"))
        other.expect(spec.Basic.ConsumeOk, 1)
        broker.stop()
        # after the stop, "other" saw nothing but its connection.close
        _number, received = other.recv_frame()
        assert isinstance(received, spec.Connection.Close), received
        assert received.reply_code == 320
        holder.close()
        other.close()
