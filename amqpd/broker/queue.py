"""A queue: its ready messages, its consumers and its unacked count.

Dispatch runs inline when a message arrives or a consumer gains capacity:
there is no task or timer per message. Message expiry uses one timer per
queue, set for the earliest deadline among ready messages; queues without a
TTL never touch the clock.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from amqpd.broker import deadletter
from amqpd.broker.consumer import Consumer
from amqpd.broker.message import Message
from amqpd.broker.policy import QueueSettings, resolve
from amqpd.broker.ready import FifoReady, PriorityReady
from amqpd.broker.storage import MessageStore, queue_key
from amqpd.codec import properties, table

if TYPE_CHECKING:
    from amqpd.broker.vhost import VHost

log = logging.getLogger("amqpd.queue")

READY, UNACKED, GONE = 0, 1, 2
DELIVERY_BATCH = 256  # messages per write when one consumer can take many
FRAMING = 100  # about the bytes of frames around a delivered body


class TimerHandle(Protocol):
    def cancel(self) -> None: ...


class Scheduler(Protocol):
    """Timers and the clock, supplied by the server (or a test)."""

    def clock(self) -> float:
        """Monotonic seconds."""

    def call_later(self, delay: float, callback: Callable[[], None]) -> TimerHandle:
        """Run ``callback`` after ``delay`` seconds."""

    def stop(self) -> None:
        """Fire no more timers (shutdown)."""


class Entry:
    """A message's place in one queue."""

    __slots__ = ("expires_at", "message", "priority", "redelivered", "returns",
                 "seq", "size", "state")  # fmt: skip

    def __init__(self, seq: int, message: Message) -> None:
        self.seq = seq
        self.message = message
        self.redelivered = False
        self.returns = 0  # times it came back to the queue unacked
        self.expires_at = 0.0
        self.priority = 0
        self.state = READY
        self.size = message.size


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
        max_priority = arguments.get("x-max-priority")
        self.max_priority = max_priority if isinstance(max_priority, int) else 0
        self.ready: FifoReady | PriorityReady = (
            PriorityReady(self.max_priority) if self.max_priority else FifoReady()
        )
        queue_type = arguments.get("x-queue-type", "classic")
        self.queue_type = (
            queue_type.decode() if isinstance(queue_type, bytes) else queue_type
        )
        self.single_active = arguments.get("x-single-active-consumer") is True
        self.consumers: list[Consumer] = []  # registration order
        self._groups: list[deque[Consumer]] = []  # by priority, highest first
        self.unacked = 0
        self.ready_bytes = 0
        self.deleted = False
        self._seq = 0
        self._had_consumer = False
        self._heap: list[tuple[float, int, Entry]] = []
        self._heap_ids = itertools.count()
        self._expiry_timer: TimerHandle | None = None
        self._expiry_at = 0.0
        self._idle_timer: TimerHandle | None = None
        self.last_used = 0.0
        # persistent messages of durable, non-exclusive queues are journaled
        self.store: MessageStore | None = (
            vhost.store if durable and exclusive_owner is None else None
        )
        self.journaled = self.store is not None
        self.journal_key = queue_key(vhost.name, name)
        # the definitions store's ticket for this queue's declaration: a
        # confirm for a message journaled here waits until it is stored
        self.definition_ticket = 0
        self.settings = QueueSettings()
        self.count_deliveries = False
        self.plain = True
        self.apply_settings(resolve(arguments, None))

    # settings

    @property
    def scheduler(self) -> Scheduler:
        return self.vhost.scheduler

    def apply_settings(self, settings: QueueSettings) -> None:
        """New effective settings (declare, or a policy change)."""
        old_expires = self.settings.expires
        self.settings = settings
        self.count_deliveries = (
            settings.delivery_limit is not None or self.queue_type == "quorum"
        )
        self.plain = (
            not settings.limited
            and settings.message_ttl is None
            and not self.max_priority
        )
        if settings.limited:
            self._enforce_limits()
        if settings.expires != old_expires or self._idle_timer is None:
            self.touch()
            self._arm_idle_timer()

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

    def refuses(self, message: Message) -> bool:
        """True if x-overflow reject-publish* would refuse this message now."""
        settings = self.settings
        return (
            settings.limited
            and settings.overflow != "drop-head"
            and self._would_overflow(message.size)
        )

    def ttl_for(self, message: Message) -> int | None:
        """The TTL in ms this queue gives the message (the lower of the
        queue's and the message's), or None."""
        ttl = self.settings.message_ttl
        if message.ttl is not None and (ttl is None or message.ttl < ttl):
            ttl = message.ttl
        return ttl

    def deadline_ms(self, message: Message) -> int:
        """The absolute (wall clock) expiry in ms the journal keeps, or 0."""
        ttl = self.ttl_for(message)
        return 0 if ttl is None else int(time.time() * 1000) + ttl

    def restore(self, entries: list[Entry]) -> None:
        """Recovered messages, in order, ready again. Length limits are
        applied later (``apply_limits``), once every queue is restored:
        dropping a message now could dead-letter it into a queue whose own
        older messages are not back yet."""
        for entry in entries:
            if self.max_priority:
                prio = entry.message.priority
                entry.priority = min(max(prio, 0), self.max_priority)
            self.ready.append(entry)
            self.ready_bytes += entry.size
            if entry.expires_at:
                self._track_expiry(entry)
            self._seq = max(self._seq, entry.seq)

    def apply_limits(self) -> None:
        """Enforce the length limits now (after a restore)."""
        if self.settings.limited:
            self._enforce_limits()

    def publish(self, message: Message) -> bool:
        """Enqueue a routed message; False if the queue refused it
        (x-overflow reject-publish)."""
        if self.plain and message.ttl is None:
            # no limits, TTLs or priorities: the common case, kept short
            self._seq += 1
            entry = Entry(self._seq, message)
            self.ready.append(entry)
            self.ready_bytes += entry.size
            if self.consumers:
                self.dispatch()
            return True
        settings = self.settings
        if settings.limited and settings.overflow != "drop-head":
            if self._would_overflow(message.size):
                if settings.overflow == "reject-publish-dlx":
                    self._seq += 1
                    deadletter.dead_letter(
                        self, [Entry(self._seq, message)], deadletter.MAXLEN,
                        queued=False,
                    )  # fmt: skip
                return False
        self._seq += 1
        entry = Entry(self._seq, message)
        if self.max_priority:
            prio = message.priority
            entry.priority = prio if prio <= self.max_priority else self.max_priority
        ttl = self.ttl_for(message)
        if ttl is not None:
            if ttl == 0:
                self._publish_now_or_expire(entry)
                return True
            entry.expires_at = self.scheduler.clock() + ttl / 1000
            self._track_expiry(entry)
        self.ready.append(entry)
        self.ready_bytes += entry.size
        if self.consumers:
            self.dispatch()
        if settings.limited:
            self._enforce_limits()
        return True

    def _publish_now_or_expire(self, entry: Entry) -> None:
        """x-message-ttl 0 (or expiration 0): deliver now or drop."""
        consumer = self._next_consumer() if self.consumers and not self.ready else None
        if consumer is None:
            entry.state = GONE
            deadletter.dead_letter(self, [entry], deadletter.EXPIRED)
        else:
            # already due: requeued, it expires rather than coming back (as
            # in RabbitMQ). A clock at exactly 0.0 (only a test's manual
            # clock) reads as "no deadline" and the message would return.
            entry.expires_at = self.scheduler.clock()
            self._deliver(consumer, entry)

    def requeue(self, entries: list[Entry]) -> None:
        """Put messages back at their original places (nack/reject with
        requeue, a closed channel, recover)."""
        self.unacked -= len(entries)
        limit = self.settings.delivery_limit
        over: list[Entry] = []
        now = self.scheduler.clock() if self._heap else 0.0
        store = self.store
        for entry in entries:
            entry.returns += 1
            if store is not None and entry.message.journal_id:
                store.returned(self, entry)
            if limit is not None and entry.returns > limit:
                entry.state = GONE
                over.append(entry)
                continue
            entry.redelivered = True
            entry.state = READY
            self.ready.put_back(entry)
            self.ready_bytes += entry.size
            if entry.expires_at:
                if entry.expires_at <= now:
                    self._arm_expiry_timer(0)
                heapq.heappush(
                    self._heap, (entry.expires_at, next(self._heap_ids), entry)
                )
        if over:
            deadletter.dead_letter(self, over, deadletter.DELIVERY_LIMIT)
        if self._heap:
            self._arm_expiry_timer()
        if self.consumers:
            self.dispatch()
        if self.settings.limited:
            self._enforce_limits()

    def discard(self, entries: list[Entry]) -> None:
        """Rejected without requeue: dead-letter them (or drop)."""
        self.unacked -= len(entries)
        for entry in entries:
            entry.state = GONE
        if self.deleted:
            # unacked messages of a deleted queue went with it (RabbitMQ does
            # not dead-letter them; the journal already dropped them)
            return
        deadletter.dead_letter(self, entries, deadletter.REJECTED)

    # messages out

    def _next_consumer(self) -> Consumer | None:
        if self.single_active:
            active = self.consumers[0]
            return active if active.can_take() else None
        for group in self._groups:
            for _ in range(len(group)):
                consumer = group[0]
                group.rotate(-1)
                if consumer.can_take():
                    return consumer
        return None

    def dispatch(self) -> None:
        """Deliver ready messages to consumers with capacity: the highest
        consumer priority first, round-robin within a priority."""
        ready = self.ready
        expiring = bool(self._heap)
        groups = self._groups
        if (
            not expiring
            and not self.single_active
            and len(groups) == 1
            and len(groups[0]) == 1
            and len(ready) > 1
        ):
            self._dispatch_batches(groups[0][0])
            return
        now = self.scheduler.clock() if expiring else 0.0
        while ready and self.consumers:
            consumer = self._next_consumer()
            if consumer is None:
                return
            entry = ready.popleft()
            self.ready_bytes -= entry.size
            if expiring and entry.expires_at and entry.expires_at <= now:
                entry.state = GONE
                deadletter.dead_letter(self, [entry], deadletter.EXPIRED)
                continue
            self._deliver(consumer, entry)

    def _dispatch_batches(self, consumer: Consumer) -> None:
        """One consumer: hand it as many messages as its prefetch allows,
        in batches that leave as one write."""
        ready = self.ready
        room = consumer.room()
        while ready and room:
            count = min(room, len(ready), DELIVERY_BATCH)
            # stop a batch where the connection's output buffer fills up, so
            # that it overshoots its limit by one message at most
            space = consumer.channel.output_room()
            batch: list[Entry] = []
            while len(batch) < count:
                entry = ready.popleft()
                batch.append(entry)
                space -= entry.size + FRAMING
                if space <= 0:
                    break
            no_ack = consumer.no_ack
            for entry in batch:
                self.ready_bytes -= entry.size
                self._hand_out(entry, no_ack)
            consumer.channel.deliver_batch(consumer, batch, self)
            if consumer.queue is not self or consumer not in self.consumers:
                return  # the delivery cancelled the consumer
            room = consumer.room()

    def _hand_out(self, entry: Entry, no_ack: bool) -> None:
        """A message leaves the ready list: unacked until settled, or gone
        at once for a no-ack taker."""
        if no_ack:
            entry.state = GONE
            if self.store is not None and entry.message.journal_id:
                self.store.removed(self, entry)
        else:
            entry.state = UNACKED
            self.unacked += 1
        if entry.returns and self.count_deliveries:
            entry.message = with_delivery_count(entry.message, entry.returns)

    def lose(self, entry: Entry, error: Exception) -> None:
        """A handed-out message whose body cannot be read back (damaged on
        disk): it leaves the queue for good, logged, instead of failing
        every consumer it would go to."""
        if entry.state == UNACKED:
            self.unacked -= 1
            if self.store is not None and entry.message.journal_id:
                self.store.removed(self, entry)
        entry.state = GONE
        log.error(
            "queue '%s' in vhost '%s': dropped a message whose body cannot be "
            "read back: %s", self.name, self.vhost.name, error,
        )  # fmt: skip

    def _deliver(self, consumer: Consumer, entry: Entry) -> None:
        self._hand_out(entry, consumer.no_ack)
        consumer.channel.deliver(consumer, entry, self)

    def get(self, no_ack: bool) -> Entry | None:
        """Take the next ready message for basic.get."""
        self.touch()
        ready = self.ready
        now = self.scheduler.clock() if self._heap else 0.0
        while ready:
            entry = ready.popleft()
            self.ready_bytes -= entry.size
            if entry.expires_at and entry.expires_at <= now:
                entry.state = GONE
                deadletter.dead_letter(self, [entry], deadletter.EXPIRED)
                continue
            self._hand_out(entry, no_ack)
            return entry
        return None

    def ack(self, entry: Entry) -> None:
        """Acked: no longer unacked, and gone for good."""
        self.unacked -= 1
        entry.state = GONE
        if self.store is not None and entry.message.journal_id and not self.deleted:
            self.store.removed(self, entry)

    def purge(self) -> int:
        count = len(self.ready)
        if self.store is not None and count:
            if self.unacked:
                for entry in self.ready:
                    if entry.message.journal_id:
                        self.store.removed(self, entry)
            else:
                self.store.purged(self)
        for entry in self.ready:
            entry.state = GONE
        self.ready.clear()
        self.ready_bytes = 0
        self._heap.clear()
        return count

    # length limits

    def _would_overflow(self, size: int) -> bool:
        settings = self.settings
        if settings.max_length is not None and len(self.ready) >= settings.max_length:
            return True
        limit = settings.max_length_bytes
        return limit is not None and self.ready_bytes + size > limit

    def _enforce_limits(self) -> None:
        settings = self.settings
        if settings.overflow != "drop-head":
            return
        max_len, max_bytes = settings.max_length, settings.max_length_bytes
        dropped: list[Entry] = []
        ready = self.ready
        while ready and (
            (max_len is not None and len(ready) > max_len)
            or (max_bytes is not None and self.ready_bytes > max_bytes)
        ):
            entry = ready.popleft()
            self.ready_bytes -= entry.size
            entry.state = GONE
            dropped.append(entry)
        if dropped:
            deadletter.dead_letter(self, dropped, deadletter.MAXLEN)

    # message expiry

    def _track_expiry(self, entry: Entry) -> None:
        heapq.heappush(self._heap, (entry.expires_at, next(self._heap_ids), entry))
        if self._expiry_timer is None or entry.expires_at < self._expiry_at:
            self._arm_expiry_timer()

    def _arm_expiry_timer(self, delay: float | None = None) -> None:
        heap = self._heap
        while heap and heap[0][2].state != READY:
            heapq.heappop(heap)
        if self._expiry_timer is not None:
            self._expiry_timer.cancel()
            self._expiry_timer = None
        if not heap or self.deleted:
            return
        at = heap[0][0]
        if delay is None:
            delay = max(0.0, at - self.scheduler.clock())
        self._expiry_at = at
        self._expiry_timer = self.scheduler.call_later(delay, self._expire)

    def _expire(self) -> None:
        """The expiry timer: drop every ready message past its deadline,
        at the head or behind it."""
        self._expiry_timer = None
        if self.deleted:
            return
        now = self.scheduler.clock()
        heap = self._heap
        doomed: set[int] = set()
        while heap and heap[0][0] <= now:
            entry = heapq.heappop(heap)[2]
            if entry.state == READY:
                doomed.add(id(entry))
        if doomed:
            expired = self.ready.remove_if(lambda e: id(e) in doomed)
            for entry in expired:
                entry.state = GONE
                self.ready_bytes -= entry.size
            deadletter.dead_letter(self, expired, deadletter.EXPIRED)
        self._arm_expiry_timer()

    # queue expiry (x-expires)

    def touch(self) -> None:
        """Used: basic.get, a redeclare, or the last consumer leaving."""
        if self.settings.expires is not None:
            self.last_used = self.scheduler.clock()

    def _arm_idle_timer(self) -> None:
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None
        expires = self.settings.expires
        if expires is None or self.deleted:
            return
        due = self.last_used + expires / 1000 - self.scheduler.clock()
        self._idle_timer = self.scheduler.call_later(max(0.0, due), self._idle_check)

    def _idle_check(self) -> None:
        self._idle_timer = None
        expires = self.settings.expires
        if self.deleted or expires is None or self.consumers:
            return  # with consumers, the timer starts again when the last leaves
        if self.scheduler.clock() - self.last_used >= expires / 1000 - 0.001:
            self.vhost.delete_queue(self.name)
            return
        self._arm_idle_timer()

    # consumers

    def add_consumer(self, consumer: Consumer) -> None:
        self.consumers.append(consumer)
        self._had_consumer = True
        self._regroup()
        self.dispatch()

    def remove_consumer(self, consumer: Consumer) -> None:
        try:
            self.consumers.remove(consumer)
        except ValueError:
            return
        self._regroup()
        if not self.consumers:
            self.touch()
            if self.auto_delete and self._had_consumer:
                self.vhost.delete_queue(self.name)
                return
            if self.settings.expires is not None:
                self._arm_idle_timer()
        elif self.single_active:
            self.dispatch()  # the next consumer in line takes over

    def _regroup(self) -> None:
        by_priority: dict[int, deque[Consumer]] = {}
        for consumer in self.consumers:
            by_priority.setdefault(consumer.priority, deque()).append(consumer)
        self._groups = [by_priority[p] for p in sorted(by_priority, reverse=True)]

    def has_exclusive_consumer(self) -> bool:
        return any(c.exclusive for c in self.consumers)

    def close(self) -> None:
        """The queue is deleted: stop timers, forget messages."""
        self.deleted = True
        for timer in (self._expiry_timer, self._idle_timer):
            if timer is not None:
                timer.cancel()
        self._expiry_timer = self._idle_timer = None
        for entry in self.ready:
            entry.state = GONE
        self.ready.clear()
        self.ready_bytes = 0
        self._heap.clear()
        if self.store is not None:
            self.store.purged(self)

    def __repr__(self) -> str:
        return f"<Queue {self.name!r} ready={len(self.ready)} unacked={self.unacked}>"


def with_delivery_count(message: Message, count: int) -> Message:
    """A copy carrying x-delivery-count (earlier deliveries), other headers
    kept byte for byte."""
    raw = properties.raw(message.header, message.spans, "headers")
    entries = (
        [e for e in table.split_table(raw) if e[0] != "x-delivery-count"] if raw else []
    )
    entries.append(("x-delivery-count", table.long_long(count)))
    copy = message.replace({"headers": table.join_table(entries)})
    if message.pager is not None and copy.page is None:
        message.pager.admit(copy)
    return copy
