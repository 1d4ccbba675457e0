"""Persistent messages of durable queues, kept in the journal.

A persistent message (delivery_mode 2) routed to durable queues is written
once as a MESSAGE record with one ENQUEUE per durable queue, before any
queue sees it. Every way it leaves a queue writes a record too: ACK when
acked or dropped, MOVE when dead-lettered (one atomic record for the
removal and the copies in durable target queues), DELIVERY_COUNT when it
comes back unacked, PURGE when a queue is purged or deleted.

Queues that are not durable, and exclusive queues, are never journaled;
a broker without a journal pays one attribute check per publish.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from amqpd.broker.message import Message
from amqpd.codec import properties
from amqpd.codec.fastpath import shortstr
from amqpd.persistence.journal import (
    AckRecord,
    DeliveryCountRecord,
    EnqueueRecord,
    Journal,
    MessageRecord,
    MoveRecord,
    Placement,
    PurgeRecord,
    RecoveredState,
)

if TYPE_CHECKING:
    from amqpd.broker.node import Node
    from amqpd.broker.queue import Entry, Queue

log = logging.getLogger("amqpd.journal")


def queue_key(vhost: str, name: str) -> str:
    """The journal's name for a queue: vhost and name, NUL-separated."""
    return f"{vhost}\x00{name}"


class MessageStore:
    """The broker's view of the journal."""

    def __init__(self, journal: Journal, next_id: int = 1) -> None:
        self.journal = journal
        self._next_id = next_id

    def _new_id(self) -> int:
        mid = self._next_id
        self._next_id += 1
        return mid

    def _record(self, message: Message, mid: int) -> MessageRecord:
        priority = message.priority
        return MessageRecord(
            mid, message.exchange, message.routing_key, message.header,
            message.content(), 0, min(max(priority, 0), 255),
        )  # fmt: skip

    def publish(self, message: Message, queues: Iterable[Queue]) -> int:
        """Journal a persistent message for the durable queues among
        ``queues`` that will take it; the lsn to wait for, or 0."""
        targets = [q for q in queues if q.journaled and not q.refuses(message)]
        if not targets:
            return 0
        mid = self._new_id()
        message.journal_id = mid
        records: list[MessageRecord | EnqueueRecord] = [self._record(message, mid)]
        records += [
            EnqueueRecord(q.journal_key, mid, mid, q.deadline_ms(message))
            for q in targets
        ]
        return self.journal.append_many(records)

    def removed(self, queue: Queue, entry: Entry) -> None:
        """Acked, or dropped without a copy anywhere durable."""
        self.journal.append(AckRecord(queue.journal_key, entry.message.journal_id))

    def returned(self, queue: Queue, entry: Entry) -> None:
        """Back in the queue unacked: keep its delivery count."""
        self.journal.append(
            DeliveryCountRecord(
                queue.journal_key, entry.message.journal_id, entry.returns
            )
        )

    def moved(
        self, queue: Queue, entry: Entry, copy: Message, targets: Sequence[Queue]
    ) -> None:
        """Dead-lettered from a journaled queue: one atomic MOVE record."""
        durable = [q for q in targets if q.journaled] if copy.persistent else []
        if not durable:
            self.removed(queue, entry)
            return
        mid = self._new_id()
        copy.journal_id = mid
        self.journal.append(MoveRecord(
            queue.journal_key, entry.message.journal_id,
            tuple(Placement(q.journal_key, mid, q.deadline_ms(copy)) for q in durable),
            self._record(copy, mid),
        ))  # fmt: skip

    def purged(self, queue: Queue) -> None:
        self.journal.append(PurgeRecord(queue.journal_key))

    # recovery

    def restore(self, node: Node, state: RecoveredState) -> int:
        """Put recovered messages back in their queues, in their order, as
        ready and redelivered; returns how many."""
        from amqpd.broker.queue import Entry

        self._next_id = max(self._next_id, state.next_message_id)
        messages: dict[int, Message] = {}
        unloaded = state.unloaded
        restored: list[Queue] = []
        # most messages share an exchange and routing key: share the objects
        routes: dict[tuple[str, str], tuple[str, str, bytes]] = {}
        now_wall, now_mono = time.time(), time.monotonic()
        count = 0
        for key, queued in state.queues.items():
            queue = self._queue_for(node, key)
            if queue is None:
                continue
            entries = []
            for item in queued:
                record = item.message
                message = messages.get(record.message_id)
                if message is None:
                    mid = record.message_id
                    size = unloaded.get(mid)
                    header, spans = properties.scan_shared(record.header)
                    route = routes.get((record.exchange, record.routing_key))
                    if route is None:
                        exchange, key = record.exchange, record.routing_key
                        route = routes[exchange, key] = (
                            exchange, key, shortstr(exchange) + shortstr(key)
                        )  # fmt: skip
                    message = Message(
                        route[0], route[1], route[2],
                        header, None if size is not None else record.body,
                        spans, size or 0,
                    )  # fmt: skip
                    message.journal_id = mid
                    if size is not None:
                        self._left_on_disk(queue, message)
                    messages[mid] = message
                entry = Entry(item.sequence, message)
                entry.returns = item.delivery_count
                entry.redelivered = True
                deadline = item.deadline_ms
                if deadline:
                    entry.expires_at = now_mono + (deadline / 1000 - now_wall)
                entries.append(entry)
            pager = queue.vhost.pager
            if pager is not None:
                # past the budget, bodies are dropped and read back from
                # the journal, where they are durable already
                durable = self.journal.durable_lsn
                for entry in entries:
                    pager.admit(entry.message, durable)
            queue.restore(entries)
            restored.append(queue)
            count += len(entries)
        # limits lowered while the broker was down drop (and maybe
        # dead-letter) messages only now that every queue is back in order
        for queue in restored:
            queue.apply_limits()
        return count

    def _left_on_disk(self, queue: Queue, message: Message) -> None:
        """A recovered message whose body recovery left in the journal."""
        handle = self.journal.locate(message.journal_id)
        assert handle is not None, "a recovered message is live"
        pager = queue.vhost.pager
        if pager is not None:
            pager.adopt_journaled(message, handle)
        else:
            message.body = self.journal.read_body(handle)

    def _queue_for(self, node: Node, key: str) -> Queue | None:
        vhost_name, _, name = key.partition("\x00")
        vhost = node.vhosts.get(vhost_name)
        queue = vhost.queues.get(name) if vhost is not None else None
        if queue is not None and queue.journaled:
            return queue
        if vhost is not None and queue is None:
            # the queue's declaration was not stored before the crash: keep
            # its messages in a plain durable queue of the same name
            log.warning(
                "journal holds messages for queue '%s' in vhost '%s', which "
                "is not in the definitions; declaring it durable", name, vhost_name,
            )  # fmt: skip
            queue = vhost.declare_queue(
                name, passive=False, durable=True, exclusive=False,
                auto_delete=False, arguments={}, owner=None,
            )  # fmt: skip
            return queue if queue.journaled else None
        log.warning("dropping journaled messages of unknown queue %r", key)
        self.journal.append(PurgeRecord(key))
        return None
