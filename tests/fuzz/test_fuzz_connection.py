"""Fuzzing the connection machine: random and mutated bytes after a handshake.

The machine must never raise out of ``receive()``, everything it writes must
parse as frames, and every bad input must get a protocol answer: a channel or
connection close with the right reply code, never 541 INTERNAL_ERROR (which
means a bug of ours).
"""

from __future__ import annotations

import os
import struct
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pamqp import commands as spec
from pamqp import frame as pamqp_frame
from pamqp.body import ContentBody
from pamqp.header import ContentHeader
from pamqp.heartbeat import Heartbeat

from amqpd.broker.node import Node
from amqpd.codec.frames import PROTOCOL_HEADER, build_method
from amqpd.config import Config
from amqpd.errors import FrameError
from amqpd.protocol.connection import ConnectionMachine

# AMQPD_FUZZ_EXAMPLES=5000 runs a longer search than the default
FUZZ = settings(
    max_examples=int(os.environ.get("AMQPD_FUZZ_EXAMPLES", "200")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
FRAME_MAX = 4096


# the machine and its output


class Harness:
    """A connection machine with everything it wrote, checked as it goes."""

    def __init__(self) -> None:
        node = Node(Config(frame_max=FRAME_MAX))
        node.ensure_defaults()
        self.machine = ConnectionMachine(node, ("127.0.0.1", 1), lambda: None)
        self.out = bytearray()

    def feed(self, data: bytes) -> None:
        self.machine.receive(data)  # must not raise, whatever the bytes
        self.out += self.machine.take_output()

    def handshake(self) -> None:
        self.feed(PROTOCOL_HEADER)
        self.feed(method(0, spec.Connection.StartOk(
            client_properties={"capabilities": {"consumer_cancel_notify": True}},
            mechanism="PLAIN", response="\0guest\0guest", locale="en_US",
        )))  # fmt: skip
        self.feed(method(0, spec.Connection.TuneOk(2047, FRAME_MAX, 0)))
        self.feed(method(0, spec.Connection.Open(virtual_host="/")))
        assert self.machine.state == "opened"
        self.out.clear()

    def answers(self) -> list[tuple[int, int, Any]]:
        """Every frame written so far, decoded; fails on anything malformed."""
        return parse_output(bytes(self.out))


def parse_output(data: bytes) -> list[tuple[int, int, Any]]:
    """Frames as (type, channel, pamqp method or raw payload)."""
    if data[:8] == PROTOCOL_HEADER:
        # the answer to a bad protocol header, and nothing after it
        assert data == PROTOCOL_HEADER
        return []
    frames: list[tuple[int, int, Any]] = []
    pos = 0
    while pos < len(data):
        ftype, channel, size = struct.unpack_from(">BHI", data, pos)
        end = pos + 7 + size
        assert end < len(data), "output ends inside a frame"
        assert data[end] == 0xCE, "output frame has a bad frame-end"
        assert size + 8 <= FRAME_MAX, "output frame exceeds frame_max"
        payload = data[pos + 7 : end]
        if ftype == 1:
            used, _, value = pamqp_frame.unmarshal(data[pos : end + 1])
            assert used == size + 8
        elif ftype == 2:
            assert size >= 14 and payload[:2] == b"\x00\x3c"
            value = payload
        else:
            assert ftype in (3, 8), f"output frame of unknown type {ftype}"
            value = payload
        frames.append((ftype, channel, value))
        pos = end + 1
    return frames


def check_answers(harness: Harness) -> None:
    """Output parses; no internal errors; a connection close ends the output."""
    frames = harness.answers()
    closes = [
        (i, f[2])
        for i, f in enumerate(frames)
        if isinstance(f[2], spec.Connection.Close | spec.Channel.Close)
    ]
    for _, close in closes:
        assert close.reply_code != 541, close.reply_text
        assert close.reply_code in REPLY_CODES, close.reply_code
    for i, close in closes:
        if isinstance(close, spec.Connection.Close):
            assert harness.machine.state in ("closing", "closed")
            tail = frames[i + 1 :]
            assert all(isinstance(f[2], spec.Connection.CloseOk) for f in tail)


REPLY_CODES = {311, 312, 313, 320, 402, 403, 404, 405, 406}
REPLY_CODES |= {501, 502, 503, 504, 505, 506, 530, 540}


# frame builders


def method(channel: int, value: Any) -> bytes:
    return pamqp_frame.marshal(value, channel)


def content(channel: int, body: bytes, props: spec.Basic.Properties) -> bytes:
    header = ContentHeader(0, len(body), props)
    out = [pamqp_frame.marshal(header, channel)]
    for start in range(0, len(body), FRAME_MAX - 8):
        piece = ContentBody(body[start : start + FRAME_MAX - 8])
        out.append(pamqp_frame.marshal(piece, channel))
    return b"".join(out)


def publish(channel: int, exchange: str, key: str, body: bytes, **props: Any) -> bytes:
    return method(
        channel, spec.Basic.Publish(exchange=exchange, routing_key=key)
    ) + content(channel, body, spec.Basic.Properties(**props))


HEADERS_VALUES = {
    "s": "text", "i": 7, "big": 2**40, "neg": -5, "f": 1.5, "t": True,
    "d": Decimal("1.25"), "n": None, "a": [1, "x", [2]], "tb": {"k": "v"},
}  # fmt: skip


def named(value: Any, **names: str) -> Any:
    """A method with names pamqp's ASCII-only checks would refuse."""
    for key, name in names.items():
        setattr(value, key, name)
    return value


def publish_to(channel: int, exchange: str, key: str, mandatory: bool) -> bytes:
    start = spec.Basic.Publish(routing_key=key, mandatory=mandatory)
    return build_method(channel, named(start, exchange=exchange)) + content(
        channel, b"u", spec.Basic.Properties()
    )


DEAD_LETTER_TO_Q = {"x-dead-letter-exchange": "", "x-dead-letter-routing-key": "q"}

OPERATIONS: list[bytes] = [
    method(1, spec.Queue.Declare(queue="q")),
    method(1, spec.Queue.Declare(queue="ttl", arguments={"x-message-ttl": 0})),
    method(1, spec.Queue.Declare(queue="", exclusive=True)),
    method(1, spec.Exchange.Declare(exchange="h", exchange_type="headers")),
    method(1, spec.Exchange.Declare(exchange="t", exchange_type="topic")),
    method(
        1,
        spec.Queue.Bind(
            queue="q", exchange="amq.headers", arguments={"x-match": "any", "s": "text"}
        ),
    ),
    method(1, spec.Queue.Bind(queue="q", exchange="amq.topic", routing_key="#")),
    publish(1, "", "q", b"hello"),
    publish(1, "", "q", b"", headers={"CC": ["ttl"], "BCC": ["q"]}),
    publish(1, "amq.headers", "", b"x" * 5000, headers=HEADERS_VALUES),
    publish(
        1,
        "amq.topic",
        "a.b",
        b"y",
        delivery_mode=2,
        priority=3,
        expiration="60000",
        message_id="m1",
        content_type="text/plain",
    ),
    publish(1, "nope", "q", b"z"),
    method(1, spec.Queue.Declare(queue="dl", arguments=DEAD_LETTER_TO_Q)),
    build_method(1, named(spec.Queue.Declare(), queue="café")),
    build_method(1, named(spec.Exchange.Declare(), exchange="échange")),
    publish_to(1, "échange", "nowhere", True),
    publish_to(1, "", "café", False),
    publish(1, "", "dl", b"d", headers={"x-death": "junk", "CC": ["q"]}),
    publish(1, "", "dl", b"d", headers={"x-death": [{"count": 1, "queue": "dl"}]}),
    method(1, spec.Basic.Get(queue="dl")),
    method(1, spec.Basic.Nack(delivery_tag=0, multiple=True, requeue=False)),
    method(1, spec.Basic.Get(queue="q")),
    method(1, spec.Basic.Get(queue="q", no_ack=True)),
    method(1, spec.Basic.Ack(delivery_tag=1)),
    method(1, spec.Basic.Ack(delivery_tag=0, multiple=True)),
    method(1, spec.Basic.Nack(delivery_tag=1, requeue=True)),
    method(1, spec.Basic.Reject(delivery_tag=2, requeue=False)),
    method(1, spec.Basic.Qos(prefetch_count=2)),
    method(1, spec.Basic.Consume(queue="q", consumer_tag="c1")),
    method(1, spec.Basic.Cancel(consumer_tag="c1")),
    method(1, spec.Basic.Recover(requeue=True)),
    method(1, spec.Confirm.Select()),
    method(1, spec.Tx.Select()),
    method(1, spec.Tx.Commit()),
    method(1, spec.Tx.Rollback()),
    method(1, spec.Channel.Flow(active=False)),
    method(1, spec.Channel.Flow(active=True)),
    method(1, spec.Queue.Purge(queue="q")),
    method(1, spec.Queue.Delete(queue="q")),
    method(1, spec.Exchange.Delete(exchange="h")),
    method(1, spec.Channel.Close(200, "bye", 0, 0)),
    method(1, spec.Channel.CloseOk()),
    method(1, spec.Channel.Open()),
    method(2, spec.Channel.Open()),
    publish(2, "", "q", b"two"),
    method(0, Heartbeat()),
    method(0, spec.Connection.Close(200, "bye", 0, 0)),
]


# strategies

chunk_sizes = st.lists(st.integers(1, 64), min_size=1, max_size=8)


@st.composite
def mutated(draw: st.DrawFn, prefix: bytes = b"") -> bytes:
    """A valid frame sequence with a few random mutations applied."""
    ops = draw(st.lists(st.sampled_from(OPERATIONS), min_size=1, max_size=12))
    data = bytearray(prefix + method(1, spec.Channel.Open()) + b"".join(ops))
    for _ in range(draw(st.integers(1, 4))):
        if not data:
            break
        pos = draw(st.integers(0, len(data) - 1))
        kind = draw(st.sampled_from(["flip", "set", "cut", "insert", "copy"]))
        if kind == "flip":
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif kind == "set":
            data[pos] = draw(st.sampled_from([0x00, 0x01, 0x7F, 0x80, 0xCE, 0xFF]))
        elif kind == "cut":
            del data[pos : pos + draw(st.integers(1, 16))]
        elif kind == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=16))
        else:
            stop = draw(st.integers(pos, len(data)))
            data[pos:pos] = data[pos:stop]
    return bytes(data)


