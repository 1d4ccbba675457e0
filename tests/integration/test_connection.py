"""Connections over real sockets: protocol header, start, login, tune,
heartbeats, closing both ways, vhosts, isolation and backpressure."""

from __future__ import annotations

import platform
import socket
import struct
import time
from collections.abc import Callable
from typing import Any

import pika
import pika.exceptions
import pytest
from amqp_wire import AMQP_HEADER, RawClient, raw_frame
from pamqp import commands as spec
from pamqp.heartbeat import Heartbeat

import amqpd
from amqpd.protocol.connection import ConnectionMachine
from amqpd.server.driver import ConnectionDriver
from amqpd.testing import BrokerThread

CAPABILITIES = {
    "publisher_confirms", "exchange_exchange_bindings", "basic.nack",
    "consumer_cancel_notify", "connection.blocked", "consumer_priorities",
    "authentication_failure_close", "per_consumer_qos", "direct_reply_to",
}  # fmt: skip


def params(broker: BrokerThread, **options: Any) -> pika.ConnectionParameters:
    return pika.ConnectionParameters("127.0.0.1", broker.port, **options)


def machines(broker: BrokerThread) -> list[ConnectionMachine]:
    """The broker's connection machines, read on the broker's loop."""

    def collect() -> list[ConnectionMachine]:
        assert broker.broker is not None
        drivers = broker.broker.node.connections
        return [d.conn for d in drivers if isinstance(d, ConnectionDriver)]

    return broker.call(collect)


