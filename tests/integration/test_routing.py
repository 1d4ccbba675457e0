"""Where published messages go, as clients see it.

Exchange types, exchange-to-exchange bindings, alternate exchanges, mandatory
returns, CC/BCC headers, the server's basic.cancel and publishing to a
missing exchange. Behaviour follows RabbitMQ 3.10, checked against a real
node where the specification leaves room.
"""

from __future__ import annotations

import datetime
import socket
import struct
import uuid
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pika
import pytest
from pamqp import commands as spec
from pamqp import frame
from pamqp.base import Frame as Method
from pika.adapters.blocking_connection import BlockingChannel, BlockingConnection
from pika.compat import long
from pika.exceptions import ChannelClosedByBroker, UnroutableError

from amqpd.testing import BrokerThread


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def conn(amqpd_session_broker: BrokerThread) -> Iterator[BlockingConnection]:
    connection = pika.BlockingConnection(pika.URLParameters(amqpd_session_broker.url))
    yield connection
    if connection.is_open:
        connection.close()


@pytest.fixture
def ch(conn: BlockingConnection) -> BlockingChannel:
    """A channel in confirm mode: once basic_publish returns, the message is
    routed (RabbitMQ gives no such promise without confirms), and a
    mandatory message that comes back raises UnroutableError."""
    channel = conn.channel()
    channel.confirm_delivery()
    return channel


def new_queue(ch: BlockingChannel) -> str:
    name: str = ch.queue_declare("", exclusive=True).method.queue
    return name


def drain(ch: BlockingChannel, queue: str) -> list[bytes]:
    """Every ready message's body, taken with basic.get (no-ack)."""
    bodies: list[bytes] = []
    for _ in range(1000):
        method, _props, body = ch.basic_get(queue, auto_ack=True)
        if method is None:
            return bodies
        bodies.append(body)
    raise AssertionError(f"queue {queue} did not run dry")


def ready(ch: BlockingChannel, queue: str) -> int:
    count: int = ch.queue_declare(queue, passive=True).method.message_count
    return count


# direct and fanout


def test_direct_exchange_routes_on_the_exact_key(ch: BlockingChannel) -> None:
    exchange = unique("direct")
    ch.exchange_declare(exchange, "direct")
    one, two = new_queue(ch), new_queue(ch)
    ch.queue_bind(one, exchange, "k")
    ch.queue_bind(one, exchange, "j")
    ch.queue_bind(two, exchange, "k")
    for key in ("k", "K", "k.x", "", "j"):
        ch.basic_publish(exchange, key, key.encode() or b"empty")
    assert drain(ch, one) == [b"k", b"j"]
    assert drain(ch, two) == [b"k"]


def test_direct_exchange_routes_the_empty_key(ch: BlockingChannel) -> None:
    exchange = unique("direct-empty")
    ch.exchange_declare(exchange, "direct")
    queue = new_queue(ch)
    ch.queue_bind(queue, exchange, "")
    ch.basic_publish(exchange, "", b"empty")
    ch.basic_publish(exchange, "x", b"x")
    assert drain(ch, queue) == [b"empty"]


def test_fanout_exchange_ignores_the_key_and_copies_once_per_queue(
    ch: BlockingChannel,
) -> None:
    exchange = unique("fanout")
    ch.exchange_declare(exchange, "fanout")
    one, two = new_queue(ch), new_queue(ch)
    ch.queue_bind(one, exchange, "a")
    ch.queue_bind(one, exchange, "b")  # a second binding: still one copy
    ch.queue_bind(two, exchange)
    ch.basic_publish(exchange, "anything", b"m1")
    ch.basic_publish(exchange, "", b"m2")
    assert drain(ch, one) == [b"m1", b"m2"]
    assert drain(ch, two) == [b"m1", b"m2"]


# topic

TOPIC_CASES = [
    ("a.b", "a.b", True),
    ("a.b", "a.b.c", False),
    ("*.b", "a.b", True),
    ("*.b", "b", False),
    ("*", "a", True),
    ("*", "a.b", False),
    ("*", "", False),
    ("a.*", "a", False),
    ("a.*.c", "a..c", True),
    ("#", "", True),
    ("#", "a.b.c", True),
    ("a.#", "a", True),
    ("a.#", "a.b.c", True),
    ("a.#", "b.a", False),
    ("#.c", "c", True),
    ("#.c", "a.b.c", True),
    ("#.c", "a.b.c.d", False),
    ("a.#.b", "a.b", True),
    ("a.#.b", "a.x.b", True),
    ("a.#.b", "a.x.y.z.b", True),
    ("a.#.b", "a.x.c", False),
    ("a.#.b", "a.b.c", False),
    ("#.#", "a", True),
    ("*.#", "", False),
    ("*.#", "a", True),
    ("a.*.#", "a.b", True),
    ("a.*.#", "a", False),
    ("#.*", "a.b.c", True),
]


