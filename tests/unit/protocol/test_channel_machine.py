"""Channels through the connection machine, without sockets: open and close,
unopened and closing channels, content assembly and its limits."""

from __future__ import annotations

import struct

import pytest
from machine_peer import Peer, content_frames, make_node, method_frame, raw_frame
from pamqp import commands as spec
from pamqp import frame
from pamqp.body import ContentBody
from pamqp.header import ContentHeader

from amqpd.config import Config
from amqpd.errors import PreconditionFailed
from amqpd.protocol.channel import CLOSING, OPEN


def opened(channels: int = 1, **config: object) -> Peer:
    peer = Peer(make_node(**config))
    peer.handshake()
    for number in range(1, channels + 1):
        peer.open_channel(number)
    return peer


def assert_close(
    close: spec.Connection.Close | spec.Channel.Close,
    code: int,
    text: str,
    ids: tuple[int, int] = (0, 0),
) -> None:
    assert (close.reply_code, close.reply_text) == (code, text)
    assert (close.class_id, close.method_id) == ids


def short(value: str) -> bytes:
    """A short string built by hand: pamqp refuses non-ASCII names."""
    raw = value.encode()
    return bytes((len(raw),)) + raw


NO_FLAGS, MANDATORY, NO_ARGUMENTS = b"\x00", b"\x01", b"\x00\x00\x00\x00"


def queue_declare(name: str) -> bytes:
    payload = struct.pack(">HHH", 50, 10, 0) + short(name)
    return raw_frame(1, 1, payload + NO_FLAGS + NO_ARGUMENTS)


def get_body(peer: Peer, channel: int, queue: str) -> tuple[ContentHeader, bytes]:
    """basic.get one message; its content header and body frames joined."""
    peer.send_method(channel, spec.Basic.Get(queue=queue, no_ack=True))
    frames = peer.read()
    assert isinstance(frames[0][1], spec.Basic.GetOk)
    header = frames[1][1]
    assert isinstance(header, ContentHeader)
    body = b"".join(f.value for _, f in frames[2:] if isinstance(f, ContentBody))
    assert len(frames) == 2 + sum(isinstance(f, ContentBody) for _, f in frames[2:])
    return header, body


# open and close


def test_open_close_and_reopen_the_same_number() -> None:
    peer = opened()
    peer.send_method(1, spec.Channel.Close(
        reply_code=200, reply_text="", class_id=0, method_id=0
    ))  # fmt: skip
    peer.expect(spec.Channel.CloseOk, 1)
    assert 1 not in peer.machine.channels
    peer.open_channel(1)
    assert peer.machine.channels[1].state == OPEN


def test_channels_up_to_channel_max_open_and_above_it_is_530() -> None:
    peer = Peer(make_node())
    peer.handshake(channel_max=10)
    peer.open_channel(10)
    peer.send_method(11, spec.Channel.Open())
    assert_close(
        peer.expect_close(), 530,
        "NOT_ALLOWED - channel number 11 exceeds the negotiated channel_max 10",
        (20, 10),
    )  # fmt: skip


def test_default_channel_max_is_2047() -> None:
    peer = opened(channels=0)
    peer.open_channel(2047)
    peer.send_method(2048, spec.Channel.Open())
    assert peer.expect_close().reply_code == 530


def test_second_open_on_an_open_channel_is_504() -> None:
    peer = opened()
    peer.send_method(1, spec.Channel.Open())
    assert_close(
        peer.expect_close(), 504, "CHANNEL_ERROR - second 'channel.open' seen", (20, 10)
    )


def test_close_ok_on_an_open_channel_is_504() -> None:
    peer = opened()
    peer.send_method(1, spec.Channel.CloseOk())
    assert_close(
        peer.expect_close(),
        504,
        "CHANNEL_ERROR - unexpected channel.close-ok",
        (20, 41),
    )


# unopened channels


