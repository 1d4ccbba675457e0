"""The connection machine without sockets: handshake, login, tune, closing,
connection errors and the bounded output buffer."""

from __future__ import annotations

import platform
import struct

import pytest
from machine_peer import (
    AMQP_HEADER,
    Peer,
    make_node,
    method_frame,
    raw_frame,
)
from pamqp import commands as spec
from pamqp import encode
from pamqp.body import ContentBody
from pamqp.header import ContentHeader

import amqpd
from amqpd.auth.users import is_loopback
from amqpd.protocol.channel import ChannelMachine
from amqpd.protocol.connection import CLOSED, CLOSING_CONN, OPENED

CAPABILITIES = {
    "publisher_confirms", "exchange_exchange_bindings", "basic.nack",
    "consumer_cancel_notify", "connection.blocked", "consumer_priorities",
    "authentication_failure_close", "per_consumer_qos", "direct_reply_to",
}  # fmt: skip


def assert_close(
    close: spec.Connection.Close, code: int, text: str, ids: tuple[int, int] = (0, 0)
) -> None:
    assert (close.reply_code, close.reply_text) == (code, text)
    assert (close.class_id, close.method_id) == ids


# protocol header


def test_wrong_protocol_header_gets_ours_and_the_socket_closed() -> None:
    peer = Peer(make_node())
    peer.send(b"AMQP\x00\x00\x08\x00")
    assert peer.output() == AMQP_HEADER
    assert peer.machine.closed


def test_http_request_gets_the_amqp_header_and_nothing_else() -> None:
    peer = Peer(make_node())
    peer.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert peer.output() == AMQP_HEADER
    assert peer.machine.closed
    peer.send(b"more bytes")  # ignored once closed
    assert peer.output() == b""


def test_protocol_header_in_pieces_starts_the_handshake() -> None:
    peer = Peer(make_node())
    peer.send(AMQP_HEADER[:3])
    assert peer.output() == b""
    peer.send(AMQP_HEADER[3:])
    peer.expect(spec.Connection.Start, 0)


# connection.start


def test_start_announces_server_properties_and_mechanisms() -> None:
    start = Peer(make_node()).start()
    assert (start.version_major, start.version_minor) == (0, 9)
    props = start.server_properties
    assert props["product"] == "amqpd"
    assert props["version"] == amqpd.__version__
    assert props["platform"] == f"Python {platform.python_version()}"
    assert props["capabilities"] == dict.fromkeys(CAPABILITIES, True)
    assert start.mechanisms.split() == ["PLAIN", "AMQPLAIN"]
    assert start.locales == "en_US"


# login


def test_plain_login_as_guest_gets_tune() -> None:
    peer = Peer(make_node())
    peer.start()
    peer.login()
    tune = peer.expect(spec.Connection.Tune, 0)
    assert (tune.channel_max, tune.frame_max, tune.heartbeat) == (2047, 131072, 60)
    assert peer.machine.user == "guest"


@pytest.mark.parametrize("length_prefix", [False, True])
def test_amqplain_login_as_guest_gets_tune(length_prefix: bool) -> None:
    peer = Peer(make_node())
    peer.start()
    table = encode.field_table({"LOGIN": "guest", "PASSWORD": "guest"})
    peer.login(mechanism="AMQPLAIN", response=table if length_prefix else table[4:])
    peer.expect(spec.Connection.Tune, 0)
    assert peer.machine.user == "guest"


def test_wrong_password_gets_403_when_client_asks_for_a_close() -> None:
    peer = Peer(make_node())
    peer.start()
    peer.login(password="wrong")
    assert_close(
        peer.expect_close(), 403,
        "ACCESS_REFUSED - Login was refused using authentication mechanism "
        "PLAIN. For details see the broker logfile.",
    )  # fmt: skip
    assert peer.machine.closed


def test_unknown_user_gets_the_same_403_as_a_wrong_password() -> None:
    peer = Peer(make_node())
    peer.start()
    table = encode.field_table({"LOGIN": "nobody", "PASSWORD": "x"})
    peer.login(mechanism="AMQPLAIN", response=table)
    close = peer.expect_close()
    assert close.reply_code == 403
    assert "mechanism AMQPLAIN" in close.reply_text


def test_wrong_password_without_the_capability_just_closes_the_socket() -> None:
    peer = Peer(make_node())
    peer.start()
    peer.login(password="wrong", auth_failure_close=False)
    assert peer.read() == []
    assert peer.machine.closed


