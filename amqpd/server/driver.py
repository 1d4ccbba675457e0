"""The socket driver: moves bytes between a socket and a connection machine.

It reads in large chunks and hands each chunk to the machine whole; output
the machine produced while handling it leaves in one send per loop turn. It
also keeps time: heartbeats, the handshake deadline and the close deadline.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

import anyio
from anyio.abc import SocketAttribute, SocketStream, TaskGroup

from amqpd.codec.frames import HEARTBEAT_FRAME
from amqpd.protocol.connection import CLOSING_CONN, OPENED, ConnectionMachine

if TYPE_CHECKING:
    from amqpd.broker.node import Node
    from amqpd.server.alarms import AlarmMonitor

log = logging.getLogger("amqpd.connection")

READ_SIZE = 256 * 1024
HANDSHAKE_TIMEOUT = 10.0
CLOSE_TIMEOUT = 3.0
TICK = 0.25  # seconds between the broker clock's looks at every connection
_STREAM_GONE = (
    anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError,
    ConnectionError, OSError,
)  # fmt: skip


def _peer(stream: SocketStream) -> tuple[str, int]:
    try:
        address = stream.extra(SocketAttribute.remote_address)
    except anyio.TypedAttributeLookupError:
        return ("unix", 0)
    if isinstance(address, tuple):
        return (str(address[0]), int(address[1]))
    return (str(address), 0)


class ConnectionDriver:
    """Runs one accepted socket until it closes."""

    def __init__(
        self, node: Node, stream: SocketStream, alarms: AlarmMonitor | None = None
    ) -> None:
        self.node = node
        self.stream = stream
        self.alarms = alarms
        self.paused = False  # not reading: heartbeat checks are suspended
        self.closing_since = 0.0
        self._output_ready = anyio.Event()
        self._drained = anyio.Event()
        self.conn = ConnectionMachine(node, _peer(stream), self._wake)
        self.last_received = self.last_sent = self.started = time.monotonic()
        self._tg: TaskGroup | None = None

    def _wake(self) -> None:
        self._output_ready.set()

    async def run(self) -> None:
        self.node.connections.add(self)
        try:
            async with anyio.create_task_group() as tg:
                self._tg = tg
                tg.start_soon(self._write_loop)
                await self._read_loop()
                tg.cancel_scope.cancel()
        finally:
            self.node.connections.discard(self)
            try:
                self.conn.connection_lost()
            except Exception:
                log.exception("cleanup failed for connection %s", self.conn.name)
            with anyio.CancelScope(shield=True):
                await self.stream.aclose()

    async def _read_loop(self) -> None:
        conn = self.conn
        stream = self.stream
        while not conn.closed:
            try:
                data = await stream.receive(READ_SIZE)
            except _STREAM_GONE:
                return
            self.last_received = time.monotonic()
            conn.receive(data)
            if conn.saturated and not conn.closed:
                # a client that does not read its deliveries: stop reading its
                # input too until its output drains
                self._drained = anyio.Event()
                await self._pause(self._drained)
            while self.alarms is not None and conn.blocked_by_alarm and not conn.closed:
                # a resource alarm: publishers are not read from until it clears
                await self._pause(self.alarms.cleared)
        await anyio.sleep_forever()  # the writer flushes, then cancels us

    async def _pause(self, event: anyio.Event) -> None:
        self.paused = True
        try:
            await event.wait()
        finally:
            self.paused = False
            self.last_received = time.monotonic()

    async def _write_loop(self) -> None:
        conn = self.conn
        stream = self.stream
        while True:
            await self._output_ready.wait()
            self._output_ready = anyio.Event()
            data = conn.take_output()
            if data:
                try:
                    await stream.send(data)
                except _STREAM_GONE:
                    self._cancel()
                    return
                self.last_sent = time.monotonic()
            conn.drained()
            if not conn.saturated:
                self._drained.set()
            if conn.closed and not conn.output:
                self._cancel()
                return

    def tick(self, now: float) -> None:
        """The broker's clock, a few times a second: heartbeats, the
        handshake deadline and the close deadline (one timer task for all
        connections rather than one per connection)."""
        conn = self.conn
        if conn.state == CLOSING_CONN:
            self.closing_since = self.closing_since or now
            if now - self.closing_since > CLOSE_TIMEOUT:
                self._cancel()
            return
        if conn.state != OPENED:
            if now - self.started > HANDSHAKE_TIMEOUT:
                log.warning("connection %s: handshake timeout", conn.name)
                self._cancel()
            return
        interval = conn.heartbeat
        if not interval:
            return
        if not self.paused and now - self.last_received > 2 * interval:
            log.warning(
                "missed heartbeats from client %s, timeout: %ds", conn.name, interval
            )
            self._cancel()
            return
        if now - self.last_sent >= interval / 2 and not conn.output:
            conn.write(HEARTBEAT_FRAME)

    def _cancel(self) -> None:
        if self._tg is not None:
            self._tg.cancel_scope.cancel()

    def force_close(self, text: str) -> None:
        self.conn.force_close(text)

    def stop_deliveries(self) -> None:
        self.conn.stop_deliveries()