def feed_in_chunks(harness: Harness, data: bytes, sizes: list[int]) -> None:
    pos, i = 0, 0
    while pos < len(data):
        step = sizes[i % len(sizes)]
        harness.feed(data[pos : pos + step])
        check_answers(harness)
        pos += step
        i += 1


# tests


@FUZZ
@given(data=st.binary(max_size=600), sizes=chunk_sizes)
def test_random_bytes_after_handshake_get_protocol_answers(
    data: bytes, sizes: list[int]
) -> None:
    harness = Harness()
    harness.handshake()
    feed_in_chunks(harness, data, sizes)


@FUZZ
@given(data=mutated(), sizes=chunk_sizes)
def test_mutated_frame_sequences_get_protocol_answers(
    data: bytes, sizes: list[int]
) -> None:
    harness = Harness()
    harness.handshake()
    feed_in_chunks(harness, data, sizes)


HANDSHAKE = b"".join((
    PROTOCOL_HEADER,
    method(0, spec.Connection.StartOk(
        client_properties={"capabilities": {"authentication_failure_close": True}},
        mechanism="AMQPLAIN", locale="en_US",
        response="\x05LOGINS\x00\x00\x00\x05guest\x08PASSWORDS\x00\x00\x00\x05guest",
    )),
    method(0, spec.Connection.TuneOk(100, FRAME_MAX, 0)),
    method(0, spec.Connection.Open(virtual_host="/")),
))  # fmt: skip