def test_unsupported_mechanism_gets_403() -> None:
    peer = Peer(make_node())
    peer.start()
    peer.login(mechanism="EXTERNAL", response=b"")
    assert_close(
        peer.expect_close(), 403,
        "ACCESS_REFUSED - unsupported authentication mechanism 'EXTERNAL'", (10, 11),
    )  # fmt: skip


def test_malformed_plain_response_gets_403() -> None:
    peer = Peer(make_node())
    peer.start()
    peer.login(response=b"guest-without-nuls")
    assert_close(
        peer.expect_close(), 403,
        "ACCESS_REFUSED - bad PLAIN response: malformed PLAIN response", (10, 11),
    )  # fmt: skip


def test_guest_from_a_remote_address_is_refused() -> None:
    peer = Peer(make_node(), ("10.0.0.5", 1234))
    peer.start()
    peer.login()
    assert_close(
        peer.expect_close(), 403,
        "ACCESS_REFUSED - user 'guest' can only connect via localhost",
    )  # fmt: skip
    assert peer.machine.closed


@pytest.mark.parametrize("address", ["::ffff:127.0.0.1", "::1", "127.0.0.2"])
def test_guest_from_loopback_addresses_is_allowed(address: str) -> None:
    peer = Peer(make_node(), (address, 1))
    peer.start()
    peer.login()
    peer.expect(spec.Connection.Tune, 0)


def test_other_users_may_log_in_from_remote_addresses() -> None:
    node = make_node()
    node.add_user("alice", "secret")
    peer = Peer(node, ("10.0.0.5", 1234))
    peer.start()
    peer.login("alice", "secret")
    peer.expect(spec.Connection.Tune, 0)


@pytest.mark.parametrize(
    ("address", "loopback"),
    [
        ("127.0.0.1", True), ("127.255.0.9", True), ("::1", True),
        ("::ffff:127.0.0.1", True), ("::1%lo", True),
        ("10.0.0.5", False), ("::ffff:10.0.0.5", False), ("192.168.1.1", False),
        ("fe80::1%eth0", False), ("localhost", False), ("unix", False), ("", False),
    ],
)  # fmt: skip
def test_is_loopback(address: str, loopback: bool) -> None:
    assert is_loopback(address) is loopback


# tune


def test_tune_ok_values_decide_within_the_servers_bounds() -> None:
    peer = Peer(make_node())
    peer.handshake(channel_max=10, frame_max=4096, heartbeat=5)
    machine = peer.machine
    assert (machine.channel_max, machine.frame_max, machine.heartbeat) == (10, 4096, 5)
    assert machine.state == OPENED


def test_tune_ok_zero_takes_the_servers_limits_and_disables_heartbeats() -> None:
    peer = Peer(make_node())
    peer.handshake(channel_max=0, frame_max=0, heartbeat=0)
    machine = peer.machine
    assert (machine.channel_max, machine.frame_max, machine.heartbeat) == (
        2047, 131072, 0,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("channel_max", "frame_max", "text"),
    [
        (2048, 131072, "NOT_ALLOWED - channel_max=2048 > 2047 max"),
        (2047, 131073, "NOT_ALLOWED - frame_max=131073 > 131072 max size"),
        (2047, 4095, "NOT_ALLOWED - frame_max=4095 < 4096 min size"),
    ],
)
def test_tune_ok_outside_the_servers_bounds_is_530(
    channel_max: int, frame_max: int, text: str
) -> None:
    peer = Peer(make_node())
    peer.start()
    peer.login()
    peer.expect(spec.Connection.Tune, 0)
    peer.tune_ok(channel_max, frame_max)
    assert_close(peer.expect_close(), 530, text, (10, 31))
    assert peer.machine.state == CLOSING_CONN
    peer.send_method(0, spec.Connection.CloseOk())
    assert peer.machine.closed


def test_frame_larger_than_negotiated_frame_max_is_501() -> None:
    peer = Peer(make_node())
    peer.handshake(frame_max=4096)
    peer.open_channel(1)
    peer.send(raw_frame(3, 1, b"x" * 4089))  # 4097 bytes on the wire
    assert_close(
        peer.expect_close(), 501,
        "FRAME_ERROR - frame of 4097 bytes exceeds frame_max 4096",
    )  # fmt: skip


def test_frame_of_exactly_frame_max_is_accepted() -> None:
    peer = Peer(make_node())
    peer.handshake(frame_max=4096)
    peer.open_channel(1)
    peer.declare_queue(1, "q")
    peer.publish(1, "q", b"x" * 4088, frame_max=4096)
    peer.send_method(1, spec.Basic.Get(queue="q", no_ack=True))
    peer.expect(spec.Basic.GetOk, 1)
    peer.expect(ContentHeader, 1)
    assert peer.expect(ContentBody, 1).value == b"x" * 4088