@pytest.mark.parametrize(
    ("method", "name", "ids"),
    [
        (spec.Queue.Declare(queue="q"), "Queue.Declare", (50, 10)),
        (spec.Basic.Publish(routing_key="q"), "Basic.Publish", (60, 40)),
        (spec.Channel.Close(reply_code=200, reply_text="", class_id=0, method_id=0),
         "Channel.Close", (20, 40)),
        (spec.Channel.CloseOk(), "Channel.CloseOk", (20, 41)),
    ],
)  # fmt: skip
def test_method_other_than_open_on_an_unopened_channel_is_504(
    method: spec.Queue.Declare, name: str, ids: tuple[int, int]
) -> None:
    peer = opened()
    peer.send_method(3, method)
    assert_close(
        peer.expect_close(), 504,
        f"CHANNEL_ERROR - expected 'channel.open' on channel 3, got '{name}'", ids,
    )  # fmt: skip


def test_close_ok_after_the_channel_was_forgotten_is_504() -> None:
    peer = opened()
    peer.send_method(1, spec.Channel.Close(
        reply_code=200, reply_text="", class_id=0, method_id=0
    ))  # fmt: skip
    peer.expect(spec.Channel.CloseOk, 1)
    peer.send_method(1, spec.Channel.CloseOk())
    assert peer.expect_close().reply_code == 504


@pytest.mark.parametrize("ftype", [2, 3])
def test_content_frame_on_an_unopened_channel_is_505(ftype: int) -> None:
    peer = opened()
    peer.send(raw_frame(ftype, 4, b"\x00\x3c" + b"\x00" * 12))
    assert_close(
        peer.expect_close(), 505,
        f"UNEXPECTED_FRAME - expected a method frame on unopened channel 4, "
        f"got frame type {ftype}",
    )  # fmt: skip


@pytest.mark.parametrize("channel", [1, 5])
def test_heartbeat_on_a_non_zero_channel_is_501(channel: int) -> None:
    peer = opened()
    peer.send(raw_frame(8, channel, b""))
    assert_close(
        peer.expect_close(), 501, "FRAME_ERROR - heartbeat frame on a non-zero channel"
    )


# channel errors and the closing state


def _fail_channel(peer: Peer, channel: int = 1) -> None:
    peer.send_method(channel, spec.Queue.Declare(queue="missing", passive=True))
    assert_close(
        peer.expect(spec.Channel.Close, channel), 404,
        "NOT_FOUND - no queue 'missing' in vhost '/'", (50, 10),
    )  # fmt: skip


def test_channel_error_closes_only_that_channel() -> None:
    peer = opened(channels=2)
    _fail_channel(peer, 1)
    peer.declare_queue(2, "q")
    peer.publish(2, "q", b"on channel 2")
    assert get_body(peer, 2, "q")[1] == b"on channel 2"
    assert peer.machine.channels[1].state == CLOSING


def test_frames_after_our_channel_close_are_dropped_until_close_ok() -> None:
    peer = opened()
    _fail_channel(peer)
    peer.send_method(1, spec.Queue.Declare(queue="ignored"))
    peer.publish(1, "ignored", b"dropped")
    peer.send_method(1, spec.Basic.Get(queue="ignored"))
    peer.send(raw_frame(3, 1, b"stray body"))
    assert peer.read() == []
    assert "ignored" not in peer.machine.node.vhosts["/"].queues
    peer.send_method(1, spec.Channel.CloseOk())
    assert 1 not in peer.machine.channels
    peer.open_channel(1)
    peer.declare_queue(1, "now")


def test_client_close_crossing_our_channel_close_gets_close_ok() -> None:
    peer = opened()
    _fail_channel(peer)
    peer.send_method(1, spec.Channel.Close(
        reply_code=200, reply_text="", class_id=0, method_id=0
    ))  # fmt: skip
    peer.expect(spec.Channel.CloseOk, 1)
    peer.send_method(1, spec.Channel.CloseOk())
    assert peer.read() == [] and 1 not in peer.machine.channels


def test_channel_close_releases_consumers_and_requeues_unacked() -> None:
    peer = opened(channels=2)
    peer.declare_queue(1, "q")
    peer.publish(1, "q", b"m")
    peer.consume(1, "q", no_ack=False)
    assert any(isinstance(f, spec.Basic.Deliver) for _, f in peer.read())
    queue = peer.machine.node.vhosts["/"].queues["q"]
    assert queue.message_count == 0
    peer.send_method(1, spec.Channel.Close(
        reply_code=200, reply_text="", class_id=0, method_id=0
    ))  # fmt: skip
    peer.expect(spec.Channel.CloseOk, 1)
    assert queue.message_count == 1 and queue.consumer_count == 0


