"""The hot-path parsers: deliveries on the consumer, confirms on the publisher."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
from pamqp import body, commands, header
from pamqp import frame as pamqp_frame

from amqpd.bench import frames
from amqpd.bench.client import BenchConnection, BrokerClosed
from amqpd.bench.confirms import ConfirmTracker
from amqpd.bench.consumer import DeliveryParser, Tally


@pytest.fixture
def pair() -> Iterator[tuple[BenchConnection, socket.socket]]:
    ours, theirs = socket.socketpair()
    with ours, theirs:
        yield BenchConnection(ours), theirs


def delivery(tag: int, seq: int, sent_ns: int, size: int = 40) -> bytes:
    content = frames.STAMP.pack(seq, sent_ns) + b"y" * (size - 16)
    deliver = commands.Basic.Deliver(
        consumer_tag="amqpd-bench", delivery_tag=tag, exchange="", routing_key="q"
    )
    return (
        pamqp_frame.marshal(deliver, 1)
        + pamqp_frame.marshal(header.ContentHeader(0, size), 1)
        + pamqp_frame.marshal(body.ContentBody(content), 1)
    )


def read_acks(sock: socket.socket) -> list[tuple[int, bool]]:
    sock.settimeout(1)
    data = sock.recv(65536)
    acks, pos = [], 0
    while pos < len(data):
        used, _ch, value = pamqp_frame.unmarshal(data[pos:])
        assert isinstance(value, commands.Basic.Ack)
        acks.append((value.delivery_tag, value.multiple))
        pos += used
    return acks


def test_parser_counts_every_split_of_the_stream(
    pair: tuple[BenchConnection, socket.socket],
) -> None:
    conn, _peer = pair
    stream = b"".join(delivery(tag, tag - 1, 1_000) for tag in range(1, 6))
    for cut in range(1, len(stream)):
        tally = Tally(timed=True)
        parser = DeliveryParser(conn, tally, ack_every=100)
        parser.feed(stream[:cut], 5_000)
        parser.feed(stream[cut:], 5_000)
        assert (tally.delivered, tally.distinct, tally.duplicates) == (5, 5, 0)
        assert list(tally.latency_ns) == [4_000] * 5
        assert parser.last_tag == 5 and parser.rest == b""


def test_parser_acks_multiple_every_n_and_flushes_the_rest(
    pair: tuple[BenchConnection, socket.socket],
) -> None:
    conn, peer = pair
    parser = DeliveryParser(conn, Tally(timed=False), ack_every=3)
    parser.feed(b"".join(delivery(tag, tag, 0) for tag in range(1, 8)), 0)
    assert read_acks(peer) == [(3, True), (6, True)]
    parser.flush_ack()
    assert read_acks(peer) == [(7, True)]


def test_parser_bounds_what_the_broker_had_outstanding(
    pair: tuple[BenchConnection, socket.socket],
) -> None:
    conn, peer = pair
    parser = DeliveryParser(conn, Tally(timed=False), ack_every=3)
    parser.feed(b"".join(delivery(tag, tag, 0) for tag in range(1, 8)), 0)
    assert parser.max_outstanding == 7  # no ack was written before them
    read_acks(peer)
    parser.feed(b"".join(delivery(tag, tag, 0) for tag in range(8, 10)), 0)
    assert parser.acked_sent == 9  # acks for 3, 6 and 9 written
    assert parser.max_outstanding == 7  # 9 received - 6 covered = 3 this time


def test_parser_raises_when_the_broker_closes_the_channel(
    pair: tuple[BenchConnection, socket.socket],
) -> None:
    conn, _peer = pair
    close = commands.Channel.Close(
        reply_code=404, reply_text="NOT_FOUND - no queue", class_id=50, method_id=10
    )
    parser = DeliveryParser(conn, Tally(timed=False), ack_every=100)
    with pytest.raises(BrokerClosed) as caught:
        parser.feed(pamqp_frame.marshal(close, 1), 0)
    assert caught.value.code == 404


def test_tally_finds_duplicates_missing_and_stray() -> None:
    tally = Tally(timed=False)
    for seq in [0, 1, 1, 3, 200_000]:
        tally.mark(seq)
    assert (tally.distinct, tally.duplicates) == (4, 1)
    assert tally.distinct_below(4) == 3  # 2 is missing, 200,000 is stray


def confirm(tag: int, *, multiple: bool, ack: bool = True) -> bytes:
    if ack:
        return pamqp_frame.marshal(
            commands.Basic.Ack(delivery_tag=tag, multiple=multiple), 1
        )
    return pamqp_frame.marshal(
        commands.Basic.Nack(delivery_tag=tag, multiple=multiple), 1
    )


def test_tracker_settles_multiple_and_single_in_any_order() -> None:
    tracker = ConfirmTracker(timed=False)
    stream = (
        confirm(3, multiple=False)
        + confirm(2, multiple=True)
        + confirm(5, multiple=False, ack=False)
        + confirm(4, multiple=False)
        + confirm(6, multiple=True)
        + confirm(6, multiple=True)  # repeated: already settled
    )
    for cut in (1, 13, len(stream) // 2):
        tracker = ConfirmTracker(timed=False)
        tracker.feed(stream[:cut], 0)
        tracker.feed(stream[cut:], 0)
        assert (tracker.acked, tracker.nacked, tracker.low) == (5, 1, 6)
        assert tracker.above == set()


def test_tracker_times_each_confirm_from_its_send() -> None:
    tracker = ConfirmTracker(timed=True)
    tracker.sent_ns.extend([100, 200, 300])
    tracker.feed(confirm(2, multiple=True), 1_000)
    tracker.feed(confirm(3, multiple=False), 2_000)
    assert list(tracker.latency_ns) == [900, 800, 1_700]


def test_tracker_counts_returns_and_passes_other_methods_on() -> None:
    seen: list[int] = []

    def other(_channel: int, key: int, _payload: bytes) -> bool:
        seen.append(key)
        return True

    tracker = ConfirmTracker(timed=False)
    tracker.on_other = other
    returned = commands.Basic.Return(
        reply_code=312, reply_text="NO_ROUTE", exchange="", routing_key="q"
    )
    blocked = commands.Connection.Blocked(reason="low memory")
    tracker.feed(
        pamqp_frame.marshal(returned, 1)
        + pamqp_frame.marshal(header.ContentHeader(0, 16), 1)
        + pamqp_frame.marshal(body.ContentBody(bytes(16)), 1)
        + pamqp_frame.marshal(blocked, 0),
        0,
    )
    assert tracker.returned == 1
    assert seen == [frames.CONNECTION_BLOCKED]
