"""Dead-lettering as clients see it: where the copy goes, and its x-death.

The x-death header is read twice: with pika for the values, and from the raw
content header bytes (a raw-socket basic.get) for the field types, since
pika decodes the 64-bit long ``count`` and a 32-bit int alike. Headers the
client wrote come back with their bytes unchanged; ``expiration`` is
removed; x-first-death-* is written once and x-last-death-* every time.

Checked against RabbitMQ 3.10, which writes the same x-death entries but no
x-last-death-* headers (those came with later RabbitMQ releases).
"""

from __future__ import annotations

import datetime
import socket
import struct
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pika
import pytest
from amqp_wire import RawClient, raw_frame
from pamqp import commands as spec
from pamqp import frame
from pika.adapters.blocking_connection import BlockingChannel, BlockingConnection
from pika.compat import long

from amqpd.testing import BrokerThread

FRAME_HEADER, FRAME_BODY = 2, 3
DECLARED: list[tuple[str, str]] = []  # (kind, name), deleted after each test

# a field value as read off the wire: (type tag, value); tables and arrays
# hold tagged values too
Tagged = tuple[str, Any]


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def broker(amqpd_session_broker: BrokerThread) -> BrokerThread:
    return amqpd_session_broker


@pytest.fixture
def conn(broker: BrokerThread) -> Iterator[BlockingConnection]:
    connection = pika.BlockingConnection(pika.URLParameters(broker.url))
    yield connection
    if connection.is_open:
        cleanup = connection.channel()
        for kind, name in DECLARED:
            if kind == "queue":
                cleanup.queue_delete(name)
            else:
                cleanup.exchange_delete(name)
        connection.close()
    DECLARED.clear()


@pytest.fixture
def ch(conn: BlockingConnection) -> BlockingChannel:
    channel = conn.channel()
    channel.confirm_delivery()
    return channel


def queue(ch: BlockingChannel, prefix: str, **arguments: Any) -> str:
    name = unique(prefix)
    ch.queue_declare(name, arguments=arguments)
    DECLARED.append(("queue", name))
    return name


def exchange(ch: BlockingChannel, prefix: str, kind: str = "direct") -> str:
    name = unique(prefix)
    ch.exchange_declare(name, kind)
    DECLARED.append(("exchange", name))
    return name


def dlx_args(dlx: str, key: str | None = None, **more: Any) -> dict[str, Any]:
    arguments = {"x-dead-letter-exchange": dlx, **more}
    if key is not None:
        arguments["x-dead-letter-routing-key"] = key
    return arguments


def reject(ch: BlockingChannel, name: str) -> bytes:
    """basic.get one message and reject it without requeue; its body."""
    method, _props, body = ch.basic_get(name)
    assert method is not None, f"nothing in {name}"
    ch.basic_reject(method.delivery_tag, requeue=False)
    return bytes(body)


def wait_get(
    ch: BlockingChannel, name: str, timeout: float = 3.0
) -> tuple[Any, pika.BasicProperties, bytes]:
    """basic.get (auto-ack) until a message comes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        method, props, body = ch.basic_get(name, auto_ack=True)
        if method is not None:
            return method, props, body
        time.sleep(0.01)
    raise AssertionError(f"nothing arrived in {name} within {timeout}s")


def ready(ch: BlockingChannel, name: str) -> int:
    count: int = ch.queue_declare(name, passive=True).method.message_count
    return count


# field tables decoded with their type tags, written out for these tests

_FIXED = {"t": ">B", "b": ">b", "B": ">B", "s": ">h", "u": ">H", "I": ">i",
          "i": ">I", "l": ">q", "f": ">f", "d": ">d", "T": ">Q",
          "D": ">BI"}  # fmt: skip


def tagged_value(data: bytes, pos: int) -> tuple[Tagged, int]:
    tag = chr(data[pos])
    pos += 1
    if tag in _FIXED:
        fmt = _FIXED[tag]
        value = struct.unpack_from(fmt, data, pos)
        return (tag, value[0] if len(value) == 1 else value), pos + struct.calcsize(fmt)
    if tag == "V":
        return (tag, None), pos
    (size,) = struct.unpack_from(">I", data, pos)
    raw, end = data[pos + 4 : pos + 4 + size], pos + 4 + size
    if tag == "F":
        return (tag, tagged_table(raw)), end
    if tag == "A":
        items, at = [], 0
        while at < len(raw):
            item, at = tagged_value(raw, at)
            items.append(item)
        return (tag, items), end
    assert tag in "Sx", f"unknown field type {tag!r}"
    return (tag, raw), end


def tagged_table(data: bytes) -> list[tuple[str, Tagged]]:
    """A field table's content (no length prefix) as (name, tagged value)."""
    fields, pos = [], 0
    while pos < len(data):
        size = data[pos]
        name = data[pos + 1 : pos + 1 + size].decode()
        value, pos = tagged_value(data, pos + 1 + size)
        fields.append((name, value))
    return fields