@FUZZ
@given(data=mutated(HANDSHAKE), sizes=chunk_sizes)
def test_mutated_handshakes_get_protocol_answers(data: bytes, sizes: list[int]) -> None:
    harness = Harness()
    feed_in_chunks(harness, data, sizes)


def test_unmutated_handshake_opens_the_connection() -> None:
    harness = Harness()
    harness.feed(HANDSHAKE)
    assert harness.machine.state == "opened"
    assert isinstance(harness.answers()[-1][2], spec.Connection.OpenOk)


@FUZZ
@given(data=st.binary(max_size=64), sizes=chunk_sizes)
def test_random_bytes_instead_of_protocol_header_get_protocol_answers(
    data: bytes, sizes: list[int]
) -> None:
    harness = Harness()
    feed_in_chunks(harness, data, sizes)
    if len(data) >= 8 and data[:8] != PROTOCOL_HEADER:
        assert bytes(harness.out) == PROTOCOL_HEADER
        assert harness.machine.closed


@FUZZ
@given(
    payload=st.binary(max_size=40),
    ftype=st.sampled_from([1, 2, 3, 8, 0, 4, 255]),
    channel=st.sampled_from([0, 1, 2, 65535]),
)
def test_random_payload_in_well_formed_frame_gets_protocol_answer(
    payload: bytes, ftype: int, channel: int
) -> None:
    harness = Harness()
    harness.handshake()
    harness.feed(method(1, spec.Channel.Open()))
    frame = struct.pack(">BHI", ftype, channel, len(payload)) + payload + b"\xce"
    harness.feed(frame)
    check_answers(harness)


