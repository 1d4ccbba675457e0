"""The channel machine: one AMQP channel's methods, content and deliveries.

Soft errors raised here close only this channel; the connection machine
turns them into channel.close. While a channel is closing (we sent
channel.close and wait for close-ok) every other frame on it is dropped,
as RabbitMQ does.
"""

from __future__ import annotations

import base64
import bisect
import logging
import os
import re
from collections import deque
from collections.abc import Callable, Iterable
from functools import lru_cache, partial
from typing import TYPE_CHECKING, Any

from pamqp import commands as spec
from pamqp.base import Frame as Method

from amqpd.broker.consumer import UNLIMITED, Consumer
from amqpd.broker.message import BodyLost, Message
from amqpd.broker.policy import amqp_type_name
from amqpd.broker.queue import Entry, Queue
from amqpd.broker.vhost import Exchange
from amqpd.codec import fastpath, properties, table
from amqpd.codec.frames import build_content, build_method, fixed_method
from amqpd.errors import (
    AccessRefused,
    AMQPError,
    ChannelErrorHard,
    FrameError,
    InternalError,
    NotAllowed,
    NotFound,
    NotImplemented_,
    PreconditionFailed,
    UnexpectedFrame,
)
from amqpd.protocol.content import Assembly, check_size

if TYPE_CHECKING:
    from amqpd.protocol.connection import ConnectionMachine

log = logging.getLogger("amqpd.channel")

OPEN, CLOSING = "open", "closing"
Unacked = tuple[Entry, Queue, Consumer | None]


REPLY_TO = "amq.rabbitmq.reply-to"
REPLY_TO_PREFIX = REPLY_TO + "."


MAX_EXPIRATION = 315_360_000_000  # ms (ten years), RabbitMQ's limit
_INTEGER = re.compile(r"[+-]?[0-9]+")


def _parse_expiration(value: str) -> int:
    """The per-message TTL in ms; 406 for what RabbitMQ refuses. The text
    is read as RabbitMQ reads it: a sign, ASCII digits and nothing else (no
    blanks, no underscores)."""
    match = _INTEGER.match(value)
    if match is None:
        why = "no_integer"
    elif match.end() != len(value):
        why = f'{{leftover_string,"{value[match.end() :]}"}}'
    else:
        ttl = int(match.group())
        if 0 <= ttl <= MAX_EXPIRATION:
            return ttl
        kind = "value_negative" if ttl < 0 else "value_too_large"
        why = f"{{{kind},{ttl}}}"
    raise PreconditionFailed(f"invalid expiration '{value}': {why}", 60, 40)


def _check_consume_arguments(arguments: dict[str, Any], where: str) -> None:
    """406 for the consumer arguments RabbitMQ refuses."""
    prio = arguments.get("x-priority")
    if prio is not None and (not isinstance(prio, int) or isinstance(prio, bool)):
        raise PreconditionFailed(
            f"invalid arg 'x-priority' for {where}: "
            f'"expected integer, got {amqp_type_name(prio)}"', 60, 20,
        )  # fmt: skip
    failover = arguments.get("x-cancel-on-ha-failover")
    if failover is not None and not isinstance(failover, bool):
        raise PreconditionFailed(
            f"invalid arg 'x-cancel-on-ha-failover' for {where}: "
            f"{{unacceptable_type,{amqp_type_name(failover)}}}", 60, 20,
        )  # fmt: skip


@lru_cache(maxsize=1024)
def _decode_publish(payload: bytes) -> tuple[str, str, bytes, bool]:
    """basic.publish's exchange, routing key, raw exchange+key, mandatory.

    Remembered for the last distinct publish methods: messages published
    with the same exchange and routing key share those objects (about 90
    bytes per queued message) and skip the decoding."""
    try:
        exchange, key, ex_rk, mandatory, immediate = fastpath.decode_publish(payload)
    except (IndexError, UnicodeDecodeError) as exc:
        raise FrameError(f"cannot decode basic.publish: {exc}", 60, 40) from None
    if immediate:
        raise NotImplemented_("immediate=true", 60, 40)
    return exchange, key, ex_rk, mandatory


def _random_tag(prefix: str) -> str:
    return prefix + base64.urlsafe_b64encode(os.urandom(16)).decode()[:22]


