"""A small blocking AMQP 0-9-1 client for the bench, one socket per process.

It does the handshake and the synchronous methods (declare, bind, qos,
consume, confirm.select, close) one frame at a time. The hot loops in
``publisher`` and ``consumer`` take the socket over once set up and do their
own framing; ``take_buffered`` hands them any bytes already read.

Sockets stay in blocking mode with kernel send and receive timeouts
(SO_SNDTIMEO, SO_RCVTIMEO): each recv or send is one system call, and a
broker that stops answering makes the call fail with ``BlockingIOError``
instead of hanging the bench.
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from pamqp import commands
from pamqp import frame as pamqp_frame

from amqpd.bench import frames

DEFAULT_FRAME_MAX = 131072
RECV_SIZE = 1 << 18


class BenchError(Exception):
    """The bench cannot go on: bad URL, broker error, lost connection."""


class BrokerClosed(BenchError):
    """The broker closed a channel or the connection, with a reply code."""

    def __init__(self, scope: str, code: int, text: str) -> None:
        super().__init__(f"broker closed the {scope}: {code} {text}")
        self.scope = scope
        self.code = code
        self.text = text


@dataclass(frozen=True)
class BrokerUrl:
    """The parts of an ``amqp://user:pass@host:port/vhost`` URL."""

    host: str
    port: int
    user: str
    password: str
    vhost: str

    @classmethod
    def parse(cls, url: str) -> BrokerUrl:
        """Parse an amqp URL; an empty path means vhost "/" (as in RabbitMQ)."""
        parts = urlsplit(url)
        if parts.scheme != "amqp":
            raise BenchError(f"only amqp:// URLs are supported, not {url!r}")
        path = parts.path[1:] if parts.path.startswith("/") else parts.path
        return cls(
            host=parts.hostname or "127.0.0.1",
            port=parts.port or 5672,
            user=unquote(parts.username or "guest"),
            password=unquote(parts.password or "guest"),
            vhost=unquote(path) if path else "/",
        )

    def redacted(self) -> str:
        """The URL without its password, for reports."""
        vhost = "" if self.vhost == "/" else self.vhost
        return f"amqp://{self.user}@{self.host}:{self.port}/{vhost}"


def set_io_timeout(sock: socket.socket, seconds: float) -> None:
    """Make each blocking send and recv on ``sock`` give up after ``seconds``."""
    whole = int(seconds)
    value = struct.pack("ll", whole, int((seconds - whole) * 1_000_000))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, value)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, value)


def connect_socket(host: str, port: int, timeout: float) -> socket.socket:
    """Open a TCP connection with Nagle off and kernel I/O timeouts set."""
    sock = socket.create_connection((host, port), timeout=timeout)
    sock.settimeout(None)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    set_io_timeout(sock, timeout)
    return sock