@pytest.mark.parametrize(("pattern", "key", "matches"), TOPIC_CASES)
def test_topic_binding_pattern_matches_key(
    ch: BlockingChannel, pattern: str, key: str, matches: bool
) -> None:
    exchange = unique("topic")
    ch.exchange_declare(exchange, "topic")
    queue = new_queue(ch)
    ch.queue_bind(queue, exchange, pattern)
    ch.basic_publish(exchange, key, b"m")
    assert ready(ch, queue) == int(matches)


def test_topic_message_matching_several_patterns_is_delivered_once(
    ch: BlockingChannel,
) -> None:
    exchange = unique("topic-multi")
    ch.exchange_declare(exchange, "topic")
    queue, other = new_queue(ch), new_queue(ch)
    for pattern in ("#", "a.*", "a.b", "*.b", "a.#.b"):
        ch.queue_bind(queue, exchange, pattern)
    ch.queue_bind(other, exchange, "x.#")
    ch.basic_publish(exchange, "a.b", b"m")
    assert ready(ch, queue) == 1
    assert ready(ch, other) == 0
    ch.queue_unbind(queue, exchange, "#")
    ch.basic_publish(exchange, "z.z", b"unmatched now")
    assert ready(ch, queue) == 1


# headers

HEADER_CASES = [
    # (x-match, binding conditions, message headers, matches)
    ("all", {"a": 1, "b": "x"}, {"a": 1, "b": "x", "c": 3}, True),
    ("all", {"a": 1, "b": "x"}, {"a": 1}, False),
    ("all", {"a": 1}, {"a": 2}, False),
    ("all", {"a": 1}, None, False),
    ("all", {}, None, True),
    ("any", {"a": 1, "b": "x"}, {"b": "x"}, True),
    ("any", {"a": 1, "b": "x"}, {"a": 2, "b": "y"}, False),
    ("any", {}, {"a": 1}, False),
    ("all", {"a": 1, "x-b": 2}, {"a": 1}, True),
    ("all-with-x", {"a": 1, "x-b": 2}, {"a": 1}, False),
    ("all-with-x", {"a": 1, "x-b": 2}, {"a": 1, "x-b": 2}, True),
    ("any", {"x-b": 2}, {"x-b": 2}, False),
    ("any-with-x", {"x-b": 2}, {"x-b": 2}, True),
    ("any-with-x", {"x-b": 2, "c": 1}, {"c": 1}, True),
    ("all", {"flag": True}, {"flag": True}, True),
    ("all", {"flag": True}, {"flag": 1}, False),
    ("all", {"n": 7}, {"n": long(7)}, True),
    ("all", {"present": None}, {"present": "anything"}, True),
    ("all", {"present": None}, {"other": 1}, False),
]


@pytest.mark.parametrize(("x_match", "conditions", "headers", "matches"), HEADER_CASES)
def test_headers_binding_matches_message_headers(
    ch: BlockingChannel,
    x_match: str,
    conditions: dict[str, Any],
    headers: dict[str, Any] | None,
    matches: bool,
) -> None:
    exchange = unique("headers")
    ch.exchange_declare(exchange, "headers")
    queue = new_queue(ch)
    ch.queue_bind(queue, exchange, "", arguments={"x-match": x_match, **conditions})
    ch.basic_publish(exchange, "ignored", b"m", pika.BasicProperties(headers=headers))
    assert ready(ch, queue) == int(matches)


def test_headers_binding_without_x_match_means_all(ch: BlockingChannel) -> None:
    exchange = unique("headers-default")
    ch.exchange_declare(exchange, "headers")
    queue = new_queue(ch)
    ch.queue_bind(queue, exchange, "", arguments={"a": 1, "b": 2})
    for headers in ({"a": 1}, {"a": 1, "b": 2}, {"b": 2}):
        ch.basic_publish(exchange, "", b"%d" % len(headers),
                         pika.BasicProperties(headers=headers))  # fmt: skip
    assert drain(ch, queue) == [b"2"]