class ChannelMachine:
    """State of one channel: consumers, unacked deliveries, confirms, tx."""

    def __init__(self, conn: ConnectionMachine, number: int) -> None:
        self.conn = conn
        self.number = number
        self.state = OPEN
        self.flow_active = True
        self.assembly: Assembly | None = None
        self.consumers: dict[str, Consumer] = {}
        self.unacked: dict[int, Unacked] = {}
        # consumer deliveries not yet settled: what a global prefetch counts
        # (basic.get messages do not count, as in RabbitMQ)
        self.consumer_unacked = 0
        self.next_tag = 0
        self.prefetch_count = 0  # for consumers created from now on
        self.global_prefetch = 0
        self.last_queue = ""
        # direct reply-to: the token in this channel's reply address
        self.reply_token: str | None = None
        self.reply_consumer: bytes | None = None
        self.reply_tag: str | None = None
        # publisher confirms
        self.confirming = False
        self.publish_seq = 0
        self.confirmed_upto = 0
        self.nacks: list[int] = []
        # publish seqs of journaled messages whose fsync is pending
        self.durable_waits: deque[tuple[int, int]] = deque()  # (seq, lsn)
        self._watched_lsn = 0
        self.tx_lsn = 0  # the journal position a tx.commit-ok waits for
        # transactions: a list of deferred actions applied on commit
        self.tx: list[Callable[[], None]] | None = None
        self.tx_taken: list[tuple[int, Unacked]] = []
        self._handlers: dict[type[Method], Callable[[Any], None]] = {
            spec.Channel.Close: self._on_close,
            spec.Channel.CloseOk: self._on_close_ok,
            spec.Channel.Flow: self._on_flow,
            spec.Channel.FlowOk: lambda m: None,
            spec.Channel.Open: self._on_reopen,
            spec.Exchange.Declare: self._on_exchange_declare,
            spec.Exchange.Delete: self._on_exchange_delete,
            spec.Exchange.Bind: self._on_exchange_bind,
            spec.Exchange.Unbind: self._on_exchange_unbind,
            spec.Queue.Declare: self._on_queue_declare,
            spec.Queue.Bind: self._on_queue_bind,
            spec.Queue.Unbind: self._on_queue_unbind,
            spec.Queue.Purge: self._on_queue_purge,
            spec.Queue.Delete: self._on_queue_delete,
            spec.Basic.Qos: self._on_qos,
            spec.Basic.Consume: self._on_consume,
            spec.Basic.Cancel: self._on_cancel,
            spec.Basic.Get: self._on_get,
            spec.Basic.Ack: lambda m: self.ack(m.delivery_tag, m.multiple),
            spec.Basic.Reject: lambda m: self.reject(m.delivery_tag, False, m.requeue),
            spec.Basic.Nack: lambda m: self.reject(
                m.delivery_tag, m.multiple, m.requeue
            ),
            spec.Basic.Recover: self._on_recover,
            spec.Basic.RecoverAsync: self._on_recover,
            spec.Confirm.Select: self._on_confirm_select,
            spec.Tx.Select: self._on_tx_select,
            spec.Tx.Commit: self._on_tx_commit,
            spec.Tx.Rollback: self._on_tx_rollback,
        }  # fmt: skip

    # output helpers

    def send(self, method: Method) -> None:
        self.conn.write(build_method(self.number, method))

    def send_stored(self, method: Method) -> None:
        """A reply that promises a stored change (declare, bind, delete,
        purge): it leaves once the definitions store and the journal hold
        everything done so far."""
        self.conn.write_stored(build_method(self.number, method))

    @property
    def vhost(self) -> Any:
        return self.conn.vhost

    # frames in

    def on_method(self, method: Method) -> None:
        if self.assembly is not None:
            raise UnexpectedFrame(
                f"expected content header for class 60, got {method.name}",
                method.index >> 16,
                method.index & 0xFFFF,
            )
        handler = self._handlers.get(type(method))
        if handler is None:
            raise NotImplemented_(f"{method.name} is not supported")
        try:
            handler(method)
        except AMQPError as exc:
            if not exc.class_id:  # the close names the method that failed
                exc.class_id, exc.method_id = method.index >> 16, method.index & 0xFFFF
            raise

    def on_publish(self, payload: bytes) -> None:
        """basic.publish through the fast path."""
        if self.assembly is not None:
            raise UnexpectedFrame("expected content header, got basic.publish", 60, 40)
        self.assembly = Assembly(*_decode_publish(payload))

    def publish_whole(self, method: bytes, header: bytes, body: bytes) -> None:
        """basic.publish whose content header and single body frame arrived
        in the same read: no assembly needed (the connection checked that the
        frames are whole and that this channel is open and idle)."""
        exchange, key, ex_rk, mandatory = _decode_publish(method)
        check_size(len(body), self.conn.max_message_size)
        self._publish(exchange, key, ex_rk, mandatory, header, body)

    def on_header(self, payload: bytes) -> None:
        assembly = self.assembly
        if assembly is None:
            raise UnexpectedFrame("content header frame without a content method")
        if assembly.add_header(payload, self.conn.max_message_size):
            self._publish_assembled(assembly)

    def on_body(self, payload: bytes) -> None:
        assembly = self.assembly
        if assembly is None or assembly.header is None:
            raise UnexpectedFrame("content body frame without a content header")
        if assembly.add_body(payload):
            self._publish_assembled(assembly)

    # publishing

    def _publish_assembled(self, assembly: Assembly) -> None:
        self.assembly = None
        header = assembly.header
        assert header is not None
        self._publish(
            assembly.exchange, assembly.routing_key, assembly.ex_rk,
            assembly.mandatory, header, assembly.body,
        )  # fmt: skip

    def _publish(
        self,
        exchange_name: str,
        routing_key: str,
        ex_rk: bytes,
        mandatory: bool,
        header: bytes,
        body: bytes,
    ) -> None:
        try:
            header, spans = properties.scan_shared(header)
            if "headers" in spans:
                # routing, queues and dead-lettering read the headers later,
                # away from this frame: a table they cannot read stops here
                table.split_table(header[slice(*spans["headers"])])
                properties.get(header, spans, "headers")
        except (ValueError, IndexError) as exc:
            raise FrameError(f"malformed content header: {exc}") from None
        message = Message(exchange_name, routing_key, ex_rk, header, body, spans)
        if self.confirming:
            self.publish_seq += 1
        exchange = self.vhost.exchanges.get(message.exchange)
        if exchange is None:
            raise NotFound(f"no exchange '{message.exchange}' in vhost "
                           f"'{self.vhost.name}'", 60, 40)  # fmt: skip
        if exchange.internal:
            raise AccessRefused(
                f"cannot publish to internal exchange '{exchange.name}' in "
                f"vhost '{self.vhost.name}'", 60, 40,
            )  # fmt: skip
        if "expiration" in spans:
            message.ttl = _parse_expiration(message.prop("expiration"))
        if "reply_to" in spans:
            message = self._direct_reply_to(message)
        extra_keys: list[str] = []
        if "headers" in spans:
            message, extra_keys = self._apply_cc(message)
        if self.tx is not None:
            self.tx.append(
                lambda: self._route(exchange, message, extra_keys, mandatory)
            )
            return
        self._route(exchange, message, extra_keys, mandatory)

    def _route(
        self,
        exchange: Exchange,
        message: Message,
        extra_keys: Iterable[str],
        mandatory: bool,
    ) -> None:
        vhost = self.vhost
        if not exchange.name and message.routing_key.startswith(REPLY_TO_PREFIX):
            self._reply(message, mandatory)
            return
        queues = vhost.route(exchange, message)
        for key in extra_keys:
            routed = Message(
                message.exchange, key, message.ex_rk, message.header,
                message.body, message.spans,
            )  # fmt: skip
            for queue in vhost.route(exchange, routed):
                if queue not in queues:
                    queues.append(queue)
        lsn = ticket = 0
        journaled_at = None
        store = vhost.store
        if store is not None and queues and "delivery_mode" in message.spans:
            if message.persistent:
                lsn = store.publish(message, queues)
        if lsn:
            # one pass over the queues: a body that only durable queues hold
            # can be read back from the journal, and the confirm waits for
            # the newest of their declarations to be stored (nowait ones)
            whole = True
            for queue in queues:
                whole = whole and queue.journaled
                if queue.definition_ticket > ticket:
                    ticket = queue.definition_ticket
            if whole:
                journaled_at = lsn
        if queues and vhost.pager is not None:
            vhost.pager.admit(message, journaled_at)
        refused = False
        for queue in queues:
            if not queue.publish(message):
                refused = True
        if not queues and mandatory:
            self._return(message, 312, "NO_ROUTE")
        if self.confirming:
            if refused:
                bisect.insort(self.nacks, self.publish_seq)
            if lsn:
                # the confirm of a journaled message waits for its fsync;
                # the connection asks the journal once per read (watch_durable)
                self.durable_waits.append((self.publish_seq, lsn))
                self.conn.durable_watch.add(self)
            self.conn.confirms_pending.add(self)
        elif lsn and self.tx is not None:
            self.tx_lsn = lsn
        if ticket:
            self.conn.hold_until_stored(ticket)

    def watch_durable(self) -> None:
        """One journal callback for every confirm this read left waiting."""
        store = self.vhost.store
        if not self.durable_waits or store is None:
            return
        lsn = self.durable_waits[-1][1]
        if lsn > self._watched_lsn:
            self._watched_lsn = lsn
            store.journal.on_durable(lsn, partial(self._on_durable, lsn))

    def _on_durable(self, lsn: int, error: Exception | None) -> None:
        """The journal made everything up to ``lsn`` durable (or failed)."""
        waits = self.durable_waits
        while waits and waits[0][1] <= lsn:
            seq = waits.popleft()[0]
            if error is not None:
                bisect.insort(self.nacks, seq)
        if self.state == OPEN:
            # confirms of one fsync leave together, as one ack multiple,
            # when the driver next takes the output
            self.conn.confirms_pending.add(self)
            self.conn.wake()

    # direct reply-to

    def _direct_reply_to(self, message: Message) -> Message:
        """reply_to amq.rabbitmq.reply-to becomes this channel's address."""
        if message.prop("reply_to") != REPLY_TO:
            return message
        if self.reply_token is None:
            raise PreconditionFailed("fast reply consumer does not exist", 60, 40)
        address = f"{REPLY_TO}.{self.reply_token}"
        copy = message.replace({"reply_to": properties.encode_shortstr(address)})
        copy.ttl = message.ttl
        return copy

    def _reply(self, message: Message, mandatory: bool) -> None:
        """A publish to amq.rabbitmq.reply-to.TOKEN: straight to that channel."""
        token = message.routing_key[len(REPLY_TO_PREFIX) :]
        target = self.conn.node.reply_channels.get(token)
        if target is not None and target.state == OPEN:
            target.deliver_reply(message)
        elif mandatory:
            self._return(message, 312, "NO_ROUTE")
        if self.confirming:
            self.conn.confirms_pending.add(self)

    def deliver_reply(self, message: Message) -> None:
        assert self.reply_consumer is not None
        self.next_tag += 1
        conn = self.conn
        conn.write(fastpath.deliver_frame(
            self.number, self.reply_consumer, self.next_tag, False, message.ex_rk
        ))  # fmt: skip
        conn.write_many(
            build_content(
                self.number, message.header, message.content(), conn.frame_max
            )
        )

    def _consume_reply_to(self, m: spec.Basic.Consume) -> None:
        if not m.no_ack:
            raise PreconditionFailed("reply consumer cannot acknowledge", 60, 20)
        if self.reply_token is not None:
            raise PreconditionFailed("reply consumer already set", 60, 20)
        tag = m.consumer_tag or _random_tag("amq.ctag-")
        self.reply_token = base64.urlsafe_b64encode(os.urandom(18)).decode()
        self.reply_consumer = fastpath.shortstr(tag)
        self.reply_tag = tag
        self.conn.node.reply_channels[self.reply_token] = self
        if not m.nowait:
            self.send(spec.Basic.ConsumeOk(consumer_tag=tag))

    def _stop_reply_to(self) -> None:
        if self.reply_token is not None:
            self.conn.node.reply_channels.pop(self.reply_token, None)
            self.reply_token = self.reply_consumer = self.reply_tag = None

    def _apply_cc(self, message: Message) -> tuple[Message, list[str]]:
        """CC and BCC headers: extra routing keys; BCC removed before delivery."""
        raw = properties.raw(message.header, message.spans, "headers")
        assert raw is not None
        if b"\x02CC" not in raw and b"\x03BCC" not in raw:
            return message, []
        entries = table.split_table(raw)
        keys: list[str] = []
        kept = []
        for key, value in entries:
            if key in ("CC", "BCC"):
                decoded = table.decode_value(value)
                if not isinstance(decoded, list):
                    raise PreconditionFailed(
                        f"invalid message: header '{key}' is not an array", 60, 40
                    )
                # as RabbitMQ does, only string items are routing keys
                keys += [v if isinstance(v, str) else v.decode(errors="replace")
                         for v in decoded if isinstance(v, str | bytes)]  # fmt: skip
            if key != "BCC":
                kept.append((key, value))
        if len(kept) != len(entries):
            message = message.replace({"headers": table.join_table(kept)})
        return message, keys

    def _return(self, message: Message, code: int, text: str) -> None:
        self.conn.write(fastpath.return_frame(
            self.number, code, text, message.exchange, message.routing_key
        ))  # fmt: skip
        self.conn.write_many(
            build_content(
                self.number, message.header, message.content(), self.conn.frame_max
            )
        )

    def flush_confirms(self) -> None:
        """Send the acks (and nacks) for everything published so far."""
        upto = self.publish_seq
        if self.durable_waits:
            upto = self.durable_waits[0][0] - 1
        if upto <= self.confirmed_upto:
            return
        start = self.confirmed_upto
        nacks = self.nacks
        write = self.conn.write
        number = self.number
        while nacks and nacks[0] <= upto:
            tag = nacks.pop(0)
            if tag - 1 > start:
                write(fastpath.confirm_frame(number, tag - 1, tag - 1 - start > 1))
            write(fastpath.confirm_frame(number, tag, False, nack=True))
            start = tag
        if upto > start:
            write(fastpath.confirm_frame(number, upto, upto - start > 1))
        self.confirmed_upto = upto

    # deliveries (DeliverySink)

    @property
    def blocked(self) -> bool:
        return not self.flow_active or self.conn.saturated

    def has_capacity(self) -> bool:
        return not self.global_prefetch or self.consumer_unacked < self.global_prefetch

    def deliver(self, consumer: Consumer, entry: Entry, queue: Queue) -> None:
        message = entry.message
        try:
            body = message.content()
        except BodyLost as exc:
            queue.lose(entry, exc)
            return
        self.next_tag += 1
        tag = self.next_tag
        if not consumer.no_ack:
            self.unacked[tag] = (entry, queue, consumer)
            consumer.unacked += 1
            self.consumer_unacked += 1
        conn = self.conn
        conn.write(fastpath.deliver_message(
            self.number, consumer.ctag, tag, entry.redelivered, message.ex_rk,
            message.header, body, conn.frame_max,
        ))  # fmt: skip

    def room(self) -> int:
        if not self.global_prefetch:
            return UNLIMITED
        return self.global_prefetch - self.consumer_unacked

    def output_room(self) -> int:
        conn = self.conn
        return conn.output_limit - conn.output_size

    def deliver_batch(
        self, consumer: Consumer, entries: list[Entry], queue: Queue
    ) -> None:
        number, ctag, frame_max = self.number, consumer.ctag, self.conn.frame_max
        tag = self.next_tag
        parts = []
        track = not consumer.no_ack
        unacked = self.unacked
        build = fastpath.deliver_message
        for entry in entries:
            message = entry.message
            body = message.body
            if body is None:
                try:
                    body = message.content()
                except BodyLost as exc:
                    queue.lose(entry, exc)
                    continue
            tag += 1
            if track:
                unacked[tag] = (entry, queue, consumer)
            parts.append(build(
                number, ctag, tag, entry.redelivered, message.ex_rk, message.header,
                body, frame_max,
            ))  # fmt: skip
        if track:
            consumer.unacked += tag - self.next_tag
            self.consumer_unacked += tag - self.next_tag
        self.next_tag = tag
        self.conn.write(b"".join(parts))

    def cancel_by_server(self, consumer: Consumer) -> None:
        if self.consumers.pop(consumer.tag, None) is None:
            return
        if self.conn.consumer_cancel_notify and self.state == OPEN:
            self.send(spec.Basic.Cancel(consumer_tag=consumer.tag, nowait=True))

    # acknowledgements

    def ack(self, tag: int, multiple: bool) -> None:
        taken = self._take(tag, multiple)
        if self.tx is not None:
            self.tx_taken += taken
            self.tx.append(lambda: self._settle([item for _, item in taken]))
            return
        self._settle([item for _, item in taken])

    def _take(self, tag: int, multiple: bool) -> list[tuple[int, Unacked]]:
        unacked = self.unacked
        if not multiple:
            item = unacked.pop(tag, None)
            if item is None:
                raise PreconditionFailed(f"unknown delivery tag {tag}", 60, 80)
            return [(tag, item)]
        if tag == 0:
            items = list(unacked.items())
            unacked.clear()
            return items
        if tag not in unacked:
            raise PreconditionFailed(f"unknown delivery tag {tag}", 60, 80)
        tags = []
        for t in unacked:
            if t > tag:
                break
            tags.append(t)
        return [(t, unacked.pop(t)) for t in tags]

    def _settle(self, items: list[Unacked]) -> None:
        """Acked: release the messages and let the queues deliver more."""
        touched: dict[int, Queue] = {}
        for entry, queue, consumer in items:
            queue.ack(entry)
            if consumer is not None:
                consumer.unacked -= 1
                self.consumer_unacked -= 1
            touched[id(queue)] = queue
        self._redispatch(touched)

    def _redispatch(self, touched: dict[int, Queue]) -> None:
        if self.global_prefetch:
            for consumer in self.consumers.values():
                touched[id(consumer.queue)] = consumer.queue
        for queue in touched.values():
            if queue.consumers and not queue.deleted:
                queue.dispatch()

    def reject(self, tag: int, multiple: bool, requeue: bool) -> None:
        taken = self._take(tag, multiple)
        items = [item for _, item in taken]
        if self.tx is not None:
            self.tx_taken += taken
            self.tx.append(lambda: self._reject(items, requeue))
            return
        self._reject(items, requeue)

    def _reject(self, items: list[Unacked], requeue: bool) -> None:
        by_queue: dict[int, tuple[Queue, list[Entry]]] = {}
        for entry, queue, consumer in items:
            if consumer is not None:
                consumer.unacked -= 1
                self.consumer_unacked -= 1
            by_queue.setdefault(id(queue), (queue, []))[1].append(entry)
        touched: dict[int, Queue] = {}
        for queue, entries in by_queue.values():
            if requeue and not queue.deleted:
                queue.requeue(entries)
            else:
                queue.discard(entries)
            touched[id(queue)] = queue
        self._redispatch(touched)

    def _on_recover(self, method: spec.Basic.Recover) -> None:
        if not method.requeue:
            raise NotImplemented_("requeue=false", 60, 110)
        self.requeue_all()
        if isinstance(method, spec.Basic.Recover):
            self.send(spec.Basic.RecoverOk())

    def requeue_all(self) -> None:
        items = list(self.unacked.values())
        self.unacked.clear()
        self._reject(items, True)

    # channel class

    def _on_close(self, method: spec.Channel.Close) -> None:
        self.release()
        self.conn.write(fixed_method(self.number, spec.Channel.CloseOk))
        self.conn.forget_channel(self.number)

    def _on_close_ok(self, method: spec.Channel.CloseOk) -> None:
        raise ChannelErrorHard("unexpected channel.close-ok", 20, 41)

    def _on_reopen(self, method: spec.Channel.Open) -> None:
        raise ChannelErrorHard("second 'channel.open' seen", 20, 10)

    def _on_flow(self, method: spec.Channel.Flow) -> None:
        self.flow_active = bool(method.active)
        self.send(spec.Channel.FlowOk(active=method.active))
        if method.active:
            self._redispatch({})
            for consumer in self.consumers.values():
                consumer.queue.dispatch()

    def release(self) -> None:
        """The channel is going away: cancel consumers, requeue unacked."""
        self.state = CLOSING
        self._stop_reply_to()
        self.assembly = None
        self.tx = None
        for tag, item in self.tx_taken:
            self.unacked[tag] = item
        self.tx_taken = []
        # requeue before the consumers leave, with this channel's consumers
        # unable to take them back: as in RabbitMQ, a single active consumer
        # taking over gets the requeued messages first, in their places
        self.flow_active = False
        self.requeue_all()
        consumers = list(self.consumers.values())
        self.consumers.clear()
        for consumer in consumers:
            consumer.queue.remove_consumer(consumer)

    # exchange class

    def _on_exchange_declare(self, m: spec.Exchange.Declare) -> None:
        self.vhost.declare_exchange(
            m.exchange, m.exchange_type, passive=m.passive, durable=m.durable,
            auto_delete=m.auto_delete, internal=m.internal,
            arguments=dict(m.arguments or {}),
        )  # fmt: skip
        if not m.nowait:
            self.send_stored(spec.Exchange.DeclareOk())

    def _on_exchange_delete(self, m: spec.Exchange.Delete) -> None:
        if m.exchange in self.vhost.exchanges or m.exchange.startswith("amq.") \
                or m.exchange == "":  # fmt: skip
            self.vhost.delete_exchange(m.exchange, if_unused=m.if_unused)
        if not m.nowait:
            self.send_stored(spec.Exchange.DeleteOk())

    def _on_exchange_bind(self, m: spec.Exchange.Bind) -> None:
        dest = self.vhost.get_exchange(m.destination)
        self.vhost.bind(dest, m.source, m.routing_key, dict(m.arguments or {}))
        if not m.nowait:
            self.send_stored(spec.Exchange.BindOk())

    def _on_exchange_unbind(self, m: spec.Exchange.Unbind) -> None:
        dest = self.vhost.get_exchange(m.destination)
        self.vhost.unbind(dest, m.source, m.routing_key, dict(m.arguments or {}))
        if not m.nowait:
            self.send_stored(spec.Exchange.UnbindOk())

    # queue class

    def _queue_name(self, name: str, method_id: int) -> str:
        if name:
            return name
        if not self.last_queue:
            raise NotFound("no previously declared queue", 50, method_id)
        return self.last_queue

    def _on_queue_declare(self, m: spec.Queue.Declare) -> None:
        if m.queue == REPLY_TO or m.queue.startswith(REPLY_TO_PREFIX):
            # as RabbitMQ, passive or not: the pseudo-queue exists, with one
            # consumer; a reply address exists while its channel consumes
            token = m.queue[len(REPLY_TO_PREFIX) :]
            if m.queue != REPLY_TO and token not in self.conn.node.reply_channels:
                raise NotFound(f"no queue '{m.queue}' in vhost '{self.vhost.name}'")
            if not m.nowait:
                self.send(spec.Queue.DeclareOk(queue=m.queue, message_count=0,
                                               consumer_count=1))  # fmt: skip
            return
        queue = self.vhost.declare_queue(
            m.queue, passive=m.passive, durable=m.durable, exclusive=m.exclusive,
            auto_delete=m.auto_delete, arguments=dict(m.arguments or {}),
            owner=self.conn,
        )  # fmt: skip
        if queue.owner is self.conn:
            self.conn.exclusive_queues[queue.name] = queue
        self.last_queue = queue.name
        if not m.nowait:
            self.conn.write_stored(fastpath.declare_ok_frame(
                self.number, queue.name, queue.message_count, queue.consumer_count
            ))  # fmt: skip

    def _on_queue_bind(self, m: spec.Queue.Bind) -> None:
        queue = self.vhost.get_queue(self._queue_name(m.queue, 20), self.conn)
        self.vhost.bind(queue, m.exchange, m.routing_key, dict(m.arguments or {}))
        if not m.nowait:
            self.send_stored(spec.Queue.BindOk())

    def _on_queue_unbind(self, m: spec.Queue.Unbind) -> None:
        queue = self.vhost.get_queue(self._queue_name(m.queue, 50), self.conn)
        self.vhost.unbind(queue, m.exchange, m.routing_key, dict(m.arguments or {}))
        self.send_stored(spec.Queue.UnbindOk())

    def _on_queue_purge(self, m: spec.Queue.Purge) -> None:
        queue = self.vhost.get_queue(self._queue_name(m.queue, 30), self.conn)
        count = queue.purge()
        if not m.nowait:
            self.send_stored(spec.Queue.PurgeOk(message_count=count))

    def _on_queue_delete(self, m: spec.Queue.Delete) -> None:
        name = self._queue_name(m.queue, 40)
        count = 0
        if name in self.vhost.queues:
            count = self.vhost.delete_queue(
                name, if_unused=m.if_unused, if_empty=m.if_empty,
                owner=self.conn, check_owner=True,
            )  # fmt: skip
            self.conn.exclusive_queues.pop(name, None)
        if not m.nowait:
            self.send_stored(spec.Queue.DeleteOk(message_count=count))

    # basic class

    def _on_qos(self, m: spec.Basic.Qos) -> None:
        if m.prefetch_size:
            raise NotImplemented_(f"prefetch_size!=0 ({m.prefetch_size})", 60, 10)
        if m.global_:
            self.global_prefetch = m.prefetch_count
        else:
            self.prefetch_count = m.prefetch_count
        self.send(spec.Basic.QosOk())
        # every consumer's queue, also when the global limit was just lifted
        self._redispatch({id(c.queue): c.queue for c in self.consumers.values()})

    def _on_consume(self, m: spec.Basic.Consume) -> None:
        if m.queue == REPLY_TO:
            self._consume_reply_to(m)
            return
        queue = self.vhost.get_queue(self._queue_name(m.queue, 20), self.conn)
        tag = m.consumer_tag or _random_tag("amq.ctag-")
        if tag in self.consumers:
            raise NotAllowed(f"attempt to reuse consumer tag '{tag}'", 60, 20)
        if len(tag.encode()) > 255:
            raise PreconditionFailed("consumer tag longer than 255 bytes", 60, 20)
        if queue.has_exclusive_consumer() or (m.exclusive and queue.consumers):
            raise AccessRefused(
                f"queue '{queue.name}' in vhost '{self.vhost.name}' in "
                "exclusive use", 60, 20,
            )  # fmt: skip
        where = self.vhost.where("queue", queue.name)
        _check_consume_arguments(m.arguments or {}, where)
        consumer = Consumer(
            tag, queue, self, no_ack=m.no_ack, exclusive=m.exclusive,
            prefetch=self.prefetch_count, arguments=dict(m.arguments or {}),
        )  # fmt: skip
        self.consumers[tag] = consumer
        if not m.nowait:
            self.send(spec.Basic.ConsumeOk(consumer_tag=tag))
        queue.add_consumer(consumer)

    def _on_cancel(self, m: spec.Basic.Cancel) -> None:
        if self.reply_tag is not None and m.consumer_tag == self.reply_tag:
            self._stop_reply_to()
        consumer = self.consumers.pop(m.consumer_tag or "", None)
        if consumer is not None:
            consumer.queue.remove_consumer(consumer)
        if not m.nowait:
            self.send(spec.Basic.CancelOk(consumer_tag=m.consumer_tag))

    def _on_get(self, m: spec.Basic.Get) -> None:
        queue = self.vhost.get_queue(self._queue_name(m.queue, 70), self.conn)
        while True:
            entry = queue.get(m.no_ack)
            if entry is None:
                self.send(spec.Basic.GetEmpty())
                return
            try:
                body = entry.message.content()
            except BodyLost as exc:
                queue.lose(entry, exc)
                continue
            break
        self.next_tag += 1
        tag = self.next_tag
        if not m.no_ack:
            self.unacked[tag] = (entry, queue, None)
        message = entry.message
        conn = self.conn
        conn.write(fastpath.get_ok_frame(
            self.number, tag, entry.redelivered, message.ex_rk, queue.message_count
        ))  # fmt: skip
        conn.write_many(
            build_content(self.number, message.header, body, conn.frame_max)
        )

    # confirm and tx classes

    def _on_confirm_select(self, m: spec.Confirm.Select) -> None:
        if self.tx is not None:
            raise PreconditionFailed("cannot switch from tx to confirm mode", 85, 10)
        self.confirming = True
        if not m.nowait:
            self.send(spec.Confirm.SelectOk())

    def _on_tx_select(self, m: spec.Tx.Select) -> None:
        if self.confirming:
            raise PreconditionFailed("cannot switch from confirm to tx mode", 90, 10)
        if self.tx is None:
            self.tx = []
        self.send(spec.Tx.SelectOk())

    def _on_tx_commit(self, m: spec.Tx.Commit) -> None:
        if self.tx is None:
            raise PreconditionFailed("channel is not transactional", 90, 20)
        actions, self.tx = self.tx, []
        self.tx_taken = []
        self.tx_lsn = 0
        for action in actions:
            action()
        store = self.vhost.store
        if self.tx_lsn and store is not None:
            # commit-ok for persistent messages only after their fsync
            store.journal.on_durable(self.tx_lsn, self._on_commit_durable)
            return
        self.send(spec.Tx.CommitOk())

    def _on_commit_durable(self, error: Exception | None) -> None:
        if self.state != OPEN:
            return
        if error is not None:
            self.conn.fail(InternalError(f"journal failed: {error}"))
            return
        self.send(spec.Tx.CommitOk())

    def _on_tx_rollback(self, m: spec.Tx.Rollback) -> None:
        if self.tx is None:
            raise PreconditionFailed("channel is not transactional", 90, 30)
        self.tx = []
        # acks and rejects of the rolled-back transaction are undone: the
        # messages are unacked again under their delivery tags
        restored = dict(self.unacked)
        restored.update(self.tx_taken)
        self.unacked = dict(sorted(restored.items()))
        self.tx_taken = []
        self.send(spec.Tx.RollbackOk())
