"""The consumer worker: large reads, frames split with struct, acks batched.

Every delivery's body carries the publisher's sequence number; the consumer
marks each in a bitmap, so at the end it can say how many distinct messages
arrived, how many arrived twice, and (given the published count) how many
never came.
"""

from __future__ import annotations

import time
from array import array
from dataclasses import dataclass

from amqpd.bench import frames
from amqpd.bench.client import (
    RECV_SIZE,
    BenchConnection,
    BenchError,
    BrokerUrl,
    set_io_timeout,
)
from amqpd.bench.fleet import Link, Result

# How long one recv may block before the consumer looks at its pipe.
POLL_INTERVAL = 0.2
_unpack_head = frames.FRAME_HEAD.unpack_from
_unpack_key = frames.METHOD_ID.unpack_from
_unpack_u64 = frames.U64.unpack_from
_unpack_stamp = frames.STAMP.unpack_from


@dataclass(frozen=True)
class ConsumePlan:
    """What one consumer does.

    It stops once it has seen ``expected`` distinct messages (given in the
    plan or later by the parent), when the parent says stop, or when no
    delivery came for ``idle_timeout`` seconds after the count was known.
    """

    url: str
    queue: str
    prefetch: int = 1000
    ack_every: int = 100
    timed: bool = False
    expected: int | None = None
    idle_timeout: float = 10.0
    max_duration: float = 900.0
    io_timeout: float = 30.0


class Tally:
    """Distinct sequence numbers seen, duplicates, latencies."""

    def __init__(self, *, timed: bool) -> None:
        self.seen = bytearray(1 << 16)
        self.distinct = 0
        self.duplicates = 0
        self.delivered = 0
        self.timed = timed
        self.latency_ns = array("q")

    def mark(self, seq: int) -> None:
        """Record one delivered sequence number."""
        seen = self.seen
        if seq >= len(seen):
            seen.extend(bytes(max(seq + 1 - len(seen), len(seen))))
        if seen[seq]:
            self.duplicates += 1
        else:
            seen[seq] = 1
            self.distinct += 1

    def distinct_below(self, limit: int) -> int:
        """How many distinct sequence numbers below ``limit`` were seen."""
        return self.seen.count(1, 0, limit)


def run_consumer(plan: ConsumePlan, link: Link) -> Result:
    """Worker entry: consume from one queue until the count is reached."""
    conn = BenchConnection.open(BrokerUrl.parse(plan.url), timeout=plan.io_timeout)
    conn.open_channel(1)
    conn.qos(1, plan.prefetch)
    conn.consume(1, plan.queue, "amqpd-bench")
    link.expected = plan.expected
    link.ready()
    started = link.wait_go()
    cpu_start = time.process_time()
    set_io_timeout(conn.sock, POLL_INTERVAL)
    tally = Tally(timed=plan.timed)
    first, last, max_outstanding = _consume(conn, plan, link, tally, started)
    set_io_timeout(conn.sock, plan.io_timeout)
    conn.close_channel(1)
    cpu = time.process_time() - cpu_start
    conn.close()
    expected = link.expected
    in_range = tally.distinct_below(expected) if expected is not None else 0
    return {
        "delivered": tally.delivered,
        "distinct": tally.distinct,
        "duplicates": tally.duplicates,
        "expected": expected,
        "missing": (expected - in_range) if expected is not None else None,
        "stray": (tally.distinct - in_range) if expected is not None else None,
        "prefetch": plan.prefetch,
        "max_outstanding": max_outstanding,
        "started_ns": started,
        "first_ns": first,
        "last_ns": last,
        "cpu_s": cpu,
        "latency_ns": list(tally.latency_ns),
    }


def _consume(
    conn: BenchConnection, plan: ConsumePlan, link: Link, tally: Tally, started: int
) -> tuple[int, int, int]:
    """The receive loop.

    Returns the times of the first and last delivery and the most
    deliveries seen outstanding at once.
    """
    sock = conn.sock
    clock = time.monotonic_ns
    give_up = started + int(plan.max_duration * 1e9)
    idle_ns = int(plan.idle_timeout * 1e9)
    poll_ns = int(POLL_INTERVAL * 1e9)
    parser = DeliveryParser(conn, tally, plan.ack_every)
    parser.feed(conn.take_buffered(), clock())
    first = last = 0
    next_poll = clock() + poll_ns
    while True:
        try:
            data = sock.recv(RECV_SIZE)
        except BlockingIOError:
            data = None
        now = clock()
        if data is not None:
            if not data:
                raise BenchError("the broker closed the socket")
            before = tally.distinct
            parser.feed(data, now)
            if tally.distinct != before:
                first = first or now
                last = now
        if now >= next_poll or data is None:
            next_poll = now + poll_ns
            link.poll()
            expected = link.expected
            if link.stopped or now > give_up:
                break
            if expected is not None:
                if tally.distinct >= expected:
                    break
                if now - max(last, started) > idle_ns:
                    break
    parser.flush_ack()
    conn.give_back(parser.rest)
    return first, last, parser.max_outstanding


class DeliveryParser:
    """Splits deliveries out of received bytes and acks them in batches.

    It also keeps a lower bound of how many deliveries the broker had
    outstanding: those received beyond what the acks already written
    cover. Above the prefetch count, it proves the broker overran it.
    """

    def __init__(self, conn: BenchConnection, tally: Tally, ack_every: int) -> None:
        self.conn = conn
        self.tally = tally
        self.ack_every = ack_every
        self.unacked = 0
        self.last_tag = 0
        self.acked_sent = 0  # deliveries covered by acks written so far
        self.max_outstanding = 0
        self.stamp_due = False
        self.rest = b""

    def feed(self, data: bytes, now: int) -> None:
        """Parse every whole frame; send one write of acks if any are due."""
        if self.rest:
            data = self.rest + data
        tally = self.tally
        acks: list[bytes] = []
        pos = 0
        total = len(data)
        while pos + 7 <= total:
            kind, channel, size = _unpack_head(data, pos)
            end = pos + 8 + size
            if end > total:
                break
            if kind == 3:
                if self.stamp_due:
                    self.stamp_due = False
                    seq, sent = _unpack_stamp(data, pos + 7)
                    tally.mark(seq)
                    if tally.timed:
                        tally.latency_ns.append(now - sent)
            elif kind == 1:
                key = _unpack_key(data, pos + 7)[0]
                if key == frames.BASIC_DELIVER:
                    tag = _unpack_u64(data, pos + 12 + data[pos + 11])[0]
                    self.last_tag = tag
                    tally.delivered += 1
                    self.unacked += 1
                    if self.unacked >= self.ack_every:
                        acks.append(_ack(channel, tag))
                        self.unacked = 0
                else:
                    self.conn.handle_async_method(channel, key, data[pos + 7 : end - 1])
            elif kind == 2:
                self.stamp_due = True
            pos = end
        self.rest = data[pos:]
        outstanding = tally.delivered - self.acked_sent
        if outstanding > self.max_outstanding:
            self.max_outstanding = outstanding
        if acks:
            self.conn.send(b"".join(acks))
            self.acked_sent = tally.delivered - self.unacked

    def flush_ack(self) -> None:
        """Ack everything still unacked."""
        if self.unacked:
            self.conn.send(_ack(1, self.last_tag))
            self.unacked = 0
            self.acked_sent = self.tally.delivered


def _ack(channel: int, tag: int) -> bytes:
    return frames.basic_ack(channel, tag, multiple=True)
