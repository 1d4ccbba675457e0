"""A client on the far side of a ConnectionMachine, with no socket between.

Bytes go in through ``machine.receive``; what the machine wrote is read back
with ``machine.take_output`` and decoded with pamqp, frame by frame.
"""

from __future__ import annotations

import struct
from collections import deque
from typing import Any

from pamqp import commands as spec
from pamqp import frame
from pamqp.base import Frame as Method
from pamqp.body import ContentBody
from pamqp.header import ContentHeader, ProtocolHeader
from pamqp.heartbeat import Heartbeat

from amqpd.broker.node import Node
from amqpd.config import Config
from amqpd.protocol.connection import ConnectionMachine

AMQP_HEADER = b"AMQP\x00\x00\x09\x01"
LOCAL = ("127.0.0.1", 50000)

Received = Method | ContentHeader | ContentBody | Heartbeat


def make_node(**config: Any) -> Node:
    node = Node(Config(**config))
    node.ensure_defaults()
    return node


def method_frame(channel: int, method: Method) -> bytes:
    return frame.marshal(method, channel)


def raw_frame(ftype: int, channel: int, payload: bytes) -> bytes:
    return struct.pack(">BHI", ftype, channel, len(payload)) + payload + b"\xce"


def content_frames(
    channel: int, body: bytes, frame_max: int = 131072, body_size: int | None = None
) -> list[bytes]:
    size = len(body) if body_size is None else body_size
    parts = [frame.marshal(ContentHeader(0, size, spec.Basic.Properties()), channel)]
    chunk = frame_max - 8
    for start in range(0, len(body), chunk):
        parts.append(frame.marshal(ContentBody(body[start : start + chunk]), channel))
    return parts


class Peer:
    """Drives one ConnectionMachine as a client would."""

    def __init__(self, node: Node, address: tuple[str, int] = LOCAL) -> None:
        self.wakes = 0
        self.machine = ConnectionMachine(node, address, self._wake)
        self.frames: deque[tuple[int, Received]] = deque()
        self.header_seen = False

    def _wake(self) -> None:
        self.wakes += 1

    # in

    def send(self, *chunks: bytes) -> None:
        self.machine.receive(b"".join(chunks))

    def send_method(self, channel: int, method: Method) -> None:
        self.send(method_frame(channel, method))

    def publish(
        self, channel: int, routing_key: str, body: bytes, exchange: str = "",
        frame_max: int = 131072,
    ) -> None:  # fmt: skip
        self.send(
            method_frame(channel, spec.Basic.Publish(
                exchange=exchange, routing_key=routing_key
            )),
            *content_frames(channel, body, frame_max),
        )  # fmt: skip

    # out

    def output(self) -> bytes:
        data: bytes = self.machine.take_output()
        return data

    def read(self) -> list[tuple[int, Received]]:
        """Every frame written since the last read (or pending from one)."""
        data = self.output()
        pos = 0
        while pos < len(data):
            used, channel, decoded = frame.unmarshal(data[pos:])
            assert not isinstance(decoded, ProtocolHeader)
            self.frames.append((channel, decoded))
            pos += used
        frames = list(self.frames)
        self.frames.clear()
        return frames

    def expect(self, kind: type[Any], channel: int | None = None) -> Any:
        """The next frame out of the machine; it must be a ``kind``."""
        if not self.frames:
            self.frames.extend(self.read())
        assert self.frames, f"expected {kind.__name__}, the machine wrote nothing"
        number, received = self.frames.popleft()
        assert isinstance(received, kind), f"expected {kind}, got {received!r}"
        if channel is not None:
            assert number == channel
        return received

    def expect_close(self) -> spec.Connection.Close:
        close: spec.Connection.Close = self.expect(spec.Connection.Close, 0)
        return close

    # the handshake

    def start(self) -> spec.Connection.Start:
        self.send(AMQP_HEADER)
        start: spec.Connection.Start = self.expect(spec.Connection.Start, 0)
        return start

    def login(
        self, user: str = "guest", password: str = "guest", mechanism: str = "PLAIN",
        response: bytes | None = None, auth_failure_close: bool = True,
    ) -> None:  # fmt: skip
        if response is None:
            response = f"\0{user}\0{password}".encode()
        self.send_method(0, spec.Connection.StartOk(
            client_properties={"capabilities": {
                "authentication_failure_close": auth_failure_close,
                "consumer_cancel_notify": True,
            }},
            mechanism=mechanism, response=response.decode("latin-1"),
            locale="en_US",
        ))  # fmt: skip

    def tune_ok(
        self, channel_max: int = 2047, frame_max: int = 131072, heartbeat: int = 0
    ) -> None:
        self.send_method(0, spec.Connection.TuneOk(
            channel_max=channel_max, frame_max=frame_max, heartbeat=heartbeat
        ))  # fmt: skip

    def handshake(
        self, channel_max: int = 2047, frame_max: int = 131072, heartbeat: int = 0
    ) -> spec.Connection.Tune:
        self.start()
        self.login()
        tune: spec.Connection.Tune = self.expect(spec.Connection.Tune, 0)
        self.tune_ok(channel_max, frame_max, heartbeat)
        self.send_method(0, spec.Connection.Open(virtual_host="/"))
        self.expect(spec.Connection.OpenOk, 0)
        return tune

    def open_channel(self, number: int = 1) -> None:
        self.send_method(number, spec.Channel.Open())
        self.expect(spec.Channel.OpenOk, number)

    def declare_queue(self, channel: int, name: str) -> None:
        self.send_method(channel, spec.Queue.Declare(queue=name))
        self.expect(spec.Queue.DeclareOk, channel)

    def consume(self, channel: int, queue: str, no_ack: bool = True) -> str:
        self.send_method(channel, spec.Basic.Consume(queue=queue, no_ack=no_ack))
        ok: spec.Basic.ConsumeOk = self.expect(spec.Basic.ConsumeOk, channel)
        return str(ok.consumer_tag)