# hot-path methods with truncated or bad fields: the fast path answers as the
# pamqp path does, and as RabbitMQ does (501 FRAME_ERROR naming the method)


@pytest.mark.parametrize(
    "payload",
    [
        b"\x00\x3c\x00\x50",  # basic.ack without its fields
        b"\x00\x3c\x00\x50\x00\x00\x00\x00\x00\x00\x00\x01",  # no bit octet
        b"\x00\x3c\x00\x28\x00\x00",  # basic.publish without exchange
        b"\x00\x3c\x00\x28\x00\x00\x05ab",  # exchange overruns the payload
        b"\x00\x3c\x00\x28\x00\x00\x02\xff\xfe\x00\x00",  # exchange not UTF-8
    ],
    ids=["ack-empty", "ack-no-bits", "publish-empty", "publish-short", "utf8"],
)
def test_undecodable_hot_method_is_closed_with_frame_error(payload: bytes) -> None:
    harness = Harness()
    harness.handshake()
    harness.feed(method(1, spec.Channel.Open()))
    harness.feed(struct.pack(">BHI", 1, 1, len(payload)) + payload + b"\xce")
    close = harness.answers()[-1][2]
    assert isinstance(close, spec.Connection.Close)
    assert close.reply_code == 501
    assert close.reply_text.startswith("FRAME_ERROR - cannot decode")
    assert (close.class_id, close.method_id) == (60, payload[3])
    # the pamqp path, which every other method takes, gives the same answer
    with pytest.raises(FrameError) as slow:
        Harness().machine._decode(payload)
    assert (slow.value.class_id, slow.value.method_id) == (60, payload[3])


def test_ack_during_content_assembly_is_unexpected_frame() -> None:
    harness = Harness()
    harness.handshake()
    harness.feed(method(1, spec.Channel.Open()))
    harness.feed(method(1, spec.Basic.Publish(exchange="", routing_key="q")))
    harness.feed(method(1, spec.Basic.Ack(delivery_tag=1)))
    close = harness.answers()[-1][2]
    assert isinstance(close, spec.Connection.Close)
    assert close.reply_code == 505
    assert "expected content header" in close.reply_text


def header_frame(channel: int, flags: int, props: bytes, size: int = 1) -> bytes:
    payload = struct.pack(">HHQH", 60, 0, size, flags) + props
    return struct.pack(">BHI", 2, channel, len(payload)) + payload + b"\xce"


@pytest.mark.parametrize(
    ("flags", "props"),
    [
        (0x2000, b"\x00\x00"),  # headers table length cut short
        (0x2000, b"\x00\x00\x00\x09"),  # headers table overruns the header
        (0x8000, b""),  # content-type missing
        (0x8001, b""),  # continuation flag word missing
        (0x0040, b"\x00\x00\x00"),  # timestamp cut short
    ],
    ids=["table-length", "table-overrun", "shortstr", "flag-word", "timestamp"],
)
def test_truncated_content_header_is_closed_with_frame_error(
    flags: int, props: bytes
) -> None:
    harness = Harness()
    harness.handshake()
    harness.feed(method(1, spec.Channel.Open()))
    harness.feed(method(1, spec.Basic.Publish(exchange="", routing_key="q")))
    harness.feed(header_frame(1, flags, props))
    harness.feed(struct.pack(">BHI", 3, 1, 1) + b"x\xce")
    close = harness.answers()[-1][2]
    assert isinstance(close, spec.Connection.Close)
    assert close.reply_code == 501