def test_predeclared_amq_match_is_a_headers_exchange(ch: BlockingChannel) -> None:
    queue = new_queue(ch)
    tag = unique("tag")
    args = {"x-match": "any", "tag": tag}
    ch.queue_bind(queue, "amq.match", "", arguments=args)
    ch.basic_publish("amq.match", "", b"hit", pika.BasicProperties(headers=args))
    ch.basic_publish("amq.match", "", b"miss")
    assert drain(ch, queue) == [b"hit"]
    ch.queue_unbind(queue, "amq.match", "", arguments=args)


# exchange-to-exchange bindings


def test_exchange_binding_chain_routes_through_every_hop(ch: BlockingChannel) -> None:
    first, middle, last = unique("e2e-1"), unique("e2e-2"), unique("e2e-3")
    ch.exchange_declare(first, "topic")
    ch.exchange_declare(middle, "direct")
    ch.exchange_declare(last, "fanout")
    ch.exchange_bind(middle, first, "a.*")
    ch.exchange_bind(last, middle, "a.b")
    queue = new_queue(ch)
    ch.queue_bind(queue, last)
    ch.basic_publish(first, "a.b", b"through")
    ch.basic_publish(first, "a.c", b"stops at middle")
    ch.basic_publish(first, "b.b", b"stops at first")
    method, _props, body = ch.basic_get(queue, auto_ack=True)
    assert body == b"through"
    assert method.exchange == first and method.routing_key == "a.b"
    assert method.message_count == 0


def test_exchange_binding_cycle_delivers_each_message_once(
    ch: BlockingChannel,
) -> None:
    one, two = unique("cycle-1"), unique("cycle-2")
    ch.exchange_declare(one, "fanout")
    ch.exchange_declare(two, "fanout")
    ch.exchange_bind(two, one)
    ch.exchange_bind(one, two)
    q_one, q_two = new_queue(ch), new_queue(ch)
    ch.queue_bind(q_one, one)
    ch.queue_bind(q_two, two)
    ch.basic_publish(one, "", b"from one")
    ch.basic_publish(two, "", b"from two")
    assert drain(ch, q_one) == [b"from one", b"from two"]
    assert drain(ch, q_two) == [b"from one", b"from two"]


def test_exchange_bound_to_itself_delivers_once(ch: BlockingChannel) -> None:
    exchange = unique("self")
    ch.exchange_declare(exchange, "fanout")
    ch.exchange_bind(exchange, exchange)
    queue = new_queue(ch)
    ch.queue_bind(queue, exchange)
    ch.basic_publish(exchange, "", b"m")
    assert drain(ch, queue) == [b"m"]


def test_queue_reached_by_two_paths_gets_one_copy(ch: BlockingChannel) -> None:
    top, left, right = unique("top"), unique("left"), unique("right")
    ch.exchange_declare(top, "fanout")
    ch.exchange_declare(left, "fanout")
    ch.exchange_declare(right, "direct")
    ch.exchange_bind(left, top)
    ch.exchange_bind(right, top)
    queue = new_queue(ch)
    ch.queue_bind(queue, left)
    ch.queue_bind(queue, right, "k")
    ch.queue_bind(queue, top)  # and a third, direct path
    ch.basic_publish(top, "k", b"once")
    assert drain(ch, queue) == [b"once"]


def test_exchange_unbind_stops_routing(ch: BlockingChannel) -> None:
    source, dest = unique("src"), unique("dst")
    ch.exchange_declare(source, "direct")
    ch.exchange_declare(dest, "fanout")
    ch.exchange_bind(dest, source, "k")
    queue = new_queue(ch)
    ch.queue_bind(queue, dest)
    ch.basic_publish(source, "k", b"bound")
    ch.exchange_unbind(dest, source, "k")
    ch.basic_publish(source, "k", b"unbound")
    assert drain(ch, queue) == [b"bound"]


def test_deleting_destination_exchange_removes_its_binding(
    ch: BlockingChannel,
) -> None:
    source, dest = unique("src"), unique("dst")
    ch.exchange_declare(source, "fanout")
    ch.exchange_declare(dest, "fanout")
    ch.exchange_bind(dest, source)
    ch.exchange_delete(dest)
    with pytest.raises(UnroutableError):
        ch.basic_publish(source, "", b"m", mandatory=True)
    # the source no longer has bindings, so if-unused deletes it
    ch.exchange_delete(source, if_unused=True)


