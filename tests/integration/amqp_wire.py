"""A raw-socket AMQP 0-9-1 client for tests that real clients cannot express:
oversized frames, wrong headers, methods on unopened channels, silent peers.

Frames are built with ``pamqp.frame.marshal`` and read back with
``pamqp.frame.unmarshal``; nothing here hides what goes over the wire.
"""

from __future__ import annotations

import socket
import struct
import time
from typing import Any

from pamqp import commands as spec
from pamqp import encode, frame
from pamqp.base import Frame as Method
from pamqp.body import ContentBody
from pamqp.header import ContentHeader, ProtocolHeader
from pamqp.heartbeat import Heartbeat

AMQP_HEADER = b"AMQP\x00\x00\x09\x01"
CLIENT_CAPABILITIES = {
    "authentication_failure_close": True,
    "consumer_cancel_notify": True,
    "basic.nack": True,
    "publisher_confirms": True,
}

Received = Method | ContentHeader | ContentBody | Heartbeat


def method_frame(channel: int, method: Method) -> bytes:
    return frame.marshal(method, channel)


def raw_frame(ftype: int, channel: int, payload: bytes) -> bytes:
    """A frame with any payload, for frames pamqp would refuse to build."""
    return struct.pack(">BHI", ftype, channel, len(payload)) + payload + b"\xce"


def amqplain_response(user: str, password: str) -> bytes:
    """An AMQPLAIN response: a field table without its length prefix."""
    return encode.field_table({"LOGIN": user, "PASSWORD": password})[4:]


class RawClient:
    """One TCP connection to the broker, spoken to frame by frame."""

    def __init__(
        self, port: int, *, timeout: float = 5.0, rcvbuf: int | None = None
    ) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:
            # set before connect so the window the peer sees is small too
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(timeout)
        self.sock.connect(("127.0.0.1", port))
        self.buf = bytearray()
        self.frame_sizes: list[tuple[int, int]] = []  # (type, payload size)

    def __enter__(self) -> RawClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.sock.close()

    # sending

    def send(self, *chunks: bytes) -> None:
        self.sock.sendall(b"".join(chunks))

    def send_method(self, channel: int, method: Method) -> None:
        self.send(method_frame(channel, method))

    def publish_frames(
        self, channel: int, exchange: str, routing_key: str, body: bytes,
        frame_max: int = 131072, **publish_args: Any,
    ) -> bytes:  # fmt: skip
        """basic.publish, its content header and body frames, as bytes."""
        parts = [
            method_frame(channel, spec.Basic.Publish(
                exchange=exchange, routing_key=routing_key, **publish_args
            )),
            frame.marshal(
                ContentHeader(0, len(body), spec.Basic.Properties()), channel
            ),
        ]  # fmt: skip
        chunk = frame_max - 8
        for start in range(0, len(body), chunk):
            parts.append(
                frame.marshal(ContentBody(body[start : start + chunk]), channel)
            )
        return b"".join(parts)

    def publish(
        self, channel: int, exchange: str, routing_key: str, body: bytes,
        frame_max: int = 131072, **publish_args: Any,
    ) -> None:  # fmt: skip
        self.send(self.publish_frames(
            channel, exchange, routing_key, body, frame_max, **publish_args
        ))  # fmt: skip

    # receiving

    def _fill(self) -> bool:
        data = self.sock.recv(1 << 20)
        if not data:
            return False
        self.buf += data
        return True

    def recv_exact(self, size: int) -> bytes:
        while len(self.buf) < size:
            if not self._fill():
                raise EOFError(f"connection closed with {bytes(self.buf)!r} unread")
        data = bytes(self.buf[:size])
        del self.buf[:size]
        return data

    def recv_frame(self) -> tuple[int, Received]:
        """The next frame as (channel, decoded frame)."""
        head = self.recv_exact(7)
        ftype, _channel, size = struct.unpack(">BHI", head)
        rest = self.recv_exact(size + 1)
        self.frame_sizes.append((ftype, size))
        _used, channel, decoded = frame.unmarshal(head + rest)
        assert not isinstance(decoded, ProtocolHeader)
        return channel, decoded

    def expect(self, kind: type[Any], channel: int | None = None) -> Any:
        """The next frame that is not a heartbeat; it must be a ``kind``."""
        while True:
            number, received = self.recv_frame()
            if isinstance(received, Heartbeat) and kind is not Heartbeat:
                continue
            assert isinstance(received, kind), f"expected {kind}, got {received!r}"
            if channel is not None:
                assert number == channel
            return received

    def expect_close(self) -> spec.Connection.Close:
        """The server's connection.close; answered with close-ok, then EOF."""
        close: spec.Connection.Close = self.expect(spec.Connection.Close, 0)
        self.send_method(0, spec.Connection.CloseOk())
        assert self.wait_closed()
        return close

    def wait_closed(self, timeout: float = 5.0) -> bool:
        """True once the server closed the socket (unread frames dropped)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if not self._fill():
                    return True
            except TimeoutError:
                continue
            except ConnectionResetError:
                return True
            self.buf.clear()
        return False

    # the handshake

    def start(self) -> spec.Connection.Start:
        self.send(AMQP_HEADER)
        start: spec.Connection.Start = self.expect(spec.Connection.Start, 0)
        return start

    def login(
        self, user: str = "guest", password: str = "guest", mechanism: str = "PLAIN",
        capabilities: dict[str, Any] | None = None,
    ) -> None:  # fmt: skip
        if mechanism == "AMQPLAIN":
            response = amqplain_response(user, password)
        else:
            response = f"\0{user}\0{password}".encode()
        caps: dict[str, Any] = (
            CLIENT_CAPABILITIES if capabilities is None else capabilities
        )
        self.send_method(0, spec.Connection.StartOk(
            client_properties={"product": "amqp_wire", "capabilities": caps},
            mechanism=mechanism, response=response.decode("latin-1"),
            locale="en_US",
        ))  # fmt: skip

    def tune(
        self, channel_max: int = 0, frame_max: int = 0, heartbeat: int = 0
    ) -> spec.Connection.Tune:
        """Read the server's tune and answer it with these values."""
        tune: spec.Connection.Tune = self.expect(spec.Connection.Tune, 0)
        self.send_method(0, spec.Connection.TuneOk(
            channel_max=channel_max, frame_max=frame_max, heartbeat=heartbeat,
        ))  # fmt: skip
        return tune

    def handshake(
        self, *, channel_max: int = 2047, frame_max: int = 131072,
        heartbeat: int = 0, vhost: str = "/",
    ) -> spec.Connection.Tune:  # fmt: skip
        """Header to open-ok with the given tune-ok values."""
        self.start()
        self.login()
        tune = self.tune(channel_max, frame_max, heartbeat)
        self.send_method(0, spec.Connection.Open(virtual_host=vhost))
        self.expect(spec.Connection.OpenOk, 0)
        return tune

    def open_channel(self, number: int = 1) -> None:
        self.send_method(number, spec.Channel.Open())
        self.expect(spec.Channel.OpenOk, number)