PROPERTY_KINDS = (
    ("content_type", "s"), ("content_encoding", "s"), ("headers", "F"),
    ("delivery_mode", "o"), ("priority", "o"), ("correlation_id", "s"),
    ("reply_to", "s"), ("expiration", "s"), ("message_id", "s"),
    ("timestamp", "T"), ("type", "s"), ("user_id", "s"), ("app_id", "s"),
    ("cluster_id", "s"),
)  # fmt: skip


def properties_of(header: bytes) -> dict[str, Any]:
    """A content header payload's properties; headers as tagged fields."""
    (flags,) = struct.unpack_from(">H", header, 12)
    pos, found = 14, dict[str, Any]()
    for i, (name, kind) in enumerate(PROPERTY_KINDS):
        if not flags & (1 << (15 - i)):
            continue
        if kind == "s":
            size = header[pos]
            found[name] = header[pos + 1 : pos + 1 + size].decode()
            pos += 1 + size
        elif kind == "o":
            found[name], pos = header[pos], pos + 1
        elif kind == "T":
            found[name], pos = struct.unpack_from(">Q", header, pos)[0], pos + 8
        else:
            (size,) = struct.unpack_from(">I", header, pos)
            found[name] = tagged_table(header[pos + 4 : pos + 4 + size])
            pos += 4 + size
    return found


# the raw client


def shortstr(value: str) -> bytes:
    raw = value.encode()
    return bytes((len(raw),)) + raw


def longstr(value: bytes) -> bytes:
    return struct.pack(">I", len(value)) + value


# a header of the client's own, one field of every type, as bytes
CLIENT_FIELDS = (
    ("bool", b"t\x01"),
    ("int8", b"b" + struct.pack(">b", -5)),
    ("uint8", b"B\xfa"),
    ("int16", b"s" + struct.pack(">h", -300)),
    ("uint16", b"u" + struct.pack(">H", 65000)),
    ("int32", b"I" + struct.pack(">i", 7)),
    ("uint32", b"i" + struct.pack(">I", 4_000_000_000)),
    ("int64", b"l" + struct.pack(">q", -(2**40))),
    ("float", b"f" + struct.pack(">f", 1.5)),
    ("double", b"d" + struct.pack(">d", 2.25)),
    ("decimal", b"D" + struct.pack(">BI", 2, 12345)),
    ("text", b"S" + longstr("héllo".encode())),
    ("array", b"A" + longstr(b"I\x00\x00\x00\x07S" + longstr(b"x"))),
    ("stamp", b"T" + struct.pack(">Q", 1_700_000_000)),
    ("table", b"F" + longstr(shortstr("inner") + b"S" + longstr(b"deep"))),
    ("void", b"V"),
    ("bytes", b"x" + longstr(b"\x00\xff")),
)
CLIENT_TABLE = b"".join(shortstr(name) + value for name, value in CLIENT_FIELDS)


def client_header(body_size: int, expiration: str) -> bytes:
    """content_type, headers, delivery_mode, correlation_id, expiration."""
    flags = 0x8000 | 0x2000 | 0x1000 | 0x0400 | 0x0100
    props = b"".join((
        shortstr("text/plain"), longstr(CLIENT_TABLE), b"\x01",
        shortstr("corr-7"), shortstr(expiration),
    ))  # fmt: skip
    return struct.pack(">HHQH", 60, 0, body_size, flags) + props