def test_bad_frame_end_octet_is_501() -> None:
    peer = Peer(make_node())
    peer.handshake()
    frame = bytearray(method_frame(0, spec.Connection.Blocked(reason="x")))
    frame[-1] = 0
    peer.send(bytes(frame))
    assert_close(peer.expect_close(), 501, "FRAME_ERROR - bad frame-end octet 0x0")


# connection.open


def test_open_of_the_default_vhost() -> None:
    peer = Peer(make_node())
    peer.handshake()
    assert peer.machine.vhost is not None
    assert peer.machine.vhost.name == "/"


def test_open_of_an_unknown_vhost_is_530() -> None:
    peer = Peer(make_node())
    peer.start()
    peer.login()
    peer.expect(spec.Connection.Tune, 0)
    peer.tune_ok()
    peer.send_method(0, spec.Connection.Open(virtual_host="nope"))
    assert_close(
        peer.expect_close(), 530, "NOT_ALLOWED - vhost 'nope' not found", (10, 40)
    )


def test_open_before_tune_ok_is_503() -> None:
    peer = Peer(make_node())
    peer.start()
    peer.login()
    peer.expect(spec.Connection.Tune, 0)
    peer.send_method(0, spec.Connection.Open(virtual_host="/"))
    assert_close(
        peer.expect_close(), 503,
        "COMMAND_INVALID - unexpected method Connection.Open in state tune-ok",
        (10, 40),
    )  # fmt: skip


def test_channel_frame_before_open_is_505() -> None:
    peer = Peer(make_node())
    peer.start()
    peer.send_method(1, spec.Channel.Open())
    assert_close(
        peer.expect_close(), 505,
        "UNEXPECTED_FRAME - frame on channel 1 before connection.open",
    )  # fmt: skip


# closing


def test_client_close_gets_close_ok_and_releases_exclusive_queues() -> None:
    node = make_node()
    peer = Peer(node)
    peer.handshake()
    peer.open_channel(1)
    peer.send_method(1, spec.Queue.Declare(queue="mine", exclusive=True))
    peer.expect(spec.Queue.DeclareOk, 1)
    peer.send_method(0, spec.Connection.Close(
        reply_code=200, reply_text="bye", class_id=0, method_id=0
    ))  # fmt: skip
    peer.expect(spec.Connection.CloseOk, 0)
    assert peer.machine.closed
    assert "mine" not in node.vhosts["/"].queues


def test_server_close_waits_for_close_ok_ignoring_other_frames() -> None:
    peer = Peer(make_node())
    peer.handshake()
    peer.open_channel(1)
    peer.send(raw_frame(1, 1, struct.pack(">HH", 60, 999)))
    assert_close(
        peer.expect_close(), 540, "NOT_IMPLEMENTED - unknown method 60.999", (60, 999)
    )
    assert peer.machine.state == CLOSING_CONN
    peer.send_method(1, spec.Queue.Declare(queue="late"))
    peer.send_method(2, spec.Channel.Open())
    peer.send(raw_frame(8, 0, b""))
    assert peer.read() == []
    assert not peer.machine.closed
    peer.send_method(0, spec.Connection.CloseOk())
    assert peer.read() == []
    assert peer.machine.closed and peer.machine.state == CLOSED


def test_client_close_crossing_the_servers_close_gets_close_ok() -> None:
    peer = Peer(make_node())
    peer.handshake()
    peer.send(raw_frame(9, 0, b""))
    assert peer.expect_close().reply_code == 505
    peer.send_method(0, spec.Connection.Close(
        reply_code=200, reply_text="", class_id=0, method_id=0
    ))  # fmt: skip
    peer.expect(spec.Connection.CloseOk, 0)
    assert peer.machine.closed


def test_force_close_sends_320() -> None:
    peer = Peer(make_node())
    peer.handshake()
    peer.machine.force_close("broker forced connection closure with reason 'test'")
    assert_close(
        peer.expect_close(), 320,
        "CONNECTION_FORCED - broker forced connection closure with reason 'test'",
    )  # fmt: skip


# connection errors


def test_heartbeat_frames_on_channel_zero_are_accepted() -> None:
    peer = Peer(make_node())
    peer.handshake()
    peer.send(raw_frame(8, 0, b""), raw_frame(8, 0, b""))
    assert peer.read() == []
    assert peer.machine.state == OPENED


