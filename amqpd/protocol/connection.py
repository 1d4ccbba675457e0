"""The connection machine: handshake, tune, channel multiplexing, closing.

``receive(data)`` takes bytes from the socket; output accumulates in
``self.output`` and the driver is told (``wake``) to flush it once per loop
turn. Errors become close frames here: a soft error closes its channel, a
hard one the connection; a bug of ours becomes 541 INTERNAL_ERROR for this
connection only.
"""

from __future__ import annotations

import functools
import logging
import platform
from collections import deque
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from pamqp import commands as spec
from pamqp import exceptions as pamqp_exceptions
from pamqp.base import Frame as Method

from amqpd import __version__
from amqpd.auth import sasl
from amqpd.auth.users import is_loopback
from amqpd.codec import fastpath
from amqpd.codec.frames import (
    FRAME_BODY,
    FRAME_HEAD,
    FRAME_HEADER,
    FRAME_HEARTBEAT,
    FRAME_METHOD,
    PROTOCOL_HEADER,
    build_method,
    fixed_method,
)
from amqpd.errors import (
    AMQPError,
    ChannelErrorHard,
    CommandInvalid,
    ConnectionAccessRefused,
    ConnectionForced,
    FrameError,
    InternalError,
    NotAllowed,
    NotImplemented_,
    UnexpectedFrame,
)
from amqpd.protocol.channel import CLOSING, ChannelMachine
from amqpd.protocol.channel import OPEN as CHANNEL_OPEN

if TYPE_CHECKING:
    from amqpd.broker.node import Node
    from amqpd.broker.queue import Queue
    from amqpd.broker.vhost import VHost

log = logging.getLogger("amqpd.connection")
access_log = logging.getLogger("amqpd.connection.access")

# states
HEADER, START_OK, TUNE_OK, OPEN, OPENED, CLOSING_CONN, CLOSED = (
    "header", "start-ok", "tune-ok", "open", "opened", "closing", "closed",
)  # fmt: skip

CAPABILITIES = {
    "publisher_confirms": True,
    "exchange_exchange_bindings": True,
    "basic.nack": True,
    "consumer_cancel_notify": True,
    "connection.blocked": True,
    "consumer_priorities": True,
    "authentication_failure_close": True,
    "per_consumer_qos": True,
    "direct_reply_to": True,
}
_PUBLISH, _ACK = fastpath.BASIC_PUBLISH, fastpath.BASIC_ACK
FRAME_HEAD_UNPACK = FRAME_HEAD.unpack_from
_PUBLISH_ID = b"\x00\x3c\x00\x28"


@functools.lru_cache(maxsize=8)
def _start_frame(cluster_name: str) -> bytes:
    """connection.start, the same for every connection of a node."""
    return build_method(0, spec.Connection.Start(
        version_major=0, version_minor=9,
        server_properties={
            "product": "amqpd",
            "version": __version__,
            "platform": f"Python {platform.python_version()}",
            "copyright": "the amqpd authors",
            "information": "Licensed under the Apache License 2.0",
            "cluster_name": cluster_name,
            "capabilities": dict(CAPABILITIES),
        },
        mechanisms=sasl.MECHANISMS, locales="en_US",
    ))  # fmt: skip