class RawSession:
    """One raw-socket connection with channel 1 open, in confirm mode."""

    def __init__(self, port: int) -> None:
        self.client = RawClient(port)
        self.client.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.client.handshake()
        self.client.open_channel(1)
        self.client.send_method(1, spec.Confirm.Select())
        self.client.expect(spec.Confirm.SelectOk, 1)

    def __enter__(self) -> RawSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.client.close()

    def publish(self, exchange: str, key: str, header: bytes, body: bytes) -> None:
        self.client.send(
            frame.marshal(spec.Basic.Publish(exchange=exchange, routing_key=key), 1),
            raw_frame(FRAME_HEADER, 1, header),
            raw_frame(FRAME_BODY, 1, body),
        )
        self.client.expect(spec.Basic.Ack, 1)

    def get(self, queue: str) -> tuple[spec.Basic.GetOk, bytes, bytes]:
        """basic.get (no-ack): the get-ok, the raw content header, the body."""
        self.client.send_method(1, spec.Basic.Get(queue=queue, no_ack=True))
        get_ok = self.client.expect(spec.Basic.GetOk, 1)
        ftype, header = self._raw()
        assert ftype == FRAME_HEADER
        (size,) = struct.unpack_from(">Q", header, 4)
        body = b""
        while len(body) < size:
            ftype, chunk = self._raw()
            assert ftype == FRAME_BODY
            body += chunk
        return get_ok, header, body

    def _raw(self) -> tuple[int, bytes]:
        ftype, _channel, size = struct.unpack(">BHI", self.client.recv_exact(7))
        payload = self.client.recv_exact(size + 1)
        return ftype, payload[:-1]


def split_time(death: dict[str, Tagged]) -> tuple[dict[str, Tagged], int]:
    """The death without its time, and the time (checked to be a timestamp)."""
    tag, stamp = death.pop("time")
    assert tag == "T"
    return death, stamp


# the whole x-death


def test_rejected_message_carries_the_whole_x_death_with_types(
    broker: BrokerThread, ch: BlockingChannel
) -> None:
    dlq = queue(ch, "dlq")
    source = queue(ch, "src", **dlx_args("", dlq))
    body = b"payload"
    before = int(time.time())
    with RawSession(broker.port) as raw:
        raw.publish("", source, client_header(len(body), "60000"), body)
        assert reject(ch, source) == body
        get_ok, header, got_body = raw.get(dlq)
    after = int(time.time())

    assert (get_ok.exchange, get_ok.routing_key, got_body) == ("", dlq, body)
    props = properties_of(header)
    assert "expiration" not in props
    assert (props["content_type"], props["delivery_mode"]) == ("text/plain", 1)
    assert props["correlation_id"] == "corr-7"
    headers = dict(props["headers"])
    # the client's own fields, byte for byte (so, type for type)
    assert [(n, headers[n]) for n, _ in CLIENT_FIELDS] == tagged_table(CLIENT_TABLE)
    assert set(headers) == {n for n, _ in CLIENT_FIELDS} | {
        "x-death", "x-first-death-queue", "x-first-death-reason",
        "x-first-death-exchange", "x-last-death-queue", "x-last-death-reason",
        "x-last-death-exchange",
    }  # fmt: skip

    tag, deaths = headers["x-death"]
    assert tag == "A" and len(deaths) == 1 and deaths[0][0] == "F"
    death, stamp = split_time(dict(deaths[0][1]))
    assert before <= stamp <= after
    assert death == {
        "count": ("l", 1),
        "reason": ("S", b"rejected"),
        "queue": ("S", source.encode()),
        "exchange": ("S", b""),
        "routing-keys": ("A", [("S", source.encode())]),
        "original-expiration": ("S", b"60000"),
    }
    for which in ("first", "last"):
        assert headers[f"x-{which}-death-queue"] == ("S", source.encode())
        assert headers[f"x-{which}-death-reason"] == ("S", b"rejected")
        assert headers[f"x-{which}-death-exchange"] == ("S", b"")


def x_death(props: pika.BasicProperties) -> list[dict[str, Any]]:
    """x-death as pika decodes it, each time checked and left out."""
    deaths: list[dict[str, Any]] = props.headers["x-death"]
    out = []
    for death in deaths:
        death = dict(death)
        assert isinstance(death.pop("time"), datetime.datetime)
        assert type(death["count"]) is long  # pika's type for the 'l' tag
        out.append(death)
    return out


@pytest.mark.parametrize("reason", ["rejected", "expired", "maxlen"])
def test_x_death_names_the_reason(ch: BlockingChannel, reason: str) -> None:
    dlq = queue(ch, "dlq")
    more = {"rejected": {}, "expired": {"x-message-ttl": 50},
            "maxlen": {"x-max-length": 1}}[reason]  # fmt: skip
    source = queue(ch, "src", **dlx_args("", dlq, **more))
    ch.basic_publish("", source, b"first")
    if reason == "rejected":
        reject(ch, source)
    elif reason == "maxlen":
        ch.basic_publish("", source, b"second")  # pushes the first out

    _method, props, body = wait_get(ch, dlq)
    assert body == b"first"
    assert x_death(props) == [{
        "count": 1, "reason": reason, "queue": source, "exchange": "",
        "routing-keys": [source],
    }]  # fmt: skip


