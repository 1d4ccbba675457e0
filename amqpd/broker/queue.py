"""A queue: its ready messages, its consumers and its unacked count.

Dispatch runs inline when a message arrives or a consumer gains capacity:
there is no task or timer per message.
"""

from __future__ import annotations

import bisect
from collections import deque
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from amqpd.broker.consumer import Consumer
from amqpd.broker.message import Message

if TYPE_CHECKING:
    from amqpd.broker.vhost import VHost


class Entry:
    """A message's place in one queue."""

    __slots__ = ("deliveries", "message", "redelivered", "seq")

    def __init__(self, seq: int, message: Message) -> None:
        self.seq = seq
        self.message = message
        self.redelivered = False
        self.deliveries = 0


class Queue:
    """One queue in a virtual host."""

    def __init__(
        self,
        vhost: VHost,
        name: str,
        *,
        durable: bool,
        exclusive_owner: object | None,
        auto_delete: bool,
        arguments: dict[str, Any],
    ) -> None:
        self.vhost = vhost
        self.name = name
        self.durable = durable
        self.owner = exclusive_owner
        self.auto_delete = auto_delete
        self.arguments = arguments
        self.ready: deque[Entry] = deque()
        self.consumers: deque[Consumer] = deque()
        self.unacked = 0
        self.deleted = False
        self._seq = 0
        self._had_consumer = False

    @property
    def exclusive(self) -> bool:
        return self.owner is not None

    @property
    def message_count(self) -> int:
        return len(self.ready)

    @property
    def consumer_count(self) -> int:
        return len(self.consumers)

    # messages in

    def publish(self, message: Message) -> None:
        self._seq += 1
        self.ready.append(Entry(self._seq, message))
        if self.consumers:
            self.dispatch()

    def requeue(self, entries: Iterable[Entry]) -> None:
        """Put settled-with-requeue messages back at their original places."""
        ready = self.ready
        for entry in sorted(entries, key=lambda e: e.seq, reverse=True):
            self.unacked -= 1
            entry.redelivered = True
            if not ready or entry.seq < ready[0].seq:
                ready.appendleft(entry)
            else:
                ready.insert(bisect.bisect(ready, entry.seq, key=_seq), entry)
        if self.consumers:
            self.dispatch()

    # messages out

    def dispatch(self) -> None:
        """Deliver ready messages round-robin to consumers with capacity."""
        ready = self.ready
        consumers = self.consumers
        while ready and consumers:
            for _ in range(len(consumers)):
                consumer = consumers[0]
                consumers.rotate(-1)
                if consumer.can_take():
                    break
            else:
                return
            entry = ready.popleft()
            entry.deliveries += 1
            if not consumer.no_ack:
                self.unacked += 1
            consumer.channel.deliver(consumer, entry, self)

    def get(self, no_ack: bool) -> Entry | None:
        """Take the next ready message for basic.get."""
        if not self.ready:
            return None
        entry = self.ready.popleft()
        entry.deliveries += 1
        if not no_ack:
            self.unacked += 1
        return entry

    def settle(self, count: int = 1) -> None:
        """Acked or dropped: no longer unacked."""
        self.unacked -= count

    def discard(self, entries: list[Entry]) -> None:
        """Rejected without requeue (or acked by a dropped tx): drop them."""
        self.unacked -= len(entries)

    def purge(self) -> int:
        count = len(self.ready)
        self.ready.clear()
        return count

    # consumers

    def add_consumer(self, consumer: Consumer) -> None:
        self.consumers.append(consumer)
        self._had_consumer = True
        self.dispatch()

    def remove_consumer(self, consumer: Consumer) -> None:
        try:
            self.consumers.remove(consumer)
        except ValueError:
            return
        if self.auto_delete and not self.consumers and self._had_consumer:
            self.vhost.delete_queue(self.name)

    def has_exclusive_consumer(self) -> bool:
        return any(c.exclusive for c in self.consumers)

    def __repr__(self) -> str:
        return f"<Queue {self.name!r} ready={len(self.ready)} unacked={self.unacked}>"


def _seq(entry: Entry) -> int:
    return entry.seq