# content assembly


def test_body_over_many_frames_is_assembled() -> None:
    peer = Peer(make_node())
    peer.handshake(frame_max=4096)
    peer.open_channel(1)
    peer.declare_queue(1, "q")
    body = bytes(range(256)) * 4096  # 1 MiB in 257 body frames
    peer.publish(1, "q", body, frame_max=4096)
    header, received = get_body(peer, 1, "q")
    assert header.body_size == len(body) and received == body
    assert peer.frames == type(peer.frames)()


def test_zero_length_body_has_a_header_and_no_body_frame() -> None:
    peer = opened()
    peer.declare_queue(1, "q")
    peer.send(
        method_frame(1, spec.Basic.Publish(routing_key="q")),
        frame.marshal(ContentHeader(0, 0, spec.Basic.Properties()), 1),
    )
    peer.send_method(1, spec.Basic.Get(queue="q", no_ack=True))
    frames = [f for _, f in peer.read()]
    assert [type(f) for f in frames] == [spec.Basic.GetOk, ContentHeader]
    assert isinstance(frames[1], ContentHeader) and frames[1].body_size == 0


def test_deliveries_are_split_to_the_consumers_frame_max() -> None:
    node = make_node()
    publisher, consumer = Peer(node), Peer(node)
    publisher.handshake(frame_max=131072)
    consumer.handshake(frame_max=4096)
    publisher.open_channel(1)
    consumer.open_channel(1)
    consumer.declare_queue(1, "q")
    consumer.consume(1, "q")
    body = b"z" * 10_000
    publisher.publish(1, "q", body)
    frames = [f for _, f in consumer.read()]
    assert isinstance(frames[0], spec.Basic.Deliver)
    sizes = [len(f.value) for f in frames[2:] if isinstance(f, ContentBody)]
    assert sizes == [4088, 4088, 1824]
    assert b"".join(f.value for f in frames[2:] if isinstance(f, ContentBody)) == body


def test_method_inside_content_is_505() -> None:
    peer = opened()
    peer.send_method(1, spec.Basic.Publish(routing_key="q"))
    peer.send_method(1, spec.Queue.Declare(queue="q"))
    assert_close(
        peer.expect_close(), 505,
        "UNEXPECTED_FRAME - expected content header for class 60, got Queue.Declare",
        (50, 10),
    )  # fmt: skip


def test_publish_while_waiting_for_content_is_505() -> None:
    peer = opened()
    peer.send_method(1, spec.Basic.Publish(routing_key="q"))
    peer.send_method(1, spec.Basic.Publish(routing_key="q"))
    assert_close(
        peer.expect_close(), 505,
        "UNEXPECTED_FRAME - expected content header, got basic.publish", (60, 40),
    )  # fmt: skip


def test_body_without_header_is_505() -> None:
    peer = opened()
    peer.send(frame.marshal(ContentBody(b"x"), 1))
    assert_close(
        peer.expect_close(), 505,
        "UNEXPECTED_FRAME - content body frame without a content header",
    )  # fmt: skip


def test_header_without_publish_is_505() -> None:
    peer = opened()
    peer.send(frame.marshal(ContentHeader(0, 1, spec.Basic.Properties()), 1))
    assert_close(
        peer.expect_close(), 505,
        "UNEXPECTED_FRAME - content header frame without a content method",
    )  # fmt: skip


def test_body_longer_than_announced_is_501() -> None:
    peer = opened()
    peer.send(
        method_frame(1, spec.Basic.Publish(routing_key="q")),
        *content_frames(1, b"abcd", body_size=3),
    )
    assert_close(
        peer.expect_close(), 501,
        "FRAME_ERROR - content body of 4 bytes exceeds the 3 announced",
    )  # fmt: skip


