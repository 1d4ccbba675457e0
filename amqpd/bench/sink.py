"""A local stand-in broker that accepts one connection and discards input.

The client-ceiling scenario points the bench publisher at it: the sink does
the handshake (start, tune, open, channel.open) like a broker, then only
counts the bytes it reads. Whatever rate the publisher reaches here is the
most it could push into any broker, which shows the client is not the limit.
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass

from pamqp import base, commands
from pamqp import frame as pamqp_frame

from amqpd.bench import frames
from amqpd.bench.client import BenchConnection, BenchError, set_io_timeout
from amqpd.bench.fleet import Link, Result

SINK_FRAME_MAX = 131072


@dataclass(frozen=True)
class SinkReport:
    """What the sink took in after the handshake."""

    channel: int
    discarded_bytes: int
    first_ns: int
    last_ns: int


class Sink:
    """Listens on a loopback port; serves one client at a time."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.listener = socket.create_server((host, 0))
        self.host = host
        self.port = int(self.listener.getsockname()[1])

    def close(self) -> None:
        """Stop listening."""
        self.listener.close()

    def serve_one(
        self, timeout: float = 30.0, max_duration: float = 600.0
    ) -> SinkReport:
        """Accept one connection, shake hands, discard until it hangs up."""
        self.listener.settimeout(timeout)
        try:
            sock, _addr = self.listener.accept()
        except TimeoutError as exc:
            raise BenchError("no client came to the sink") from exc
        sock.settimeout(None)
        set_io_timeout(sock, timeout)
        with sock:
            conn = BenchConnection(sock)
            channel = handshake(conn)
            leftover = conn.take_buffered()
            return _discard(sock, channel, len(leftover), max_duration)


def _method(value: base.Frame, channel: int = 0) -> bytes:
    return pamqp_frame.marshal(value, channel)


def handshake(conn: BenchConnection) -> int:
    """Play the broker's side up to channel.open-ok; return the channel."""
    header = b""
    while len(header) < 8:
        chunk = conn.sock.recv(8 - len(header))
        if not chunk:
            raise BenchError("client left before the protocol header")
        header += chunk
    if header != frames.PROTOCOL_HEADER:
        raise BenchError(f"not an AMQP 0-9-1 protocol header: {header!r}")
    conn.send(_method(commands.Connection.Start(server_properties={"product": "sink"})))
    conn.expect(0, 10, 11)
    tune = commands.Connection.Tune(channel_max=2047, frame_max=SINK_FRAME_MAX)
    conn.send(_method(tune))
    conn.expect(0, 10, 31)
    conn.expect(0, 10, 40)
    conn.send(_method(commands.Connection.OpenOk()))
    kind, channel, payload = conn.read_frame()
    if kind != frames.FRAME_METHOD or payload[:4] != b"\x00\x14\x00\x0a":
        raise BenchError("the sink expected channel.open")
    conn.send(_method(commands.Channel.OpenOk(), channel))
    return channel


def _discard(
    sock: socket.socket, channel: int, already: int, max_duration: float
) -> SinkReport:
    buf = bytearray(1 << 20)
    total = already
    first = last = time.monotonic_ns() if already else 0
    give_up = time.monotonic_ns() + int(max_duration * 1e9)
    while True:
        try:
            n = sock.recv_into(buf)
        except BlockingIOError as exc:
            raise BenchError("the sink's client went quiet") from exc
        except ConnectionResetError:
            n = 0
        now = time.monotonic_ns()
        if not n:
            break
        total += n
        first = first or now
        last = now
        if now > give_up:
            break
    return SinkReport(channel, total, first, last)


@dataclass(frozen=True)
class SinkPlan:
    """How long the sink waits for its client and keeps discarding."""

    timeout: float = 30.0
    max_duration: float = 600.0


def run_sink(plan: SinkPlan, link: Link) -> Result:
    """Worker entry: listen, tell the parent the port, serve one client."""
    sink = Sink()
    try:
        link.ready({"port": sink.port})
        report = sink.serve_one(plan.timeout, plan.max_duration)
    finally:
        sink.close()
    return {
        "discarded_bytes": report.discarded_bytes,
        "first_ns": report.first_ns,
        "last_ns": report.last_ns,
    }
