"""The publisher worker: prebuilt frames, patched and sent in batches.

Each message body starts with its sequence number (from 0) and, when the
plan asks for timing, its send time, so consumers can prove that every
message arrived exactly once and measure end-to-end latency.
"""

from __future__ import annotations

import select
import socket
import time
from dataclasses import dataclass

from amqpd.bench import frames
from amqpd.bench.client import RECV_SIZE, BenchConnection, BenchError, BrokerUrl
from amqpd.bench.confirms import ConfirmTracker
from amqpd.bench.fleet import Link, Result

_pack_stamp = frames.STAMP.pack_into


@dataclass(frozen=True)
class PublishPlan:
    """What one publisher does; it stops at ``max_count`` or ``duration``."""

    url: str
    exchange: str
    routing_key: str
    body_size: int
    max_count: int
    duration: float
    persistent: bool = False
    rate: float = 0.0  # messages per second; 0 means as fast as possible
    confirm_window: int = 0  # unconfirmed messages allowed; 0: no confirms
    timed: bool = False  # stamp send times, time confirms
    fence: bool = True  # close the channel to be sure all was routed
    sink: bool = False  # the peer is the bench sink: just hang up at the end
    batch: int = 64
    io_timeout: float = 30.0


def run_publisher(plan: PublishPlan, link: Link) -> Result:
    """Worker entry: connect, wait for go, publish, report."""
    conn = BenchConnection.open(BrokerUrl.parse(plan.url), timeout=plan.io_timeout)
    conn.open_channel(1)
    if plan.confirm_window:
        conn.select_confirms(1)
    template = frames.message_template(
        1,
        plan.exchange,
        plan.routing_key,
        plan.body_size,
        persistent=plan.persistent,
        frame_max=conn.frame_max,
    )
    tracker = ConfirmTracker(timed=plan.timed)
    tracker.on_other = conn.handle_async_method
    tracker.feed(conn.take_buffered(), time.monotonic_ns())
    link.ready()
    started = link.wait_go()
    cpu_start = time.process_time()
    deadline = started + int(plan.duration * 1e9)
    if plan.rate > 0:
        published = _publish_paced(conn, template, plan, tracker, deadline)
    else:
        published = _publish_flat(conn, template, plan, tracker, deadline)
    sent = time.monotonic_ns()
    if plan.confirm_window:
        _await_confirms(conn, tracker, published, plan.io_timeout)
    if plan.sink:
        conn.sock.shutdown(socket.SHUT_WR)
        conn.sock.close()
    elif plan.fence:
        conn.close_channel(1)
    finished = time.monotonic_ns()
    cpu = time.process_time() - cpu_start
    if not plan.sink:
        conn.close()
    return {
        "published": published,
        "acked": tracker.acked,
        "nacked": tracker.nacked,
        "returned": tracker.returned,
        "message_bytes": len(template.data),
        "started_ns": started,
        "sent_ns": sent,
        "finished_ns": finished,
        "cpu_s": cpu,
        "confirm_latency_ns": list(tracker.latency_ns),
    }


def _poll_confirms(sock: socket.socket, tracker: ConfirmTracker) -> None:
    try:
        data = sock.recv(RECV_SIZE, socket.MSG_DONTWAIT)
    except BlockingIOError:
        return
    if not data:
        raise BenchError("the broker closed the socket")
    tracker.feed(data, time.monotonic_ns())


def _read_confirms(sock: socket.socket, tracker: ConfirmTracker) -> None:
    try:
        data = sock.recv(RECV_SIZE)
    except BlockingIOError as exc:
        raise BenchError("timed out waiting for publisher confirms") from exc
    if not data:
        raise BenchError("the broker closed the socket")
    tracker.feed(data, time.monotonic_ns())


def _publish_flat(
    conn: BenchConnection,
    template: frames.MessageTemplate,
    plan: PublishPlan,
    tracker: ConfirmTracker,
    deadline: int,
) -> int:
    """Publish as fast as the socket (and the confirm window) allows."""
    sock = conn.sock
    buf, offsets = template.batch(plan.batch)
    view = memoryview(buf)
    size = len(template.data)
    window = plan.confirm_window
    limit = plan.max_count
    clock = time.monotonic_ns
    timed = plan.timed
    seq = 0
    while seq < limit:
        n = min(plan.batch, limit - seq)
        if window:
            while seq - tracker.settled >= window:
                _read_confirms(sock, tracker)
            n = min(n, window - (seq - tracker.settled))
        stamp = clock() if timed else 0
        for offset in offsets[:n]:
            _pack_stamp(buf, offset, seq, stamp)
            seq += 1
        if timed:
            tracker.sent_ns.extend([stamp] * n)
        try:
            sock.sendall(view[: n * size])
        except BlockingIOError as exc:
            raise BenchError("timed out writing to the broker") from exc
        if window:
            _poll_confirms(sock, tracker)
        if clock() >= deadline:
            break
    return seq


def _publish_paced(
    conn: BenchConnection,
    template: frames.MessageTemplate,
    plan: PublishPlan,
    tracker: ConfirmTracker,
    deadline: int,
) -> int:
    """Publish on a fixed schedule; a late start sends what is due at once.

    While waiting for the next slot the loop reads confirms, so a confirm's
    arrival time is taken when it arrives, not at the next send.
    """
    sock = conn.sock
    buf, offsets = template.batch(plan.batch)
    view = memoryview(buf)
    size = len(template.data)
    interval = 1e9 / plan.rate
    window = plan.confirm_window
    limit = plan.max_count
    clock = time.monotonic_ns
    first = clock()
    seq = 0
    while seq < limit:
        now = clock()
        if now >= deadline:
            break
        due = first + int(seq * interval)
        if now < due:
            ready, _, _ = select.select([sock], [], [], (due - now) / 1e9)
            if ready:
                _read_confirms(sock, tracker)
            continue
        n = min(plan.batch, limit - seq, int((now - due) / interval) + 1)
        if window:
            if seq - tracker.settled >= window:
                _read_confirms(sock, tracker)
                continue
            n = min(n, window - (seq - tracker.settled))
        for offset in offsets[:n]:
            _pack_stamp(buf, offset, seq, now)
            seq += 1
        if plan.timed:
            tracker.sent_ns.extend([now] * n)
        try:
            sock.sendall(view[: n * size])
        except BlockingIOError as exc:
            raise BenchError("timed out writing to the broker") from exc
    return seq


def _await_confirms(
    conn: BenchConnection, tracker: ConfirmTracker, published: int, timeout: float
) -> None:
    """Read until every published message is acked or nacked."""
    give_up = time.monotonic() + timeout
    while tracker.settled < published:
        if time.monotonic() > give_up:
            raise BenchError(
                f"{published - tracker.settled} confirms missing after {timeout} s"
            )
        _read_confirms(conn.sock, tracker)