def test_exchange_bind_to_missing_exchange_fails_404(
    conn: BlockingConnection,
) -> None:
    absent = unique("absent")
    ch = conn.channel()
    with pytest.raises(ChannelClosedByBroker) as info:
        ch.exchange_bind(absent, "amq.fanout")
    assert info.value.reply_code == 404
    assert info.value.reply_text == f"NOT_FOUND - no exchange '{absent}' in vhost '/'"
    ch = conn.channel()
    with pytest.raises(ChannelClosedByBroker) as info:
        ch.exchange_bind("amq.fanout", absent)
    assert info.value.reply_code == 404


# alternate exchanges


def declare_with_ae(ch: BlockingChannel, name: str, kind: str, ae: str) -> None:
    ch.exchange_declare(name, kind, arguments={"alternate-exchange": ae})


def test_unroutable_message_goes_to_the_alternate_exchange(
    ch: BlockingChannel,
) -> None:
    main, alt = unique("main"), unique("alt")
    ch.exchange_declare(alt, "fanout")
    declare_with_ae(ch, main, "direct", alt)
    routed, caught = new_queue(ch), new_queue(ch)
    ch.queue_bind(routed, main, "k")
    ch.queue_bind(caught, alt)
    ch.basic_publish(main, "k", b"routed")
    ch.basic_publish(main, "other", b"unroutable")
    assert drain(ch, routed) == [b"routed"]
    method, _props, body = ch.basic_get(caught, auto_ack=True)
    assert body == b"unroutable"
    # delivered with the exchange and key it was published with
    assert method.exchange == main and method.routing_key == "other"


def test_alternate_exchanges_chain_until_one_routes(ch: BlockingChannel) -> None:
    a, b, c = unique("ae-a"), unique("ae-b"), unique("ae-c")
    ch.exchange_declare(c, "fanout")
    declare_with_ae(ch, b, "direct", c)
    declare_with_ae(ch, a, "direct", b)
    queue = new_queue(ch)
    ch.queue_bind(queue, c)
    ch.basic_publish(a, "k", b"m")
    assert drain(ch, queue) == [b"m"]


def test_alternate_exchange_loop_terminates(ch: BlockingChannel) -> None:
    one, two = unique("loop-1"), unique("loop-2")
    declare_with_ae(ch, one, "direct", two)
    declare_with_ae(ch, two, "direct", one)
    queue = new_queue(ch)
    ch.queue_bind(queue, two, "b")
    ch.basic_publish(one, "b", b"via the alternate")
    with pytest.raises(UnroutableError) as info:
        ch.basic_publish(one, "nowhere", b"lost", mandatory=True)
    (returned,) = info.value.messages
    assert returned.method.reply_code == 312
    assert returned.method.reply_text == "NO_ROUTE"
    assert drain(ch, queue) == [b"via the alternate"]


def test_mandatory_message_routed_by_alternate_exchange_is_not_returned(
    ch: BlockingChannel,
) -> None:
    main, alt = unique("main"), unique("alt")
    ch.exchange_declare(alt, "fanout")
    declare_with_ae(ch, main, "direct", alt)
    queue = new_queue(ch)
    ch.queue_bind(queue, alt)
    ch.basic_publish(main, "unbound", b"m", mandatory=True)  # no UnroutableError
    assert drain(ch, queue) == [b"m"]


def test_missing_alternate_exchange_leaves_message_unroutable(
    ch: BlockingChannel,
) -> None:
    main = unique("main")
    declare_with_ae(ch, main, "direct", unique("never-declared"))
    with pytest.raises(UnroutableError) as info:
        ch.basic_publish(main, "k", b"m", mandatory=True)
    assert info.value.messages[0].method.reply_code == 312


def test_alternate_exchange_is_skipped_when_bindings_match_an_exchange(
    ch: BlockingChannel,
) -> None:
    # RabbitMQ tries the alternate only when the exchange's own bindings
    # match nothing; a matched exchange that routes nowhere still counts
    main, inner, alt = unique("main"), unique("inner"), unique("alt")
    ch.exchange_declare(alt, "fanout")
    ch.exchange_declare(inner, "direct")
    declare_with_ae(ch, main, "direct", alt)
    ch.exchange_bind(inner, main, "k")
    caught = new_queue(ch)
    ch.queue_bind(caught, alt)
    ch.basic_publish(main, "k", b"matched the exchange binding")
    ch.basic_publish(main, "z", b"matched nothing")
    assert drain(ch, caught) == [b"matched nothing"]