def test_unknown_frame_type_on_channel_zero_is_505() -> None:
    peer = Peer(make_node())
    peer.handshake()
    peer.send(raw_frame(9, 0, b""))
    assert_close(
        peer.expect_close(), 505, "UNEXPECTED_FRAME - frame type 9 on channel 0"
    )


def test_unknown_method_id_is_540() -> None:
    peer = Peer(make_node())
    peer.handshake()
    peer.send(raw_frame(1, 0, struct.pack(">HH", 77, 1)))
    assert_close(
        peer.expect_close(), 540, "NOT_IMPLEMENTED - unknown method 77.1", (77, 1)
    )


def test_undecodable_method_is_501_naming_the_method() -> None:
    # RabbitMQ answers 501 FRAME_ERROR "cannot decode" here, not 502
    peer = Peer(make_node())
    peer.handshake()
    peer.open_channel(1)
    # queue.declare whose queue name says 64 bytes but has 3
    peer.send(raw_frame(1, 1, struct.pack(">HHH", 50, 10, 0) + b"\x40abc"))
    close = peer.expect_close()
    assert (close.reply_code, close.class_id, close.method_id) == (501, 50, 10)
    assert close.reply_text.startswith("FRAME_ERROR - cannot decode method frame")


def test_internal_error_closes_only_its_own_connection_with_541() -> None:
    node = make_node()
    broken, healthy = Peer(node), Peer(node)
    for peer in (broken, healthy):
        peer.handshake()
        peer.open_channel(1)
    channel: ChannelMachine = broken.machine.channels[1]

    def explode(method: spec.Queue.Declare) -> None:
        raise RuntimeError("a bug of ours")

    channel._handlers[spec.Queue.Declare] = explode
    broken.send_method(1, spec.Queue.Declare(queue="q1"))
    assert_close(broken.expect_close(), 541, "INTERNAL_ERROR - internal error")
    assert broken.machine.channels == {}

    healthy.declare_queue(1, "q2")
    healthy.publish(1, "q2", b"still fine")
    healthy.send_method(1, spec.Basic.Get(queue="q2", no_ack=True))
    healthy.expect(spec.Basic.GetOk, 1)
    healthy.expect(ContentHeader, 1)
    assert healthy.expect(ContentBody, 1).value == b"still fine"


# the bounded output buffer


def _delivered(peer: Peer) -> list[bytes]:
    return [f.value for _, f in peer.read() if isinstance(f, ContentBody)]


def test_saturated_output_pauses_deliveries_until_drained() -> None:
    node = make_node(output_buffer_limit=10_000)
    consumer, publisher = Peer(node), Peer(node)
    for peer in (consumer, publisher):
        peer.handshake()
        peer.open_channel(1)
    consumer.declare_queue(1, "q")
    consumer.consume(1, "q")
    queue = node.vhosts["/"].queues["q"]
    bodies = [b"%04d" % i + b"x" * 996 for i in range(50)]
    for body in bodies:
        publisher.publish(1, "q", body)
    machine = consumer.machine
    assert machine.saturated
    # at most one message beyond the limit is buffered; the rest wait
    assert 10_000 < machine.output_size < 10_000 + 1100
    first = queue.message_count
    assert 30 < first < 45

    received = _delivered(consumer)  # the driver took the output...
    assert queue.message_count == first  # ...but has not sent it yet
    publisher.publish(1, "q", b"late")
    assert machine.output == [] and queue.message_count == first + 1
    bodies.append(b"late")

    rounds = 0
    while queue.message_count and rounds < 20:
        machine.drained()
        received += _delivered(consumer)
        rounds += 1
    assert received == bodies
    assert not machine.saturated and rounds >= 4


def test_drained_below_the_limit_keeps_delivering_inline() -> None:
    node = make_node(output_buffer_limit=10_000)
    peer = Peer(node)
    peer.handshake()
    peer.open_channel(1)
    peer.declare_queue(1, "q")
    peer.consume(1, "q")
    for i in range(5):
        peer.publish(1, "q", b"%d" % i)
    assert not peer.machine.saturated
    assert _delivered(peer) == [b"0", b"1", b"2", b"3", b"4"]


def test_wake_is_called_once_per_batch_of_output() -> None:
    peer = Peer(make_node())
    peer.handshake()
    wakes = peer.wakes
    peer.send_method(1, spec.Channel.Open())
    peer.send_method(1, spec.Queue.Declare(queue="q"))
    assert peer.wakes == wakes + 1  # output was pending the second time
    peer.read()
    peer.send(raw_frame(8, 0, b""))
    assert peer.wakes == wakes + 1