def test_content_header_larger_than_frame_max_is_501() -> None:
    peer = Peer(make_node())
    peer.handshake(frame_max=4096)
    peer.open_channel(1)
    props = spec.Basic.Properties(headers={"big": "h" * 5000})
    peer.send(
        method_frame(1, spec.Basic.Publish(routing_key="q")),
        frame.marshal(ContentHeader(0, 1, props), 1),
    )
    close = peer.expect_close()
    assert close.reply_code == 501
    assert close.reply_text.startswith("FRAME_ERROR - frame of ")
    assert close.reply_text.endswith(" bytes exceeds frame_max 4096")


# limits


def test_message_over_max_message_size_is_406_on_its_channel_only() -> None:
    peer = opened(channels=2, max_message_size=1000)
    peer.declare_queue(2, "q")
    peer.publish(1, "q", b"x" * 1001)  # its body frame lands on a closing channel
    assert_close(
        peer.expect(spec.Channel.Close, 1), 406,
        "PRECONDITION_FAILED - message size 1001 is larger than configured max "
        "size 1000", (60, 40),
    )  # fmt: skip
    peer.publish(2, "q", b"y" * 1000)
    assert get_body(peer, 2, "q")[1] == b"y" * 1000


def test_default_max_message_size_is_128_mib() -> None:
    assert Config().max_message_size == 128 * 1024 * 1024
    peer = opened(channels=2)
    for channel, size in ((1, 128 * 1024 * 1024 + 1), (2, 128 * 1024 * 1024)):
        peer.send(
            method_frame(channel, spec.Basic.Publish(routing_key="q")),
            frame.marshal(ContentHeader(0, size, spec.Basic.Properties()), channel),
        )
    close = peer.expect(spec.Channel.Close, 1)
    assert close.reply_code == 406
    assert "message size 134217729 is larger than configured max size 134217728" in (
        close.reply_text
    )
    assert peer.read() == []  # channel 2 waits for its 128 MiB body
    assert peer.machine.channels[2].assembly is not None


def test_immediate_publish_is_540_on_the_connection() -> None:
    peer = opened()
    peer.send_method(1, spec.Basic.Publish(routing_key="q", immediate=True))
    assert_close(peer.expect_close(), 540, "NOT_IMPLEMENTED - immediate=true", (60, 40))


def test_names_of_255_utf8_bytes_and_any_characters_are_accepted() -> None:
    peer = opened()
    long_name = "é" * 127 + "q"  # 255 bytes of UTF-8
    for name in (long_name, "tâche", "a*b!|[1]"):
        peer.send(queue_declare(name))
        ok = peer.expect(spec.Queue.DeclareOk, 1)
        assert ok.queue == name
    assert len(long_name.encode()) == 255


def test_mandatory_return_carries_a_non_ascii_exchange_name() -> None:
    peer = opened()
    declare = struct.pack(">HHH", 40, 10, 0) + short("échange") + short("direct")
    peer.send(raw_frame(1, 1, declare + NO_FLAGS + NO_ARGUMENTS))
    peer.expect(spec.Exchange.DeclareOk, 1)
    publish = struct.pack(">HHH", 60, 40, 0) + short("échange") + short("nowhere")
    peer.send(raw_frame(1, 1, publish + MANDATORY), *content_frames(1, b"back"))
    returned = peer.expect(spec.Basic.Return, 1)
    assert (returned.reply_code, returned.reply_text) == (312, "NO_ROUTE")
    assert (returned.exchange, returned.routing_key) == ("échange", "nowhere")


def test_names_over_255_bytes_are_refused_by_the_vhost() -> None:
    vhost = make_node().vhosts["/"]
    with pytest.raises(PreconditionFailed) as info:
        vhost.declare_queue(
            "é" * 128, passive=False, durable=False, exclusive=False,
            auto_delete=False, arguments={}, owner=None,
        )  # fmt: skip
    assert info.value.reply_code == 406
    assert info.value.reply_text == (
        "PRECONDITION_FAILED - queue name longer than 255 bytes"
    )
    with pytest.raises(PreconditionFailed):
        vhost.declare_exchange(
            "x" * 256, "direct", passive=False, durable=False,
            auto_delete=False, internal=False, arguments={},
        )  # fmt: skip