def test_nack_multiple_without_requeue_dead_letters_each_in_order(
    ch: BlockingChannel,
) -> None:
    dlq = queue(ch, "dlq")
    source = queue(ch, "src", **dlx_args("", dlq))
    for body in (b"a", b"b", b"c"):
        ch.basic_publish("", source, body)
    tags = [ch.basic_get(source)[0].delivery_tag for _ in range(3)]
    ch.basic_nack(tags[-1], multiple=True, requeue=False)

    got = [wait_get(ch, dlq) for _ in range(3)]
    assert [body for _, _, body in got] == [b"a", b"b", b"c"]
    assert all(x_death(p)[0]["reason"] == "rejected" for _, p, _ in got)
    assert ready(ch, source) == 0


# where the copy goes


def test_dead_letter_routing_key_replaces_routing_key_and_cc(
    ch: BlockingChannel,
) -> None:
    src, dlx = exchange(ch, "src"), exchange(ch, "dlx")
    dlq = queue(ch, "dlq")
    ch.queue_bind(dlq, dlx, "dl-key")
    source = queue(ch, "src", **dlx_args(dlx, "dl-key"))
    ch.queue_bind(source, src, "orig")
    ch.queue_bind(source, src, "cc-key")
    ch.basic_publish(src, "orig", b"m", pika.BasicProperties(
        headers={"CC": ["cc-key"], "keep": "me"}
    ))  # fmt: skip
    assert ready(ch, source) == 1
    reject(ch, source)

    method, props, _body = wait_get(ch, dlq)
    assert (method.exchange, method.routing_key) == (dlx, "dl-key")
    headers = dict(props.headers)
    assert "CC" not in headers and headers["keep"] == "me"
    assert x_death(props) == [{
        "count": 1, "reason": "rejected", "queue": source, "exchange": src,
        "routing-keys": ["orig", "cc-key"],
    }]  # fmt: skip


def test_without_dead_letter_routing_key_the_original_keys_route_the_copy(
    ch: BlockingChannel,
) -> None:
    dlx = exchange(ch, "dlx")
    by_key, by_cc = queue(ch, "dlq-key"), queue(ch, "dlq-cc")
    source = queue(ch, "src", **dlx_args(dlx))
    ch.queue_bind(by_key, dlx, source)  # the key it was published with
    ch.queue_bind(by_cc, dlx, "cc-key")
    ch.basic_publish("", source, b"m", pika.BasicProperties(headers={"CC": ["cc-key"]}))
    reject(ch, source)

    for name in (by_key, by_cc):
        method, props, _body = wait_get(ch, name)
        assert (method.exchange, method.routing_key) == (dlx, source)
        assert props.headers["CC"] == ["cc-key"]


def test_fanout_dead_letter_exchange_copies_to_every_bound_queue(
    ch: BlockingChannel,
) -> None:
    dlx = exchange(ch, "dlx", "fanout")
    first, second = queue(ch, "dlq1"), queue(ch, "dlq2")
    ch.queue_bind(first, dlx)
    ch.queue_bind(second, dlx)
    source = queue(ch, "src", **dlx_args(dlx))
    ch.basic_publish("", source, b"m")
    reject(ch, source)

    assert wait_get(ch, first)[2] == b"m"
    assert wait_get(ch, second)[2] == b"m"


def test_missing_dead_letter_exchange_drops_the_message(
    conn: BlockingConnection, ch: BlockingChannel
) -> None:
    source = queue(ch, "src", **dlx_args(unique("no-such-exchange")))
    ch.basic_publish("", source, b"m")
    reject(ch, source)

    assert ready(ch, source) == 0
    assert conn.is_open and ch.is_open


def test_expired_copy_loses_expiration_and_keeps_original_expiration(
    ch: BlockingChannel,
) -> None:
    dlq = queue(ch, "dlq")
    source = queue(ch, "src", **dlx_args("", dlq))
    ch.basic_publish("", source, b"m", pika.BasicProperties(
        expiration="50", headers={"n": 1}, priority=3
    ))  # fmt: skip

    _method, props, _body = wait_get(ch, dlq)
    assert props.expiration is None
    assert props.priority == 3
    assert props.headers["n"] == 1
    assert x_death(props) == [{
        "count": 1, "reason": "expired", "queue": source, "exchange": "",
        "routing-keys": [source], "original-expiration": "50",
    }]  # fmt: skip


# history: counts, first and last deaths, cycles