def wait_for(predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return False


# protocol header and connection.start


def test_wrong_protocol_header_gets_the_servers_header_and_a_close(
    amqpd_session_broker: BrokerThread,
) -> None:
    with RawClient(amqpd_session_broker.port) as client:
        client.send(b"AMQP\x01\x01\x00\x0a")
        assert client.recv_exact(8) == AMQP_HEADER
        assert client.wait_closed()


def test_pika_sees_server_properties_and_exactly_these_capabilities(
    amqpd_session_broker: BrokerThread,
) -> None:
    conn = pika.BlockingConnection(params(amqpd_session_broker))
    props = conn._impl.server_properties
    conn.close()
    assert props["product"] == "amqpd"
    assert props["version"] == amqpd.__version__
    assert props["platform"] == f"Python {platform.python_version()}"
    assert props["capabilities"] == dict.fromkeys(CAPABILITIES, True)


def test_start_offers_plain_and_amqplain(amqpd_session_broker: BrokerThread) -> None:
    with RawClient(amqpd_session_broker.port) as client:
        start = client.start()
    assert set(start.mechanisms.split()) >= {"PLAIN", "AMQPLAIN"}
    assert (start.version_major, start.version_minor) == (0, 9)


# login


def test_amqplain_login_opens_the_connection(
    amqpd_session_broker: BrokerThread,
) -> None:
    with RawClient(amqpd_session_broker.port) as client:
        client.start()
        client.login(mechanism="AMQPLAIN")
        client.tune(0, 0, 0)
        client.send_method(0, spec.Connection.Open(virtual_host="/"))
        client.expect(spec.Connection.OpenOk, 0)
        client.open_channel(1)


def test_pika_with_a_wrong_password_gets_an_authentication_error(
    amqpd_session_broker: BrokerThread,
) -> None:
    credentials = pika.PlainCredentials("guest", "not-the-password")
    with pytest.raises(pika.exceptions.ProbableAuthenticationError) as info:
        pika.BlockingConnection(params(amqpd_session_broker, credentials=credentials))
    assert "(403)" in str(info.value)
    assert (
        "ACCESS_REFUSED - Login was refused using authentication mechanism PLAIN"
        in (str(info.value))
    )


def test_wrong_password_is_403_then_the_socket_closes(
    amqpd_session_broker: BrokerThread,
) -> None:
    with RawClient(amqpd_session_broker.port) as client:
        client.start()
        client.login(password="wrong", mechanism="AMQPLAIN")
        close = client.expect(spec.Connection.Close, 0)
        assert client.wait_closed()
    assert close.reply_code == 403
    assert close.reply_text == (
        "ACCESS_REFUSED - Login was refused using authentication mechanism "
        "AMQPLAIN. For details see the broker logfile."
    )


def test_wrong_password_without_the_capability_only_closes_the_socket(
    amqpd_session_broker: BrokerThread,
) -> None:
    with RawClient(amqpd_session_broker.port) as client:
        client.start()
        client.login(password="wrong", capabilities={})
        with pytest.raises(EOFError):
            client.recv_frame()


# tune


def test_server_proposes_2047_channels_128k_frames_and_60s_heartbeat(
    amqpd_session_broker: BrokerThread,
) -> None:
    with RawClient(amqpd_session_broker.port) as client:
        client.start()
        client.login()
        tune = client.expect(spec.Connection.Tune, 0)
    assert (tune.channel_max, tune.frame_max, tune.heartbeat) == (2047, 131072, 60)


def test_pika_tune_ok_values_decide(amqpd_broker: BrokerThread) -> None:
    conn = pika.BlockingConnection(
        params(amqpd_broker, channel_max=16, frame_max=8192, heartbeat=0)
    )
    (machine,) = machines(amqpd_broker)
    assert (machine.channel_max, machine.frame_max, machine.heartbeat) == (16, 8192, 0)
    conn.close()


def test_pika_takes_the_servers_heartbeat_by_default(
    amqpd_broker: BrokerThread,
) -> None:
    conn = pika.BlockingConnection(params(amqpd_broker))
    (machine,) = machines(amqpd_broker)
    assert (machine.channel_max, machine.frame_max, machine.heartbeat) == (
        2047, 131072, 60,
    )  # fmt: skip
    conn.close()


@pytest.mark.parametrize(
    ("channel_max", "frame_max", "text"),
    [
        (2048, 131072, "NOT_ALLOWED - channel_max=2048 > 2047 max"),
        (2047, 131073, "NOT_ALLOWED - frame_max=131073 > 131072 max size"),
    ],
)
def test_tune_ok_above_the_servers_limits_is_530(
    amqpd_session_broker: BrokerThread, channel_max: int, frame_max: int, text: str
) -> None:
    with RawClient(amqpd_session_broker.port) as client:
        client.start()
        client.login()
        client.tune(channel_max, frame_max, 0)
        close = client.expect_close()
    assert (close.reply_code, close.reply_text) == (530, text)
    assert (close.class_id, close.method_id) == (10, 31)


# heartbeats


def test_server_sends_heartbeats_at_the_negotiated_interval(
    amqpd_session_broker: BrokerThread,
) -> None:
    with RawClient(amqpd_session_broker.port, timeout=2.0) as client:
        client.handshake(heartbeat=1)
        last = time.monotonic()
        gaps = []
        for _ in range(2):
            _channel, received = client.recv_frame()
            assert isinstance(received, Heartbeat)
            now = time.monotonic()
            gaps.append(now - last)
            last = now
            client.send(raw_frame(8, 0, b""))
    # the server sends one at least every interval (every half, ideally)
    assert all(0.3 < gap < 1.5 for gap in gaps), gaps


def test_heartbeat_zero_disables_them(amqpd_session_broker: BrokerThread) -> None:
    with RawClient(amqpd_session_broker.port, timeout=1.2) as client:
        client.handshake(heartbeat=0)
        with pytest.raises(TimeoutError):
            client.recv_frame()
        client.open_channel(1)  # still open after more than a second of silence


def test_silent_peer_is_disconnected_after_two_intervals(
    amqpd_session_broker: BrokerThread,
) -> None:
    with RawClient(amqpd_session_broker.port, timeout=0.2) as client:
        client.handshake(heartbeat=1)
        opened = time.monotonic()
        assert client.wait_closed(timeout=5.0)
        silent_for = time.monotonic() - opened
    assert 1.9 < silent_for < 3.5


# closing


def test_pika_close_gets_close_ok_and_the_broker_forgets_the_connection(
    amqpd_broker: BrokerThread,
) -> None:
    conn = pika.BlockingConnection(params(amqpd_broker))
    conn.channel().queue_declare("mine", exclusive=True)
    assert len(machines(amqpd_broker)) == 1
    conn.close()
    assert conn.is_closed
    assert wait_for(lambda: machines(amqpd_broker) == [])

    def queues() -> list[str]:
        assert amqpd_broker.broker is not None
        return list(amqpd_broker.broker.node.vhosts["/"].queues)

    assert "mine" not in amqpd_broker.call(queues)


def test_pika_sees_the_servers_close_on_a_hard_error(
    amqpd_broker: BrokerThread,
) -> None:
    conn = pika.BlockingConnection(params(amqpd_broker))
    channel = conn.channel()
    with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as info:
        channel.exchange_declare("x", exchange_type="no-such-type")
    assert (info.value.reply_code, info.value.reply_text) == (
        503, "COMMAND_INVALID - unknown exchange type 'no-such-type'",
    )  # fmt: skip
    assert conn.is_closed
    assert wait_for(lambda: machines(amqpd_broker) == [])


def test_server_close_ignores_frames_until_close_ok(
    amqpd_session_broker: BrokerThread,
) -> None:
    with RawClient(amqpd_session_broker.port) as client:
        client.handshake()
        client.open_channel(1)
        client.send(raw_frame(1, 1, struct.pack(">HH", 60, 999)))
        close = client.expect(spec.Connection.Close, 0)
        assert (close.reply_code, close.reply_text) == (
            540, "NOT_IMPLEMENTED - unknown method 60.999",
        )  # fmt: skip
        assert (close.class_id, close.method_id) == (60, 999)
        client.send_method(1, spec.Queue.Declare(queue="ignored"))
        client.send_method(2, spec.Channel.Open())
        client.sock.settimeout(0.3)
        with pytest.raises(TimeoutError):
            client.recv_frame()  # nothing answers those
        client.sock.settimeout(5.0)
        client.send_method(0, spec.Connection.CloseOk())
        with pytest.raises(EOFError):
            client.recv_frame()


def test_client_close_gets_close_ok_on_a_raw_socket(
    amqpd_session_broker: BrokerThread,
) -> None:
    with RawClient(amqpd_session_broker.port) as client:
        client.handshake()
        client.send_method(0, spec.Connection.Close(
            reply_code=200, reply_text="bye", class_id=0, method_id=0
        ))  # fmt: skip
        client.expect(spec.Connection.CloseOk, 0)
        with pytest.raises(EOFError):
            client.recv_frame()


# virtual hosts


def test_default_vhost_is_slash(amqpd_session_broker: BrokerThread) -> None:
    conn = pika.BlockingConnection(params(amqpd_session_broker))
    assert conn.is_open
    conn.close()
    with RawClient(amqpd_session_broker.port) as client:
        client.handshake(vhost="/")


def test_pika_open_of_an_unknown_vhost_is_refused(
    amqpd_session_broker: BrokerThread,
) -> None:
    with pytest.raises(pika.exceptions.ProbableAccessDeniedError) as info:
        pika.BlockingConnection(params(amqpd_session_broker, virtual_host="nope"))
    assert "(530)" in str(info.value)
    assert "NOT_ALLOWED - vhost 'nope' not found" in str(info.value)


def test_open_of_an_unknown_vhost_is_530(amqpd_session_broker: BrokerThread) -> None:
    with RawClient(amqpd_session_broker.port) as client:
        client.start()
        client.login()
        client.tune(0, 0, 0)
        client.send_method(0, spec.Connection.Open(virtual_host="nope"))
        close = client.expect_close()
    assert (close.reply_code, close.reply_text) == (
        530, "NOT_ALLOWED - vhost 'nope' not found",
    )  # fmt: skip
    assert (close.class_id, close.method_id) == (10, 40)


# isolation


def test_internal_error_in_one_connection_leaves_the_other_working(
    amqpd_broker: BrokerThread,
) -> None:
    broken = pika.BlockingConnection(params(amqpd_broker))
    broken_channel = broken.channel()
    (target,) = machines(amqpd_broker)
    healthy = pika.BlockingConnection(params(amqpd_broker))
    healthy_channel = healthy.channel()

    def explode(method: object) -> None:
        raise RuntimeError("a bug of ours")

    def sabotage() -> None:
        target.channels[1]._handlers[spec.Queue.Declare] = explode

    amqpd_broker.call(sabotage)
    with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as info:
        broken_channel.queue_declare("q1")
    assert (info.value.reply_code, info.value.reply_text) == (
        541, "INTERNAL_ERROR - internal error",
    )  # fmt: skip

    healthy_channel.queue_declare("q2")
    healthy_channel.basic_publish("", "q2", b"fine")
    _method, _props, body = healthy_channel.basic_get("q2", auto_ack=True)
    assert body == b"fine"
    healthy.close()


# backpressure


def test_consumer_that_never_reads_does_not_grow_broker_memory(
    amqpd_broker: BrokerThread,
) -> None:
    limit = 4 * 1024 * 1024
    total, body = 20_000, b"m" * 1000

    stuck = RawClient(amqpd_broker.port, rcvbuf=4096)
    stuck.handshake()
    stuck.open_channel(1)
    stuck.send_method(1, spec.Queue.Declare(queue="stuck"))
    stuck.expect(spec.Queue.DeclareOk, 1)
    stuck.send_method(1, spec.Queue.Bind(queue="stuck", exchange="amq.fanout"))
    stuck.expect(spec.Queue.BindOk, 1)
    stuck.send_method(1, spec.Basic.Consume(queue="stuck"))  # prefetch 0
    stuck.expect(spec.Basic.ConsumeOk, 1)
    (stuck_machine,) = machines(amqpd_broker)

    reader = pika.BlockingConnection(params(amqpd_broker))
    reader_channel = reader.channel()
    reader_channel.queue_declare("healthy")
    reader_channel.queue_bind("healthy", "amq.fanout")
    received = 0

    def on_message(ch: Any, method: Any, props: Any, payload: bytes) -> None:
        nonlocal received
        received += 1

    reader_channel.basic_consume("healthy", on_message, auto_ack=True)

    publisher = RawClient(amqpd_broker.port)  # pika alone would take seconds
    publisher.handshake()
    publisher.open_channel(1)
    batch = b"".join([publisher.publish_frames(1, "amq.fanout", "", body)] * 1000)

    def sample() -> tuple[int, bool, int]:
        assert amqpd_broker.broker is not None
        queue = amqpd_broker.broker.node.vhosts["/"].queues["stuck"]
        return stuck_machine.output_size, stuck_machine.saturated, queue.message_count

    peak = 0
    for _ in range(total // 1000):
        publisher.send(batch)
        reader.process_data_events(time_limit=0)
        peak = max(peak, sample()[0])
    deadline = time.monotonic() + 20
    while received < total and time.monotonic() < deadline:
        reader.process_data_events(time_limit=0.05)
        peak = max(peak, sample()[0])

    _output_size, saturated, still_queued = sample()
    assert received == total  # the other consumer got everything
    assert peak <= limit + 2 * len(body)
    assert saturated
    # what the stuck consumer could not take stays in its queue
    assert 5_000 < still_queued < total
    with socket.socket() as probe:  # the broker still accepts connections
        probe.connect(("127.0.0.1", amqpd_broker.port))
    stuck.close()
    reader.close()
    publisher.close()
    assert wait_for(lambda: machines(amqpd_broker) == [])