class ConnectionMachine:
    """One client connection, from protocol header to close."""

    def __init__(
        self,
        node: Node,
        peer: tuple[str, int],
        wake: Callable[[], None],
        name: str = "",
    ) -> None:
        self.node = node
        config = node.config
        self.peer = peer
        self.name = name or f"{peer[0]}:{peer[1]}"
        self._wake = wake
        self.state = HEADER
        self.inbuf = bytearray()
        self.output: list[bytes] = []
        self.output_size = 0
        self.output_limit = config.output_buffer_limit
        self.saturated = False
        self.closed = False  # the driver closes the socket once output is sent
        self.channel_max = config.channel_max
        self.frame_max = config.frame_max
        self.heartbeat = config.heartbeat
        self.max_message_size = config.max_message_size
        self.channels: dict[int, ChannelMachine] = {}
        self.exclusive_queues: dict[str, Queue] = {}
        self.confirms_pending: set[ChannelMachine] = set()
        # channels with confirms waiting for the journal (see watch_durable)
        self.durable_watch: set[ChannelMachine] = set()
        # replies waiting for their changes to be stored: (definitions
        # ticket, journal lsn, frame bytes)
        self.held: deque[tuple[int, int, bytes]] = deque()
        self.vhost: VHost | None = None
        self.user = ""
        self.client_properties: dict[str, Any] = {}
        self.consumer_cancel_notify = False
        self.auth_failure_close = False
        self.blocked_capable = False
        self.has_published = False  # publishers are the ones alarms block
        self.blocked_reason = ""  # connection.blocked sent with this reason
        self._mechanism = ""

    # output

    def write(self, data: bytes) -> None:
        if self.held:
            # behind a held reply: keep the order the client expects
            self.held.append((0, 0, data))
            return
        if not self.output:
            self._wake()
        self.output.append(data)
        self.output_size += len(data)
        if self.output_size > self.output_limit:
            self.saturated = True

    def write_many(self, parts: Iterable[bytes]) -> None:
        if self.held:
            self.held.append((0, 0, b"".join(parts)))
            return
        if not self.output:
            self._wake()
        output = self.output
        size = self.output_size
        for part in parts:
            output.append(part)
            size += len(part)
        self.output_size = size
        if size > self.output_limit:
            self.saturated = True

    def write_stored(self, data: bytes) -> None:
        """Write ``data`` once every definition change and journal record
        made so far is on disk (at once when nothing is pending)."""
        node = self.node
        ticket = node.definitions_submitted
        if ticket <= node.definitions_stored:
            ticket = 0
        lsn = 0
        store = node.message_store
        if store is not None:
            journal = store.journal
            if journal.appended_lsn > journal.durable_lsn:
                lsn = journal.appended_lsn
                journal.on_durable(lsn, self._journal_durable)
        if not ticket and not lsn and not self.held:
            self.write(data)
            return
        self.held.append((ticket, lsn, data))

    def hold_until_stored(self, ticket: int) -> None:
        """Hold everything written from now on until the definitions store
        has committed ``ticket``."""
        if ticket > self.node.definitions_stored:
            self.held.append((ticket, 0, b""))

    def _journal_durable(self, error: Exception | None) -> None:
        if error is not None:
            # the change a held reply promises will never be stored
            self.held.clear()
            self.fail(InternalError(f"journal failed: {error}"))
            return
        self.release_held()

    def release_held(self) -> None:
        """Send held replies whose changes are now stored, in order."""
        held = self.held
        node = self.node
        store = node.message_store
        durable = store.journal.durable_lsn if store is not None else 0
        released = []
        while held:
            ticket, lsn, data = held[0]
            if ticket > node.definitions_stored or (lsn and lsn > durable):
                break
            held.popleft()
            released.append(data)
        if released and self.state != CLOSED:
            self.write_many(released)

    def wake(self) -> None:
        """Ask the driver to take the output soon (confirms are pending)."""
        self._wake()

    def take_output(self) -> bytes:
        """Everything written since the last call, as one buffer."""
        if self.confirms_pending:
            self.flush_confirms()
        data = b"".join(self.output)
        self.output.clear()
        self.output_size = 0
        return data

    def drained(self) -> None:
        """The driver sent the output: resume deliveries if they paused."""
        if self.saturated and self.output_size <= self.output_limit:
            self.saturated = False
            for channel in list(self.channels.values()):
                for consumer in list(channel.consumers.values()):
                    consumer.queue.dispatch()

    # input

    def receive(self, data: bytes) -> None:
        """Take bytes from the socket and act on every whole frame."""
        if self.state in (CLOSED,):
            return
        buf = self.inbuf
        buf += data
        if self.state == HEADER:
            if len(buf) < 8:
                return
            if buf[:8] != PROTOCOL_HEADER:
                self.write(PROTOCOL_HEADER)
                self._close_socket()
                return
            del buf[:8]
            self._send_start()
        # the loop of codec.frames.split_frames, inlined: this is the
        # hottest loop of the broker and a list of tuples per chunk costs
        pos = 0
        end = len(buf)
        frame_max = self.frame_max
        unpack_from = FRAME_HEAD_UNPACK
        on_frame = self._on_frame
        try:
            while end - pos >= 7:
                ftype, number, size = unpack_from(buf, pos)
                if size + 8 > frame_max:
                    self._fail(FrameError(
                        f"frame of {size + 8} bytes exceeds frame_max {frame_max}"
                    ))  # fmt: skip
                    break
                stop = pos + 7 + size
                if stop >= end:
                    break
                if buf[stop] != 0xCE:
                    self._fail(FrameError(f"bad frame-end octet {buf[stop]:#x}"))
                    break
                if ftype == 1 and buf[pos + 7 : pos + 11] == _PUBLISH_ID:
                    # basic.publish with its header and one body frame all in
                    # this read: publish it whole, without content assembly
                    nxt = self._publish_whole(buf, pos, stop, end, number)
                    if nxt:
                        pos = nxt
                        if self.state == CLOSED:
                            break
                        continue
                payload = bytes(buf[pos + 7 : stop])
                pos = stop + 1
                on_frame(ftype, number, payload)
                if self.state == CLOSED:
                    break
        finally:
            if pos:
                del buf[:pos]
            if self.durable_watch:
                for channel in self.durable_watch:
                    channel.watch_durable()
                self.durable_watch.clear()
            if self.confirms_pending:
                self.flush_confirms()

    def _publish_whole(
        self, buf: bytearray, pos: int, stop: int, end: int, number: int
    ) -> int:
        """Publish method + header + body from ``buf`` if all are there and
        plain; the position after them, or 0 to take the frame-by-frame path
        (which gives every unusual case its proper answer)."""
        channel = self.channels.get(number)
        if channel is None or channel.state != CHANNEL_OPEN or channel.assembly:
            return 0
        head = stop + 1
        if end - head < 21:
            return 0
        htype, hnumber, hsize = FRAME_HEAD_UNPACK(buf, head)
        hstop: int = head + 7 + hsize
        if htype != 2 or hnumber != number or hsize < 14 or hstop >= end:
            return 0
        if buf[hstop] != 0xCE or hsize + 8 > self.frame_max:
            return 0
        size = int.from_bytes(buf[head + 11 : head + 19], "big")
        if size:
            body_at = hstop + 1
            if end - body_at < 7:
                return 0
            btype, bnumber, bsize = FRAME_HEAD_UNPACK(buf, body_at)
            after: int = body_at + 8 + bsize
            if btype != 3 or bnumber != number or bsize != size or after > end:
                return 0
            if bsize + 8 > self.frame_max:
                return 0
            if buf[after - 1] != 0xCE:
                return 0
            body = bytes(buf[body_at + 7 : after - 1])
        else:
            after, body = hstop + 1, b""
        if buf[head + 7 : head + 9] != b"\x00\x3c":
            return 0
        if not self.has_published:
            self._first_publish()
        try:
            channel.publish_whole(
                bytes(buf[pos + 7 : stop]), bytes(buf[head + 7 : hstop]), body
            )
        except Exception as exc:
            self._answer(channel, exc)
        return after

    def _first_publish(self) -> None:
        self.has_published = True
        if self.node.alarms:
            self.on_alarm(f"low on {' and '.join(sorted(self.node.alarms))}")

    def flush_confirms(self) -> None:
        pending = list(self.confirms_pending)
        self.confirms_pending.clear()
        for channel in pending:
            if channel.state == CHANNEL_OPEN:
                channel.flush_confirms()

    def _on_frame(self, ftype: int, number: int, payload: bytes) -> None:
        channel = self.channels.get(number) if number else None
        try:
            if channel is not None:
                if channel.state == CLOSING:
                    self._on_closing_channel_frame(channel, ftype, payload)
                elif ftype == FRAME_METHOD:
                    mid = fastpath.method_id(payload)
                    if mid == _PUBLISH:
                        if not self.has_published:
                            self._first_publish()
                        channel.on_publish(payload)
                    elif mid == _ACK and len(payload) >= 13 and not channel.assembly:
                        # a short ack, or one inside content, takes the pamqp
                        # path below and gets the same answer as other methods
                        channel.ack(*fastpath.decode_ack(payload))
                    else:
                        channel.on_method(self._decode(payload))
                elif ftype == FRAME_BODY:
                    channel.on_body(payload)
                elif ftype == FRAME_HEADER:
                    channel.on_header(payload)
                elif ftype == FRAME_HEARTBEAT:
                    raise FrameError("heartbeat frame on a non-zero channel")
                else:
                    raise FrameError(f"unknown frame type {ftype}")
            elif number == 0:
                self._on_channel_zero(ftype, payload)
            else:
                self._on_unopened_channel(ftype, number, payload)
        except Exception as exc:
            self._answer(channel, exc)

    def _answer(self, channel: ChannelMachine | None, exc: Exception) -> None:
        """The protocol's answer to an error raised by a frame: a soft error
        closes its channel, a hard one the connection, and a bug of ours is
        541 for this connection only (called from an except block)."""
        if not isinstance(exc, AMQPError):
            log.error("internal error on connection %s", self.name, exc_info=exc)
            self._fail(InternalError("internal error"))
        elif exc.hard or channel is None:
            self._fail(exc)
        else:
            self._close_channel(channel, exc)

    def _decode(self, payload: bytes) -> Method:
        try:
            mid = int.from_bytes(payload[:4], "big")
            method_class = spec.INDEX_MAPPING.get(mid)
            if method_class is None:
                raise NotImplemented_(
                    f"unknown method {mid >> 16}.{mid & 0xFFFF}",
                    mid >> 16,
                    mid & 0xFFFF,
                )
            method: Method = method_class()
            method.unmarshal(payload[4:])
        except AMQPError:
            raise
        except (ValueError, IndexError, UnicodeDecodeError, TypeError) as exc:
            error: Exception = exc
        except pamqp_exceptions.PAMQPException as exc:
            error = exc
        except Exception as exc:  # pamqp raises assorted errors on bad input
            error = exc
        else:
            return method
        # RabbitMQ answers a method it cannot decode with 501 naming the method
        raise FrameError(
            f"cannot decode method frame: {error}", mid >> 16, mid & 0xFFFF
        )

    def _on_closing_channel_frame(
        self, channel: ChannelMachine, ftype: int, payload: bytes
    ) -> None:
        if ftype != FRAME_METHOD:
            return
        mid = fastpath.method_id(payload)
        if mid == spec.Channel.CloseOk.index:
            self.forget_channel(channel.number)
        elif mid == spec.Channel.Close.index:
            self.write(fixed_method(channel.number, spec.Channel.CloseOk))

    def _on_unopened_channel(self, ftype: int, number: int, payload: bytes) -> None:
        if self.state != OPENED:
            raise UnexpectedFrame(f"frame on channel {number} before connection.open")
        if ftype != FRAME_METHOD:
            if ftype == FRAME_HEARTBEAT:
                raise FrameError("heartbeat frame on a non-zero channel")
            raise UnexpectedFrame(
                f"expected a method frame on unopened channel {number}, "
                f"got frame type {ftype}"
            )
        method = self._decode(payload)
        if isinstance(method, spec.Channel.Open):
            if number > self.channel_max:
                raise NotAllowed(
                    f"channel number {number} exceeds the negotiated "
                    f"channel_max {self.channel_max}",
                    20,
                    10,
                )
            self.channels[number] = ChannelMachine(self, number)
            self.write(fixed_method(number, spec.Channel.OpenOk))
        else:
            # a close-ok too: RabbitMQ forgets a channel once closed, as we do
            raise ChannelErrorHard(
                f"expected 'channel.open' on channel {number}, got '{method.name}'",
                method.index >> 16,
                method.index & 0xFFFF,
            )

    def forget_channel(self, number: int) -> None:
        self.channels.pop(number, None)

    def _close_channel(self, channel: ChannelMachine, exc: AMQPError) -> None:
        log.info(
            "channel %d on %s closed: %s %s",
            channel.number, self.name, exc.reply_code, exc.reply_text,
        )  # fmt: skip
        channel.release()
        self.write(
            build_method(
                channel.number,
                spec.Channel.Close(
                    reply_code=exc.reply_code, reply_text=exc.reply_text,
                    class_id=exc.class_id, method_id=exc.method_id,
                ),
            )
        )  # fmt: skip

    # channel zero: the connection class

    def _on_channel_zero(self, ftype: int, payload: bytes) -> None:
        if ftype == FRAME_HEARTBEAT:
            return
        if ftype != FRAME_METHOD:
            raise UnexpectedFrame(f"frame type {ftype} on channel 0")
        method = self._decode(payload)
        if self.state == CLOSING_CONN:
            if isinstance(method, spec.Connection.CloseOk | spec.Connection.Close):
                if isinstance(method, spec.Connection.Close):
                    self.write(fixed_method(0, spec.Connection.CloseOk))
                self._close_socket()
            return
        if isinstance(method, spec.Connection.Close):
            self.release()
            self.write(fixed_method(0, spec.Connection.CloseOk))
            self._close_socket()
            return
        expected: dict[str, type[Method]] = {
            START_OK: spec.Connection.StartOk,
            TUNE_OK: spec.Connection.TuneOk,
            OPEN: spec.Connection.Open,
        }
        want = expected.get(self.state)
        if want is not None and isinstance(method, want):
            getattr(self, "_on_" + self.state.replace("-", "_"))(method)
        elif isinstance(method, spec.Connection.CloseOk):
            self._close_socket()
        elif isinstance(method, spec.Connection.Blocked | spec.Connection.Unblocked):
            return
        else:
            raise CommandInvalid(
                f"unexpected method {method.name} in state {self.state}",
                method.index >> 16,
                method.index & 0xFFFF,
            )

    def _send_start(self) -> None:
        self.state = START_OK
        self.write(_start_frame(self.node.cluster_name))

    def _on_start_ok(self, m: spec.Connection.StartOk) -> None:
        props = dict(m.client_properties or {})
        self.client_properties = props
        caps = props.get("capabilities") or {}
        if isinstance(caps, dict):
            self.consumer_cancel_notify = bool(caps.get("consumer_cancel_notify"))
            self.auth_failure_close = bool(caps.get("authentication_failure_close"))
            self.blocked_capable = bool(caps.get("connection.blocked"))
        if m.mechanism not in sasl.MECHANISMS.split():
            raise ConnectionAccessRefused(
                f"unsupported authentication mechanism '{m.mechanism}'", 10, 11
            )
        response = m.response
        raw = (
            response.encode("latin-1") if isinstance(response, str) else bytes(response)
        )
        try:
            username, password = sasl.parse_response(m.mechanism, raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ConnectionAccessRefused(
                f"bad {m.mechanism} response: {exc}", 10, 11
            ) from None
        self._mechanism = m.mechanism
        user = self.node.users.get(username)
        if user is None or not user.check(password):
            self._refuse_login(
                f"Login was refused using authentication mechanism "
                f"{m.mechanism}. For details see the broker logfile.",
                username,
            )
            return
        if user.loopback_only and not is_loopback(self.peer[0]):
            self._refuse_login(
                f"user '{username}' can only connect via localhost", username
            )
            return
        self.user = username
        self.state = TUNE_OK
        self.write(build_method(0, spec.Connection.Tune(
            channel_max=self.channel_max, frame_max=self.frame_max,
            heartbeat=self.heartbeat,
        )))  # fmt: skip

    def _refuse_login(self, text: str, username: str) -> None:
        access_log.warning(
            "connection %s refused login for user '%s'", self.name, username
        )
        if self.auth_failure_close:
            exc = ConnectionAccessRefused(text)
            self.write(build_method(0, spec.Connection.Close(
                reply_code=exc.reply_code, reply_text=exc.reply_text,
                class_id=0, method_id=0,
            )))  # fmt: skip
        self._close_socket()

    def _on_tune_ok(self, m: spec.Connection.TuneOk) -> None:
        server = self.node.config
        if m.channel_max > server.channel_max:
            raise NotAllowed(
                f"channel_max={m.channel_max} > {server.channel_max} max", 10, 31
            )
        if m.frame_max > server.frame_max:
            raise NotAllowed(
                f"frame_max={m.frame_max} > {server.frame_max} max size", 10, 31
            )
        if m.frame_max and m.frame_max < 4096:
            raise NotAllowed(f"frame_max={m.frame_max} < 4096 min size", 10, 31)
        self.channel_max = m.channel_max or server.channel_max
        self.frame_max = m.frame_max or server.frame_max
        self.heartbeat = m.heartbeat
        self.state = OPEN

    def _on_open(self, m: spec.Connection.Open) -> None:
        vhost = self.node.vhosts.get(m.virtual_host)
        if vhost is None:
            raise NotAllowed(f"vhost '{m.virtual_host}' not found", 10, 40)
        self.vhost = vhost
        self.state = OPENED
        self.write(fixed_method(0, spec.Connection.OpenOk))
        access_log.info(
            "connection %s opened: user '%s' vhost '%s'",
            self.name,
            self.user,
            vhost.name,
        )

    # closing

    def fail(self, exc: AMQPError) -> None:
        """Close the connection with a hard error (from outside a frame)."""
        self._fail(exc)

    def _fail(self, exc: AMQPError) -> None:
        """A hard error: close the connection with its reply code."""
        if self.state in (CLOSING_CONN, CLOSED):
            return
        self.held.clear()  # replies held for storage no longer matter
        log.warning(
            "connection %s error: %s %s", self.name, exc.reply_code, exc.reply_text
        )
        if self.state in (HEADER, START_OK, TUNE_OK) and exc.reply_code != 530:
            # before open: close with the error, as RabbitMQ does
            pass
        self.release()
        self.write(build_method(0, spec.Connection.Close(
            reply_code=exc.reply_code, reply_text=exc.reply_text,
            class_id=exc.class_id, method_id=exc.method_id,
        )))  # fmt: skip
        self.state = CLOSING_CONN

    def stop_deliveries(self) -> None:
        """Take no more deliveries on any channel (shutdown, before the
        connections close: messages another connection's close requeues
        must stay in their queues, not go to a consumer about to close too,
        whose acks would arrive after its own close and be ignored)."""
        for channel in self.channels.values():
            channel.flow_active = False

    def force_close(self, text: str = "broker shutdown") -> None:
        """Server-initiated close with 320 CONNECTION_FORCED."""
        if self.state in (HEADER, START_OK, TUNE_OK):
            self._close_socket()
            return
        self._fail(ConnectionForced(text))

    def on_alarm(self, reason: str) -> None:
        """A resource alarm went on (reason) or off (''): connection.blocked
        and connection.unblocked for clients that asked for them."""
        if self.state != OPENED:
            return
        if reason and self.has_published and self.blocked_capable:
            if not self.blocked_reason:
                self.write(build_method(0, spec.Connection.Blocked(reason=reason)))
            self.blocked_reason = reason
        elif not reason and self.blocked_reason:
            self.blocked_reason = ""
            self.write(build_method(0, spec.Connection.Unblocked()))

    @property
    def blocked_by_alarm(self) -> bool:
        """True while an alarm is on and this connection publishes."""
        return bool(self.node.alarms) and self.has_published

    def release(self) -> None:
        """Release channels and exclusive queues (idempotent)."""
        channels = list(self.channels.values())
        self.channels.clear()
        for channel in channels:
            channel.release()
        queues = list(self.exclusive_queues.values())
        self.exclusive_queues.clear()
        for queue in queues:
            if not queue.deleted:
                queue.vhost.delete_queue(queue.name)

    def _close_socket(self) -> None:
        self.state = CLOSED
        self.closed = True
        self._wake()

    def connection_lost(self) -> None:
        """The socket is gone: clean up as after connection.close."""
        if self.state != CLOSED:
            self.state = CLOSED
        self.release()
        if self.vhost is not None:
            access_log.info("connection %s closed", self.name)