class BenchConnection:
    """One AMQP connection driven synchronously, frame by frame."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.frame_max = DEFAULT_FRAME_MAX
        self.channel_max = 2047
        self.blocked = False
        self._buf = bytearray()

    @classmethod
    def open(
        cls,
        url: BrokerUrl,
        *,
        timeout: float = 30.0,
        frame_max: int = DEFAULT_FRAME_MAX,
    ) -> BenchConnection:
        """Connect, log in with PLAIN and open the URL's virtual host."""
        where = f"{url.host}:{url.port}"
        try:
            conn = cls(connect_socket(url.host, url.port, timeout))
        except OSError as exc:
            raise BenchError(f"cannot connect to {where}: {exc}") from exc
        try:
            conn._handshake(url, frame_max)
        except OSError as exc:
            conn.sock.close()
            raise BenchError(f"handshake with {where} failed: {exc}") from exc
        except BaseException:
            conn.sock.close()
            raise
        return conn

    def _handshake(self, url: BrokerUrl, frame_max: int) -> None:
        self.send(frames.PROTOCOL_HEADER)
        start = self.expect(0, 10, 10)
        if b"PLAIN" not in start:
            raise BenchError("broker does not offer the PLAIN mechanism")
        self.send(frames.start_ok(url.user, url.password))
        tune = self.expect(0, 10, 30)
        channel_max, server_frame_max, _heartbeat = struct.unpack_from(">HIH", tune)
        self.channel_max = channel_max or 65535
        if server_frame_max:
            frame_max = min(frame_max, server_frame_max)
        self.frame_max = frame_max
        # heartbeat 0: the bench never idles long enough to need them
        self.send(frames.tune_ok(self.channel_max, frame_max, 0))
        self.send(frames.connection_open(url.vhost))
        self.expect(0, 10, 41)

    # Frame I/O

    def send(self, data: bytes | bytearray) -> None:
        """Write bytes to the socket, all of them."""
        try:
            self.sock.sendall(data)
        except BlockingIOError as exc:
            raise BenchError("timed out writing to the broker") from exc

    def _fill(self) -> None:
        try:
            chunk = self.sock.recv(RECV_SIZE)
        except BlockingIOError as exc:
            raise BenchError("timed out waiting for the broker") from exc
        if not chunk:
            raise BenchError("the broker closed the socket")
        self._buf += chunk

    def read_frame(self) -> tuple[int, int, bytes]:
        """Return the next frame's type, channel and payload."""
        while True:
            if len(self._buf) >= 7:
                kind, channel, size = frames.FRAME_HEAD.unpack_from(self._buf)
                end = 8 + size
                if len(self._buf) >= end:
                    if self._buf[end - 1] != frames.FRAME_END:
                        raise BenchError("frame does not end with 0xCE")
                    payload = bytes(self._buf[7 : end - 1])
                    del self._buf[:end]
                    return kind, channel, payload
            self._fill()

    def expect(
        self, channel: int, class_id: int, method_id: int, *, skip: bool = False
    ) -> bytes:
        """Read up to the named method on ``channel``; return its arguments.

        Heartbeats and connection.blocked/unblocked are absorbed; a close
        from the broker is answered and raised as ``BrokerClosed``. With
        ``skip`` everything else (deliveries still in flight, confirms) is
        passed over; without it, it is a protocol surprise that stops the
        bench.
        """
        want = frames.method_key(class_id, method_id)
        while True:
            kind, got_channel, payload = self.read_frame()
            if kind == frames.FRAME_HEARTBEAT:
                continue
            if kind != frames.FRAME_METHOD:
                if skip:
                    continue
                raise BenchError(f"unexpected frame type {kind} on {got_channel}")
            key = frames.METHOD_ID.unpack_from(payload)[0]
            if key == want and got_channel == channel:
                return payload[4:]
            if self.handle_async_method(got_channel, key, payload) or skip:
                continue
            raise BenchError(
                f"expected method {class_id}.{method_id} on channel {channel}, "
                f"got {key >> 16}.{key & 0xFFFF} on channel {got_channel}"
            )

    def handle_async_method(self, channel: int, key: int, payload: bytes) -> bool:
        """Deal with a method the broker may send at any time.

        Returns True when the method was absorbed; raises on a close.
        """
        if key == frames.CONNECTION_BLOCKED:
            self.blocked = True
            return True
        if key == frames.CONNECTION_UNBLOCKED:
            self.blocked = False
            return True
        if key in (frames.CHANNEL_CLOSE, frames.CONNECTION_CLOSE):
            decoded = pamqp_frame.unmarshal(frames.frame(1, channel, payload))[2]
            assert isinstance(
                decoded, commands.Channel.Close | commands.Connection.Close
            )
            if key == frames.CHANNEL_CLOSE:
                self.send(frames.channel_close_ok(channel))
                scope = f"channel {channel}"
            else:
                self.send(frames.connection_close_ok())
                scope = "connection"
            raise BrokerClosed(scope, decoded.reply_code or 0, decoded.reply_text)
        return False

    def take_buffered(self) -> bytes:
        """Hand over bytes already read but not yet parsed."""
        data = bytes(self._buf)
        self._buf.clear()
        return data

    def give_back(self, data: bytes) -> None:
        """Return unparsed bytes from a hot loop before going synchronous."""
        self._buf[:0] = data

    # Synchronous methods

    def open_channel(self, channel: int = 1) -> None:
        """channel.open and wait for open-ok."""
        self.send(frames.channel_open(channel))
        self.expect(channel, 20, 11)

    def close_channel(self, channel: int = 1) -> None:
        """channel.close and wait for close-ok.

        Also a fence: the broker has handled every earlier frame on the
        channel once close-ok arrives.
        """
        self.send(frames.channel_close(channel))
        self.expect(channel, 20, 41, skip=True)

    def declare_queue(
        self, channel: int, name: str, *, durable: bool = False, passive: bool = False
    ) -> tuple[int, int]:
        """queue.declare; returns (message count, consumer count)."""
        self.send(frames.queue_declare(channel, name, durable=durable, passive=passive))
        reply = self.expect(channel, 50, 11)
        offset = 1 + reply[0]
        messages, consumers = struct.unpack_from(">II", reply, offset)
        return int(messages), int(consumers)

    def delete_queue(self, channel: int, name: str) -> int:
        """queue.delete; returns how many messages the queue still held."""
        self.send(frames.queue_delete(channel, name))
        return int(struct.unpack(">I", self.expect(channel, 50, 41))[0])

    def declare_exchange(
        self, channel: int, name: str, kind: str, *, durable: bool = False
    ) -> None:
        """exchange.declare and wait for declare-ok."""
        self.send(frames.exchange_declare(channel, name, kind, durable=durable))
        self.expect(channel, 40, 11)

    def delete_exchange(self, channel: int, name: str) -> None:
        """exchange.delete and wait for delete-ok."""
        self.send(frames.exchange_delete(channel, name))
        self.expect(channel, 40, 21)

    def bind_queue(self, channel: int, queue: str, exchange: str, key: str) -> None:
        """queue.bind and wait for bind-ok."""
        self.send(frames.queue_bind(channel, queue, exchange, key))
        self.expect(channel, 50, 21)

    def qos(self, channel: int, prefetch_count: int) -> None:
        """basic.qos and wait for qos-ok."""
        self.send(frames.basic_qos(channel, prefetch_count))
        self.expect(channel, 60, 11)

    def consume(self, channel: int, queue: str, consumer_tag: str) -> None:
        """basic.consume with manual ack and wait for consume-ok."""
        self.send(frames.basic_consume(channel, queue, consumer_tag))
        self.expect(channel, 60, 21)

    def select_confirms(self, channel: int) -> None:
        """confirm.select and wait for select-ok."""
        self.send(frames.confirm_select(channel))
        self.expect(channel, 85, 11)

    def close(self, *, strict: bool = False) -> None:
        """connection.close, wait for close-ok, close the socket.

        Unless ``strict``, errors on the way out are swallowed: the bench is
        done with this connection either way.
        """
        try:
            self.send(frames.connection_close())
            self.expect(0, 10, 51, skip=True)
        except (BenchError, OSError):
            if strict:
                raise
        finally:
            self.sock.close()