def test_retry_loop_counts_each_queue_and_reason_most_recent_first(
    broker: BrokerThread, ch: BlockingChannel
) -> None:
    """work rejects into retry; retry's TTL dead-letters back into work:
    a cycle with a rejection in it, so it goes on, and x-death counts."""
    dlx = exchange(ch, "dlx")
    work = queue(ch, "work", **dlx_args(dlx, "retry"))
    retry = queue(ch, "retry", **dlx_args(dlx, "work", **{"x-message-ttl": 50}))
    ch.queue_bind(work, dlx, "work")
    ch.queue_bind(retry, dlx, "retry")
    ch.basic_publish("", work, b"job")

    for _ in range(2):
        reject(ch, work)  # into retry, back into work 50 ms later
        deadline = time.monotonic() + 3.0
        while ready(ch, work) == 0:
            assert time.monotonic() < deadline
            time.sleep(0.01)

    with RawSession(broker.port) as raw:
        get_ok, header, body = raw.get(work)
    assert (get_ok.exchange, get_ok.routing_key, body) == (dlx, "work", b"job")
    headers = dict(properties_of(header)["headers"])
    tag, items = headers["x-death"]
    assert tag == "A" and [t for t, _ in items] == ["F", "F"]
    deaths = [split_time(dict(fields))[0] for _, fields in items]
    assert deaths == [
        {
            "count": ("l", 2), "reason": ("S", b"expired"),
            "queue": ("S", retry.encode()), "exchange": ("S", dlx.encode()),
            "routing-keys": ("A", [("S", b"retry")]),
        },
        {
            "count": ("l", 2), "reason": ("S", b"rejected"),
            "queue": ("S", work.encode()), "exchange": ("S", b""),
            "routing-keys": ("A", [("S", work.encode())]),
        },
    ]  # fmt: skip
    assert [headers[f"x-first-death-{k}"] for k in ("queue", "reason", "exchange")] == [
        ("S", work.encode()), ("S", b"rejected"), ("S", b""),
    ]  # fmt: skip
    assert [headers[f"x-last-death-{k}"] for k in ("queue", "reason", "exchange")] == [
        ("S", retry.encode()), ("S", b"expired"), ("S", dlx.encode()),
    ]  # fmt: skip


def test_rejecting_twice_in_one_queue_bumps_the_count(ch: BlockingChannel) -> None:
    dlx = exchange(ch, "dlx")
    source = queue(ch, "src", **dlx_args(dlx, "back"))
    ch.queue_bind(source, dlx, "back")
    ch.basic_publish("", source, b"m", pika.BasicProperties(headers={"k": "v"}))
    reject(ch, source)
    reject(ch, source)

    method, props, _body = wait_get(ch, source)
    assert (method.exchange, method.routing_key) == (dlx, "back")
    assert props.headers["k"] == "v"
    assert x_death(props) == [{
        "count": 2, "reason": "rejected", "queue": source, "exchange": "",
        "routing-keys": [source],
    }]  # fmt: skip
    assert props.headers["x-first-death-exchange"] == ""
    assert props.headers["x-last-death-exchange"] == dlx


def stays_empty(ch: BlockingChannel, *names: str, checks: int = 6) -> bool:
    """True if every queue has no ready message at each of several looks."""
    for _ in range(checks):
        if any(ready(ch, name) for name in names):
            return False
        time.sleep(0.05)
    return True


def test_expiry_back_into_the_same_queue_drops_the_message(
    ch: BlockingChannel,
) -> None:
    name = unique("loop")
    ch.queue_declare(name, arguments=dlx_args("", name, **{"x-message-ttl": 50}))
    DECLARED.append(("queue", name))
    ch.basic_publish("", name, b"m")
    time.sleep(0.2)

    assert stays_empty(ch, name)


def test_expiry_cycle_through_two_queues_drops_the_message(
    ch: BlockingChannel,
) -> None:
    first, second = unique("loop-a"), unique("loop-b")
    for name, target in ((first, second), (second, first)):
        ch.queue_declare(name, arguments=dlx_args("", target, **{"x-message-ttl": 50}))
        DECLARED.append(("queue", name))
    ch.basic_publish("", first, b"m")
    time.sleep(0.3)

    assert stays_empty(ch, first, second)


def test_expiry_cycle_after_an_earlier_rejection_is_still_dropped(
    ch: BlockingChannel,
) -> None:
    """The rejection happened before the loop, not inside it."""
    loop = unique("loop")
    ch.queue_declare(loop, arguments=dlx_args("", loop, **{"x-message-ttl": 50}))
    DECLARED.append(("queue", loop))
    entry = queue(ch, "entry", **dlx_args("", loop))
    ch.basic_publish("", entry, b"m")
    reject(ch, entry)
    time.sleep(0.2)

    assert stays_empty(ch, loop)