def test_alternate_exchange_of_a_bound_exchange_is_used(ch: BlockingChannel) -> None:
    main, inner, alt = unique("main"), unique("inner"), unique("alt")
    ch.exchange_declare(alt, "fanout")
    declare_with_ae(ch, inner, "direct", alt)
    ch.exchange_declare(main, "fanout")
    ch.exchange_bind(inner, main)
    queue = new_queue(ch)
    ch.queue_bind(queue, alt)
    ch.basic_publish(main, "k", b"m")
    assert drain(ch, queue) == [b"m"]


# mandatory


def test_unroutable_mandatory_message_is_returned_with_no_route(
    ch: BlockingChannel,
) -> None:
    exchange = unique("direct")
    ch.exchange_declare(exchange, "direct")
    props = pika.BasicProperties(message_id="id-1", headers={"h": 1})
    with pytest.raises(UnroutableError) as info:
        ch.basic_publish(exchange, "nowhere", b"body", props, mandatory=True)
    (returned,) = info.value.messages
    assert returned.method.reply_code == 312
    assert returned.method.reply_text == "NO_ROUTE"
    assert returned.method.exchange == exchange
    assert returned.method.routing_key == "nowhere"
    assert returned.properties.message_id == "id-1"
    assert returned.properties.headers == {"h": 1}
    assert returned.body == b"body"
    ch.basic_publish(exchange, "nowhere", b"not mandatory")  # confirmed, dropped


def test_return_callback_gets_the_unroutable_message(
    conn: BlockingConnection,
) -> None:
    plain = conn.channel()  # no confirms: returns go to the callback
    returns: list[tuple[Any, bytes]] = []
    plain.add_on_return_callback(
        lambda _c, method, _p, body: returns.append((method, body))
    )
    queue = new_queue(plain)
    plain.basic_publish("", queue, b"routed", mandatory=True)
    plain.basic_publish("", unique("nobody"), b"returned", mandatory=True)
    plain.basic_publish("", unique("nobody"), b"dropped", mandatory=False)
    plain.queue_declare(queue, passive=True)  # a round trip past the returns
    conn.process_data_events(time_limit=0)
    assert [(m.reply_code, m.reply_text, body) for m, body in returns] == [
        (312, "NO_ROUTE", b"returned")
    ]


# CC and BCC


def test_cc_and_bcc_headers_add_routing_keys(ch: BlockingChannel) -> None:
    exchange = unique("cc")
    ch.exchange_declare(exchange, "direct")
    main, cc, bcc, other = (new_queue(ch) for _ in range(4))
    ch.queue_bind(main, exchange, "main")
    ch.queue_bind(cc, exchange, "cc")
    ch.queue_bind(bcc, exchange, "bcc")
    ch.queue_bind(other, exchange, "other")
    headers = {"CC": ["cc", "main"], "BCC": ["bcc", "cc"]}
    ch.basic_publish(
        exchange, "main", b"m", pika.BasicProperties(headers=headers), mandatory=True
    )
    for queue in (main, cc, bcc):
        assert drain(ch, queue) == [b"m"]
    assert ready(ch, other) == 0


def test_message_routed_only_by_cc_is_not_returned(ch: BlockingChannel) -> None:
    exchange = unique("cc-only")
    ch.exchange_declare(exchange, "topic")
    queue = new_queue(ch)
    ch.queue_bind(queue, exchange, "x.*")
    ch.basic_publish(exchange, "nowhere", b"m",
                     pika.BasicProperties(headers={"BCC": ["x.y"]}),
                     mandatory=True)  # fmt: skip
    assert drain(ch, queue) == [b"m"]


