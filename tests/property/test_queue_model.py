"""The queue (amqpd/broker/queue.py) held equal to a small reference model.

Hypothesis drives a real ``Queue`` (declared through ``VHost.declare_queue``
on a node with a manual clock) and a model written here with the same random
steps: publish (with a priority and a per-message TTL), consumers coming and
going (distinct consumer priorities, prefetch limits), basic.get, ack, nack
with requeue, reject, and time moving on. Queues vary in x-max-priority,
x-max-length (drop-head) and x-message-ttl, and dead-letter to a plain
queue. After every step the deliveries (consumer, message, redelivered),
the ready messages in delivery order, the unacked count and the
dead-lettered messages with their x-death reason must match.

The model states the rules plainly:

- ready messages go out highest priority first, FIFO within a priority; a
  requeued message goes back to its original place, marked redelivered;
- a message goes to the highest-priority consumer below its prefetch limit;
- a message's TTL is the lower of the queue's and its own; one past its
  deadline is never delivered: it is dead-lettered as ``expired`` when time
  passes it or when it reaches the head, whichever comes first, and it
  still counts toward x-max-length until then;
- a TTL of 0 means deliver now (a consumer with room, nothing ready ahead)
  or expire; delivered so, it expires if it is ever requeued;
- past x-max-length the head is dropped (``maxlen``) after dispatch;
- a rejected message is dead-lettered as ``rejected``.

The clock starts at 16 s so that deadline arithmetic stays exact (a
difference of two clock readings within a factor of two of each other is
exact), and a deadline is met when the clock reaches it.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from amqpd.broker.clock import ManualScheduler
from amqpd.broker.consumer import Consumer
from amqpd.broker.message import Message
from amqpd.broker.node import Node
from amqpd.broker.queue import Entry, Queue
from amqpd.codec import properties
from amqpd.codec.fastpath import shortstr
from amqpd.config import Config

START = 16.0
PRIORITY_FLAG, EXPIRATION_FLAG = 0x0800, 0x0100
TTLS = st.sampled_from([None, None, 0, 10, 25, 60])


def build_message(number: int, priority: int | None, ttl: int | None) -> Message:
    """A message whose body is its number, with a content header built by
    hand: class 60, weight 0, body size, property flags, properties."""
    body = str(number).encode()
    flags, props = 0, b""
    if priority is not None:
        flags |= PRIORITY_FLAG
        props += bytes([priority])
    if ttl is not None:
        flags |= EXPIRATION_FLAG
        props += shortstr(str(ttl))
    header = struct.pack(">HHQH", 60, 0, len(body), flags) + props
    message = Message(
        "", "q", shortstr("") + shortstr("q"), header, body, properties.scan(header)
    )
    message.ttl = ttl
    return message


class Sink:
    """The channel side of every consumer: records deliveries."""

    blocked = False

    def __init__(self) -> None:
        self.deliveries: list[tuple[str, Entry]] = []

    def has_capacity(self) -> bool:
        return True

    def deliver(self, consumer: Consumer, entry: Entry, queue: Queue) -> None:
        if not consumer.no_ack:
            consumer.unacked += 1
        self.deliveries.append((consumer.tag, entry))

    def room(self) -> int:
        return 1 << 30

    def output_room(self) -> int:
        return 1 << 30

    def deliver_batch(
        self, consumer: Consumer, entries: list[Entry], queue: Queue
    ) -> None:
        for entry in entries:
            self.deliver(consumer, entry, queue)

    def cancel_by_server(self, consumer: Consumer) -> None:
        raise AssertionError("the queue is never deleted here")


# the reference model


@dataclass
class Item:
    number: int
    seq: int
    priority: int
    expires_at: float | None
    redelivered: bool = False

    @property
    def key(self) -> tuple[int, int]:
        return (-self.priority, self.seq)


@dataclass
class ModelConsumer:
    priority: int
    prefetch: int
    unacked: int = 0

    def has_room(self) -> bool:
        return self.prefetch == 0 or self.unacked < self.prefetch


@dataclass
class Model:
    max_priority: int
    max_length: int | None
    queue_ttl: int | None
    ready: list[Item] = field(default_factory=list)
    unacked: dict[int, tuple[Item, str | None]] = field(default_factory=dict)
    consumers: dict[str, ModelConsumer] = field(default_factory=dict)
    delivered: list[tuple[str, int, bool]] = field(default_factory=list)
    dead: set[tuple[int, str]] = field(default_factory=set)
    seq: int = 0

    def _insert(self, item: Item) -> None:
        self.ready.append(item)
        self.ready.sort(key=lambda i: i.key)

    def _next_consumer(self) -> str | None:
        ranked = sorted(self.consumers.items(), key=lambda kv: -kv[1].priority)
        for tag, consumer in ranked:
            if consumer.has_room():
                return tag
        return None

    def _deliver(self, tag: str, item: Item) -> None:
        self.consumers[tag].unacked += 1
        self.unacked[item.number] = (item, tag)
        self.delivered.append((tag, item.number, item.redelivered))

    def _dispatch(self, now: float) -> None:
        while self.ready and self.consumers:
            tag = self._next_consumer()
            if tag is None:
                return
            item = self.ready.pop(0)
            if item.expires_at is not None and item.expires_at <= now:
                self.dead.add((item.number, "expired"))
                continue
            self._deliver(tag, item)

    def _enforce_max_length(self) -> None:
        if self.max_length is None:
            return
        while len(self.ready) > self.max_length:
            self.dead.add((self.ready.pop(0).number, "maxlen"))

    def publish(
        self, number: int, priority: int | None, ttl: int | None, now: float
    ) -> None:
        self.seq += 1
        level = min(priority or 0, self.max_priority) if self.max_priority else 0
        item = Item(number, self.seq, level, None)
        ttls = [t for t in (self.queue_ttl, ttl) if t is not None]
        effective = min(ttls) if ttls else None
        if effective == 0:
            tag = self._next_consumer() if self.consumers and not self.ready else None
            if tag is None:
                self.dead.add((number, "expired"))
            else:
                item.expires_at = now  # due already, should it come back
                self._deliver(tag, item)
            return
        if effective is not None:
            item.expires_at = now + effective / 1000
        self._insert(item)
        if self.consumers:
            self._dispatch(now)
        self._enforce_max_length()

    def get(self, no_ack: bool, now: float) -> int | None:
        while self.ready:
            item = self.ready.pop(0)
            if item.expires_at is not None and item.expires_at <= now:
                self.dead.add((item.number, "expired"))
                continue
            self.delivered.append(("get", item.number, item.redelivered))
            if not no_ack:
                self.unacked[item.number] = (item, None)
            return item.number
        return None

    def _settled(self, number: int) -> Item:
        item, tag = self.unacked.pop(number)
        if tag is not None and tag in self.consumers:
            self.consumers[tag].unacked -= 1
        return item

    def ack(self, number: int, now: float) -> None:
        self._settled(number)
        if self.consumers:
            self._dispatch(now)

    def requeue(self, number: int, now: float) -> None:
        item = self._settled(number)
        item.redelivered = True
        self._insert(item)
        if self.consumers:
            self._dispatch(now)
        self._enforce_max_length()

    def reject(self, number: int, now: float) -> None:
        self._settled(number)
        self.dead.add((number, "rejected"))
        if self.consumers:
            self._dispatch(now)

    def consume(self, tag: str, priority: int, prefetch: int, now: float) -> None:
        self.consumers[tag] = ModelConsumer(priority, prefetch)
        self._dispatch(now)

    def cancel(self, tag: str) -> None:
        del self.consumers[tag]

    def advance(self, now: float) -> None:
        for item in [i for i in self.ready if i.expires_at is not None]:
            assert item.expires_at is not None
            if item.expires_at <= now:
                self.ready.remove(item)
                self.dead.add((item.number, "expired"))


# the machine


class QueueMatchesModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.clock = ManualScheduler()
        self.clock.advance(START)
        node = Node(Config(), scheduler=self.clock)
        node.ensure_defaults()
        self.vhost = node.vhosts["/"]
        self.sink = Sink()
        self.numbers = 0
        self.tags = 0
        self.seen = 0  # deliveries of the sink already moved to the log
        self.log: list[tuple[str, int, bool]] = []
        self.unacked: dict[int, tuple[Entry, Consumer | None]] = {}
        self.consumers: dict[str, Consumer] = {}

    def declare(self, name: str, arguments: dict[str, Any]) -> Queue:
        return self.vhost.declare_queue(
            name, passive=False, durable=False, exclusive=False,
            auto_delete=False, arguments=arguments, owner=None,
        )  # fmt: skip

    @initialize(
        max_priority=st.sampled_from([0, 0, 1, 3]),
        max_length=st.sampled_from([None, None, 0, 1, 3]),
        queue_ttl=st.sampled_from([None, None, 0, 20, 50]),
    )
    def setup(
        self, max_priority: int, max_length: int | None, queue_ttl: int | None
    ) -> None:
        arguments: dict[str, Any] = {
            "x-dead-letter-exchange": "", "x-dead-letter-routing-key": "dlq",
        }  # fmt: skip
        if max_priority:
            arguments["x-max-priority"] = max_priority
        if max_length is not None:
            arguments["x-max-length"] = max_length
        if queue_ttl is not None:
            arguments["x-message-ttl"] = queue_ttl
        self.dlq = self.declare("dlq", {})
        self.queue = self.declare("q", arguments)
        self.model = Model(max_priority, max_length, queue_ttl)

    @property
    def now(self) -> float:
        return self.clock.now

    def collect(self) -> None:
        """Move the sink's new deliveries into the log and the unacked map."""
        for tag, entry in self.sink.deliveries[self.seen :]:
            number = int(entry.message.body or b"")
            self.log.append((tag, number, entry.redelivered))
            self.unacked[number] = (entry, self.consumers.get(tag))
        self.seen = len(self.sink.deliveries)

    # steps

    @rule(
        priority=st.one_of(st.none(), st.integers(0, 5)),
        ttl=TTLS,
    )
    def publish(self, priority: int | None, ttl: int | None) -> None:
        self.numbers += 1
        self.queue.publish(build_message(self.numbers, priority, ttl))
        self.model.publish(self.numbers, priority, ttl, self.now)
        self.collect()

    @precondition(lambda self: len(self.consumers) < 3)
    @rule(data=st.data(), prefetch=st.integers(0, 3))
    def consume(self, data: st.DataObject, prefetch: int) -> None:
        taken = {c.priority for c in self.consumers.values()}
        priority = data.draw(st.sampled_from([p for p in (0, 1, 2) if p not in taken]))
        self.tags += 1
        tag = f"c{self.tags}"
        consumer = Consumer(
            tag, self.queue, self.sink, no_ack=False, exclusive=False,
            prefetch=prefetch, arguments={"x-priority": priority},
        )  # fmt: skip
        self.consumers[tag] = consumer
        self.queue.add_consumer(consumer)
        self.model.consume(tag, priority, prefetch, self.now)
        self.collect()

    @precondition(lambda self: bool(self.consumers))
    @rule(data=st.data())
    def cancel(self, data: st.DataObject) -> None:
        tag = data.draw(st.sampled_from(sorted(self.consumers)))
        self.queue.remove_consumer(self.consumers.pop(tag))
        self.model.cancel(tag)

    @rule(no_ack=st.booleans())
    def get(self, no_ack: bool) -> None:
        entry = self.queue.get(no_ack)
        number = self.model.get(no_ack, self.now)
        if entry is None:
            assert number is None
            return
        got = int(entry.message.body or b"")
        assert got == number
        self.log.append(("get", got, entry.redelivered))
        if not no_ack:
            self.unacked[got] = (entry, None)

    def _settle(self, data: st.DataObject) -> tuple[int, Entry, Consumer | None]:
        number = data.draw(st.sampled_from(sorted(self.unacked)))
        entry, consumer = self.unacked.pop(number)
        if consumer is not None:
            consumer.unacked -= 1
        return number, entry, consumer

    def _redispatch(self) -> None:
        # what the channel does after any settlement
        if self.queue.consumers:
            self.queue.dispatch()
        self.collect()

    @precondition(lambda self: bool(self.unacked))
    @rule(data=st.data())
    def ack(self, data: st.DataObject) -> None:
        number, entry, _ = self._settle(data)
        self.queue.ack(entry)
        self._redispatch()
        self.model.ack(number, self.now)

    @precondition(lambda self: bool(self.unacked))
    @rule(data=st.data())
    def nack_requeue(self, data: st.DataObject) -> None:
        number, entry, _ = self._settle(data)
        self.queue.requeue([entry])
        self._redispatch()
        self.model.requeue(number, self.now)

    @precondition(lambda self: bool(self.unacked))
    @rule(data=st.data())
    def reject_drop(self, data: st.DataObject) -> None:
        number, entry, _ = self._settle(data)
        self.queue.discard([entry])
        self._redispatch()
        self.model.reject(number, self.now)

    @rule(ms=st.sampled_from([1, 5, 10, 20, 25, 60]))
    def advance(self, ms: int) -> None:
        self.clock.advance(ms / 1000)
        self.model.advance(self.now)
        self.collect()

    # what must match after every step

    @invariant()
    def deliveries_match(self) -> None:
        if hasattr(self, "model"):
            assert self.log == self.model.delivered

    @invariant()
    def ready_messages_match(self) -> None:
        if hasattr(self, "model"):
            ready = [int(e.message.body or b"") for e in self.queue.ready]
            assert ready == [i.number for i in self.model.ready]
            assert self.queue.message_count == len(self.model.ready)

    @invariant()
    def unacked_match(self) -> None:
        if hasattr(self, "model"):
            assert self.queue.unacked == len(self.model.unacked)
            assert sorted(self.unacked) == sorted(self.model.unacked)

    @invariant()
    def dead_letters_match(self) -> None:
        if hasattr(self, "model"):
            dead = set()
            for entry in self.dlq.ready:
                headers = entry.message.headers or {}
                reason = headers["x-death"][0]["reason"]
                dead.add((int(entry.message.body or b""), reason))
            assert len(self.dlq.ready) == len(dead)
            assert dead == self.model.dead


QueueMatchesModel.TestCase.settings = settings(
    max_examples=100,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestQueueMatchesModel = QueueMatchesModel.TestCase