def table_bytes(body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + body


@pytest.mark.parametrize(
    ("exchange", "headers"),
    [
        ("amq.headers", b"\x01sZ"),  # unknown field type
        ("amq.headers", b"\x01aS\x00\x00\x00\x09ab"),  # value overruns the table
        ("amq.headers", b"\x02\xff\xfeS\x00\x00\x00\x00"),  # key not UTF-8
        ("", b"\x02CCA\x00\x00\x00\x09S\x00"),  # CC array overruns
        ("", b"\x02CCS"),  # CC value cut short
        ("", b"\x03BCCZ"),  # BCC of an unknown type
    ],
    ids=["type", "overrun", "key", "cc-array", "cc-short", "bcc-type"],
)
def test_malformed_headers_table_gets_protocol_answer(
    exchange: str, headers: bytes
) -> None:
    harness = Harness()
    harness.handshake()
    harness.feed(method(1, spec.Channel.Open()))
    harness.feed(method(1, spec.Queue.Declare(queue="q")))
    harness.feed(method(1, spec.Queue.Bind(
        queue="q", exchange="amq.headers", arguments={"x-match": "any", "a": 1},
    )))  # fmt: skip
    harness.feed(method(1, spec.Basic.Publish(exchange=exchange, routing_key="q")))
    harness.feed(header_frame(1, 0x2000, table_bytes(headers)))
    harness.feed(struct.pack(">BHI", 3, 1, 1) + b"x\xce")
    check_answers(harness)
    close = harness.answers()[-1][2]
    assert isinstance(close, spec.Connection.Close)
    assert close.reply_code in (501, 502)


@pytest.mark.parametrize(
    ("x_death", "count"),
    [
        ("junk", 1),
        (7, 1),
        (["junk"], 1),
        ([{"count": "x", "queue": "dl", "reason": "rejected"}], 2),
    ],
    ids=["string", "integer", "array-of-string", "count-not-integer"],
)
def test_dead_lettering_a_message_with_a_rewritten_x_death_starts_afresh(
    x_death: Any, count: int
) -> None:
    harness = Harness()
    harness.handshake()
    harness.feed(method(1, spec.Channel.Open()))
    harness.feed(method(1, spec.Queue.Declare(queue="q")))
    harness.feed(method(1, spec.Queue.Declare(queue="dl", arguments=DEAD_LETTER_TO_Q)))
    harness.feed(publish(1, "", "dl", b"d", headers={"x-death": x_death}))
    harness.feed(method(1, spec.Basic.Get(queue="dl")))
    harness.feed(method(1, spec.Basic.Reject(delivery_tag=1, requeue=False)))
    harness.out.clear()
    harness.feed(method(1, spec.Basic.Get(queue="q")))
    check_answers(harness)
    get_ok, header, body = harness.answers()
    assert isinstance(get_ok[2], spec.Basic.GetOk) and body[2] == b"d"
    props = ContentHeader()
    props.unmarshal(header[2])
    deaths = props.properties.headers["x-death"]
    assert len(deaths) == 1
    assert deaths[0]["count"] == count
    assert (deaths[0]["queue"], deaths[0]["reason"]) == ("dl", "rejected")


def test_names_outside_ascii_are_answered_as_sent() -> None:
    harness = Harness()
    harness.handshake()
    harness.feed(method(1, spec.Channel.Open()))
    harness.feed(build_method(1, named(spec.Queue.Declare(), queue="café\x00")))
    harness.feed(build_method(1, named(spec.Exchange.Declare(), exchange="échange")))
    harness.feed(publish_to(1, "échange", "nowhere", True))
    check_answers(harness)
    _, declare_ok, _, returned, _, _ = harness.answers()
    assert declare_ok[2].queue == "café\x00"
    assert returned[2].exchange == "échange"
    assert (returned[2].reply_code, returned[2].routing_key) == (312, "nowhere")


def test_cc_header_that_is_not_an_array_closes_the_channel_with_406() -> None:
    # RabbitMQ: PRECONDITION_FAILED - invalid message:
    # {unacceptable_type_in_header,"CC",longstr}
    harness = Harness()
    harness.handshake()
    harness.feed(method(1, spec.Channel.Open()))
    harness.feed(publish(1, "", "q", b"x", headers={"CC": "q"}))
    close = harness.answers()[-1][2]
    assert isinstance(close, spec.Channel.Close)
    assert (close.reply_code, close.class_id, close.method_id) == (406, 60, 40)
    assert "'CC'" in close.reply_text


def test_cc_items_that_are_not_strings_are_ignored() -> None:
    harness = Harness()
    harness.handshake()
    harness.feed(method(1, spec.Channel.Open()))
    harness.feed(method(1, spec.Queue.Declare(queue="q")))
    cc = b"\x02CCA" + struct.pack(">I", 11) + b"I\x00\x00\x00\x07S\x00\x00\x00\x01q"
    harness.feed(method(1, spec.Basic.Publish(exchange="", routing_key="none")))
    harness.feed(header_frame(1, 0x2000, table_bytes(cc)))
    harness.feed(struct.pack(">BHI", 3, 1, 1) + b"x\xce")
    harness.out.clear()
    harness.feed(method(1, spec.Basic.Get(queue="q")))
    check_answers(harness)
    get_ok = harness.answers()[0][2]
    assert isinstance(get_ok, spec.Basic.GetOk)
    assert get_ok.routing_key == "none"