def test_bcc_is_removed_and_other_headers_keep_their_types(
    conn: BlockingConnection, ch: BlockingChannel
) -> None:
    exchange = unique("bcc")
    ch.exchange_declare(exchange, "direct")
    main, hidden = new_queue(ch), new_queue(ch)
    ch.queue_bind(main, exchange, "main")
    ch.queue_bind(hidden, exchange, "hidden")
    headers: dict[str, Any] = {
        "CC": ["main"], "BCC": ["hidden"], "int": 5, "long": long(5),
        "str": "text", "bytes": b"\x00\x01", "flag": True,
        "decimal": Decimal("3.14"), "none": None, "list": [1, "a", long(2)],
        "table": {"n": 1, "s": "v"},
        "when": datetime.datetime(2024, 1, 2, 3, 4, 5, tzinfo=datetime.UTC),
    }  # fmt: skip
    ch.basic_publish(exchange, "main", b"m", pika.BasicProperties(headers=headers))
    expected = {k: v for k, v in headers.items() if k != "BCC"}
    for queue in (main, hidden):
        _method, props, body = ch.basic_get(queue, auto_ack=True)
        assert body == b"m"
        assert props.headers == expected
        assert list(props.headers) == list(expected)  # order kept too
        for key, value in expected.items():
            assert type(props.headers[key]) is type(value), key
        assert [type(v) for v in props.headers["list"]] == [int, str, long]


# raw frames, to see header value tags byte for byte


class WireClient:
    """A bare AMQP connection: pamqp frames over a socket, one channel."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.buf = b""
        self.sock.sendall(b"AMQP\x00\x00\x09\x01")
        self.expect(spec.Connection.Start)
        self.send(spec.Connection.StartOk(
            client_properties={}, mechanism="PLAIN", response="\0guest\0guest",
        ), channel=0)  # fmt: skip
        tune = self.expect(spec.Connection.Tune)
        self.send(spec.Connection.TuneOk(
            channel_max=tune.channel_max, frame_max=tune.frame_max, heartbeat=0,
        ), channel=0)  # fmt: skip
        self.send(spec.Connection.Open(virtual_host="/"), channel=0)
        self.expect(spec.Connection.OpenOk)
        self.send(spec.Channel.Open())
        self.expect(spec.Channel.OpenOk)
        self.send(spec.Confirm.Select())
        self.expect(spec.Confirm.SelectOk)

    def close(self) -> None:
        self.sock.close()

    def send(self, method: Method, channel: int = 1) -> None:
        self.sock.sendall(frame.marshal(method, channel))

    def read_frame(self) -> tuple[int, bytes]:
        while True:
            if len(self.buf) >= 7:
                ftype, _channel, size = struct.unpack_from(">BHI", self.buf)
                if len(self.buf) >= 8 + size:
                    payload = self.buf[7 : 7 + size]
                    self.buf = self.buf[8 + size :]
                    return ftype, payload
            data = self.sock.recv(65536)
            assert data, "connection closed"
            self.buf += data

    def expect(self, kind: type[Method]) -> Any:
        ftype, payload = self.read_frame()
        assert ftype == 1, f"expected a method frame, got type {ftype}"
        whole = struct.pack(">BHI", 1, 0, len(payload)) + payload + b"\xce"
        method = frame.unmarshal(whole)[2]
        assert isinstance(method, kind), method
        return method

    def publish_headers(self, exchange: str, key: str, table: bytes) -> None:
        """basic.publish whose content header carries only this raw table."""
        body = b"m"
        header = struct.pack(">HHQH", 60, 0, len(body), 0x2000) + table
        publish = frame.marshal(
            spec.Basic.Publish(exchange=exchange, routing_key=key), 1
        )
        self.sock.sendall(publish + raw_frame(2, header) + raw_frame(3, body))
        self.expect(spec.Basic.Ack)

    def get_headers(self, queue: str) -> bytes:
        """basic.get one message; its raw headers table."""
        self.send(spec.Basic.Get(queue=queue, no_ack=True))
        self.expect(spec.Basic.GetOk)
        ftype, header = self.read_frame()
        assert ftype == 2
        _cls, _weight, size, flags = struct.unpack_from(">HHQH", header)
        assert flags == 0x2000, hex(flags)
        body_type, body = self.read_frame()
        assert (body_type, body) == (3, b"m") and size == 1
        return header[14:]


def raw_frame(ftype: int, payload: bytes) -> bytes:
    return struct.pack(">BHI", ftype, 1, len(payload)) + payload + b"\xce"


def field(name: str, tag: bytes, value: bytes) -> bytes:
    return bytes((len(name),)) + name.encode() + tag + value


def longstr(value: bytes) -> bytes:
    return struct.pack(">I", len(value)) + value


def table_of(*fields: bytes) -> bytes:
    body = b"".join(fields)
    return struct.pack(">I", len(body)) + body


def test_bcc_removal_keeps_every_other_header_byte_for_byte(
    amqpd_session_broker: BrokerThread, ch: BlockingChannel
) -> None:
    exchange = unique("bcc-raw")
    ch.exchange_declare(exchange, "direct")
    # shared queues, so that the raw connection may read them
    main, copy = unique("raw-main"), unique("raw-copy")
    ch.queue_declare(main)
    ch.queue_declare(copy)
    ch.queue_bind(main, exchange, "main")
    ch.queue_bind(copy, exchange, "copy")
    ch.queue_bind(copy, exchange, "hidden")
    kept = [
        field("b", b"b", struct.pack(">b", -5)),
        field("s", b"s", struct.pack(">h", -300)),
        field("u", b"u", struct.pack(">H", 60000)),
        field("I", b"I", struct.pack(">i", 70000)),
        field("i", b"i", struct.pack(">I", 3_000_000_000)),
        field("l", b"l", struct.pack(">q", 5)),
        field("f", b"f", struct.pack(">f", 1.5)),
        field("d", b"d", struct.pack(">d", 2.25)),
        field("D", b"D", struct.pack(">Bi", 2, 314)),
        field("S", b"S", longstr(b"text")),
        field("x", b"x", longstr(b"\x00\x01")),
        field("t", b"t", b"\x01"),
        field("T", b"T", struct.pack(">Q", 1_700_000_000)),
        field("V", b"V", b""),
        field("F", b"F", table_of(field("n", b"b", b"\x01"))),
        field("CC", b"A", longstr(b"S" + longstr(b"copy"))),
    ]
    bcc = field("BCC", b"A", longstr(b"S" + longstr(b"hidden")))
    wire = WireClient(amqpd_session_broker.port)
    try:
        wire.publish_headers(exchange, "main", table_of(*kept[:8], bcc, *kept[8:]))
        expected = table_of(*kept)
        assert wire.get_headers(main) == expected
        assert wire.get_headers(copy) == expected
    finally:
        wire.close()
    assert ready(ch, copy) == 0  # reached by CC and by BCC: one copy
    ch.queue_delete(main)
    ch.queue_delete(copy)


# the server's basic.cancel


def test_deleting_a_consumed_queue_cancels_its_consumers(
    amqpd_session_broker: BrokerThread, conn: BlockingConnection, ch: BlockingChannel
) -> None:
    queue = unique("cancelled")
    ch.queue_declare(queue)
    cancels: list[Any] = []
    ch.add_on_cancel_callback(cancels.append)
    first = ch.basic_consume(queue, lambda *a: None)
    second = ch.basic_consume(queue, lambda *a: None)
    other = pika.BlockingConnection(pika.URLParameters(amqpd_session_broker.url))
    try:
        assert other.channel().queue_delete(queue).method.message_count == 0
    finally:
        other.close()
    for _ in range(100):
        if len(cancels) == 2:
            break
        conn.process_data_events(time_limit=0.02)
    tags = sorted(c.method.consumer_tag for c in cancels)
    assert tags == sorted([first, second])
    assert all(isinstance(c.method, pika.spec.Basic.Cancel) for c in cancels)
    assert ch.is_open
    assert ch.consumer_tags == []
    ch.queue_declare(queue)  # the channel still works
    ch.queue_delete(queue)


# publishing to a missing exchange


def test_publish_to_missing_exchange_closes_only_that_channel(
    conn: BlockingConnection,
) -> None:
    bystander = conn.channel()
    bystander.confirm_delivery()
    queue = new_queue(bystander)
    bystander.basic_publish("", queue, b"before")
    absent = unique("absent")
    ch = conn.channel()
    ch.basic_publish(absent, "k", b"m")
    with pytest.raises(ChannelClosedByBroker) as info:
        ch.queue_declare("", exclusive=True)
    assert info.value.reply_code == 404
    assert info.value.reply_text == f"NOT_FOUND - no exchange '{absent}' in vhost '/'"
    assert conn.is_open and bystander.is_open
    bystander.basic_publish("", queue, b"after")
    assert drain(bystander, queue) == [b"before", b"after"]


def test_confirmed_publish_to_missing_exchange_raises_channel_closed(
    conn: BlockingConnection,
) -> None:
    ch = conn.channel()
    ch.confirm_delivery()
    absent = unique("absent")
    with pytest.raises(ChannelClosedByBroker) as info:
        ch.basic_publish(absent, "k", b"m")
    assert info.value.reply_code == 404
    assert absent in info.value.reply_text
    assert conn.is_open
    assert conn.channel().is_open
