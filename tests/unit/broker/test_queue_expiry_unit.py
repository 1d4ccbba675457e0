"""Message TTL and queue expiry in amqpd/broker/queue.py, on a manual clock.

Time moves only when a test calls ``advance``, so deadlines are checked to
the millisecond without sleeping. The scheduler below also counts the timers
a queue keeps and how often it reads the clock.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from pamqp import commands as spec
from pamqp.header import ContentHeader

from amqpd.broker.clock import ManualScheduler
from amqpd.broker.consumer import Consumer
from amqpd.broker.message import Message
from amqpd.broker.node import Node
from amqpd.broker.queue import Entry, Queue
from amqpd.broker.vhost import VHost
from amqpd.codec import properties
from amqpd.codec.fastpath import shortstr
from amqpd.config import Config


class CountingScheduler(ManualScheduler):
    """A manual scheduler that knows its pending timers and clock reads."""

    def __init__(self) -> None:
        super().__init__()
        self.pending: set[Any] = set()
        self.clock_reads = 0
        self.fired = 0

    def clock(self) -> float:
        self.clock_reads += 1
        return super().clock()

    def call_later(self, delay: float, callback: Callable[[], None]) -> Any:
        def fire() -> None:
            self.pending.discard(timer)
            self.fired += 1
            callback()

        timer = super().call_later(delay, fire)
        self.pending.add(timer)
        return timer

    def live_timers(self) -> int:
        return sum(1 for timer in self.pending if not timer.cancelled)


class Sink:
    """The channel side of a consumer: records what it was sent."""

    blocked = False

    def __init__(self) -> None:
        self.delivered: list[bytes] = []

    def has_capacity(self) -> bool:
        return True

    def deliver(self, consumer: Consumer, entry: Entry, queue: Queue) -> None:
        consumer.unacked += 0 if consumer.no_ack else 1
        self.delivered.append(entry.message.body)

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
        pass


@pytest.fixture
def clock() -> CountingScheduler:
    return CountingScheduler()


@pytest.fixture
def vhost(clock: CountingScheduler) -> VHost:
    node = Node(Config(), scheduler=clock)
    node.ensure_defaults()
    return node.vhosts["/"]


def declare(vhost: VHost, name: str, **arguments: Any) -> Queue:
    return vhost.declare_queue(
        name, passive=False, durable=False, exclusive=False, auto_delete=False,
        arguments=arguments, owner=None,
    )  # fmt: skip


def with_dlq(vhost: VHost, name: str, **arguments: Any) -> tuple[Queue, Queue]:
    """A queue dead-lettering through the default exchange to NAME-dlq."""
    dlq = declare(vhost, f"{name}-dlq")
    queue = declare(
        vhost, name, **arguments, **{
            "x-dead-letter-exchange": "", "x-dead-letter-routing-key": dlq.name,
        },
    )  # fmt: skip
    return queue, dlq


def message(
    queue: Queue,
    body: bytes,
    expiration: str | None = None,
    priority: int | None = None,
) -> Message:
    props = spec.Basic.Properties(expiration=expiration, priority=priority)
    header = ContentHeader(0, len(body), props).marshal()
    msg = Message(
        "", queue.name, shortstr("") + shortstr(queue.name), header, body,
        properties.scan(header),
    )  # fmt: skip
    if expiration is not None:
        msg.ttl = int(expiration)
    return msg


def publish(queue: Queue, body: bytes, **props: Any) -> None:
    assert queue.publish(message(queue, body, **props))


def bodies(queue: Queue) -> list[bytes]:
    return [entry.message.body for entry in queue.ready]


def reasons(dlq: Queue) -> list[tuple[bytes, str]]:
    """(body, reason of the latest death) of each dead-lettered message."""
    out = []
    for entry in dlq.ready:
        headers = entry.message.headers
        assert headers is not None
        out.append((entry.message.body, headers["x-death"][0]["reason"]))
    return out


def consume(queue: Queue, prefetch: int = 0) -> tuple[Consumer, Sink]:
    sink = Sink()
    consumer = Consumer(
        "ctag", queue, sink, no_ack=False, exclusive=False, prefetch=prefetch,
        arguments={},
    )  # fmt: skip
    queue.add_consumer(consumer)
    return consumer, sink


# message TTL


def test_plain_queue_never_reads_the_clock_or_sets_timers(
    vhost: VHost, clock: CountingScheduler
) -> None:
    queue = declare(vhost, "plain")
    clock.clock_reads = 0
    for i in range(20):
        publish(queue, b"%d" % i)
    consume(queue)
    clock.advance(60.0)

    assert clock.clock_reads == 0
    assert clock.fired == 0
    assert not clock.pending


def test_many_messages_with_ttl_share_one_timer(
    vhost: VHost, clock: CountingScheduler
) -> None:
    queue = declare(vhost, "q", **{"x-message-ttl": 1000})
    for i in range(50):
        publish(queue, b"%d" % i)
        clock.advance(0.001)
    # per-message TTLs, each earlier than the last: the one timer moves
    for ttl in range(900, 400, -100):
        publish(queue, b"short", expiration=str(ttl))

    assert clock.live_timers() == 1
    clock.advance(0.4)
    assert len(queue.ready) == 55
    assert clock.live_timers() == 1
    clock.advance(0.52)  # past the 500..900 ms ones, before the first 1000 ms one
    assert len(queue.ready) == 50
    assert clock.live_timers() == 1


def test_message_expires_at_its_deadline_to_the_millisecond(
    vhost: VHost, clock: CountingScheduler
) -> None:
    queue, dlq = with_dlq(vhost, "q", **{"x-message-ttl": 100})
    publish(queue, b"m")

    clock.advance(0.099)
    assert bodies(queue) == [b"m"]
    clock.advance(0.001)
    assert bodies(queue) == []
    assert reasons(dlq) == [(b"m", "expired")]
    assert clock.live_timers() == 0


def test_expiry_reaches_messages_behind_the_head(
    vhost: VHost, clock: CountingScheduler
) -> None:
    queue, dlq = with_dlq(vhost, "q")
    publish(queue, b"head", expiration="10000")
    publish(queue, b"short", expiration="100")
    publish(queue, b"forever")

    clock.advance(0.1)
    assert bodies(queue) == [b"head", b"forever"]
    assert reasons(dlq) == [(b"short", "expired")]
    # the timer is set again, for the head's deadline
    assert clock.live_timers() == 1
    clock.advance(9.89)
    assert bodies(queue) == [b"head", b"forever"]
    clock.advance(0.02)
    assert bodies(queue) == [b"forever"]
    assert reasons(dlq) == [(b"short", "expired"), (b"head", "expired")]


def test_lower_of_queue_and_message_ttl_wins(
    vhost: VHost, clock: CountingScheduler
) -> None:
    queue, dlq = with_dlq(vhost, "q", **{"x-message-ttl": 200})
    publish(queue, b"queue-ttl", expiration="5000")
    publish(queue, b"own-ttl", expiration="50")

    clock.advance(0.05)
    assert bodies(queue) == [b"queue-ttl"]
    clock.advance(0.15)
    assert bodies(queue) == []
    assert reasons(dlq) == [(b"own-ttl", "expired"), (b"queue-ttl", "expired")]


def test_shorter_ttl_published_later_moves_the_timer_earlier(
    vhost: VHost, clock: CountingScheduler
) -> None:
    queue, dlq = with_dlq(vhost, "q")
    publish(queue, b"long", expiration="1000")
    clock.advance(0.1)
    publish(queue, b"short", expiration="50")

    clock.advance(0.05)
    assert bodies(queue) == [b"long"]
    assert reasons(dlq) == [(b"short", "expired")]
    assert clock.live_timers() == 1


def test_unacked_message_does_not_expire(
    vhost: VHost, clock: CountingScheduler
) -> None:
    queue, dlq = with_dlq(vhost, "q", **{"x-message-ttl": 100})
    publish(queue, b"m")
    entry = queue.get(no_ack=False)
    assert entry is not None

    clock.advance(1.0)
    assert queue.unacked == 1
    assert bodies(dlq) == []
    queue.ack(entry)
    assert queue.unacked == 0
    assert bodies(dlq) == []


def test_requeued_message_keeps_its_original_deadline(
    vhost: VHost, clock: CountingScheduler
) -> None:
    queue, dlq = with_dlq(vhost, "q", **{"x-message-ttl": 100})
    publish(queue, b"m")
    entry = queue.get(no_ack=False)
    assert entry is not None
    clock.advance(0.05)
    queue.requeue([entry])

    assert bodies(queue) == [b"m"]
    assert clock.live_timers() == 1
    clock.advance(0.049)
    assert bodies(queue) == [b"m"]
    clock.advance(0.001)
    assert bodies(queue) == []
    assert reasons(dlq) == [(b"m", "expired")]


def test_message_requeued_after_its_deadline_expires_at_once(
    vhost: VHost, clock: CountingScheduler
) -> None:
    queue, dlq = with_dlq(vhost, "q", **{"x-message-ttl": 100})
    publish(queue, b"m")
    entry = queue.get(no_ack=False)
    assert entry is not None
    clock.advance(0.5)
    assert clock.live_timers() == 0  # nothing ready, nothing to wait for

    queue.requeue([entry])
    assert clock.live_timers() == 1
    clock.advance(0.0)
    assert bodies(queue) == []
    assert reasons(dlq) == [(b"m", "expired")]


def test_requeued_expired_message_is_not_given_to_a_consumer(
    vhost: VHost, clock: CountingScheduler
) -> None:
    queue, dlq = with_dlq(vhost, "q", **{"x-message-ttl": 100})
    publish(queue, b"old")
    entry = queue.get(no_ack=False)
    assert entry is not None
    _consumer, sink = consume(queue)
    clock.advance(0.2)

    queue.requeue([entry])
    assert sink.delivered == []
    assert reasons(dlq) == [(b"old", "expired")]


def test_ttl_zero_without_consumer_dead_letters_at_once(
    vhost: VHost, clock: CountingScheduler
) -> None:
    queue, dlq = with_dlq(vhost, "q", **{"x-message-ttl": 0})
    publish(queue, b"m")

    assert bodies(queue) == []
    assert reasons(dlq) == [(b"m", "expired")]
    assert clock.live_timers() == 0


def test_ttl_zero_with_waiting_consumer_is_delivered(
    vhost: VHost, clock: CountingScheduler
) -> None:
    queue, dlq = with_dlq(vhost, "q", **{"x-message-ttl": 0})
    _consumer, sink = consume(queue, prefetch=1)
    publish(queue, b"first")
    publish(queue, b"second")  # the consumer is full: dropped

    assert sink.delivered == [b"first"]
    assert reasons(dlq) == [(b"second", "expired")]


def test_priority_queue_expires_behind_the_head(
    vhost: VHost, clock: CountingScheduler
) -> None:
    queue, dlq = with_dlq(vhost, "q", **{"x-max-priority": 5})
    publish(queue, b"p5", priority=5, expiration="10000")
    publish(queue, b"p1", priority=1, expiration="50")
    publish(queue, b"p3", priority=3)

    clock.advance(0.05)
    assert bodies(queue) == [b"p5", b"p3"]
    assert reasons(dlq) == [(b"p1", "expired")]


def test_purged_and_deleted_queues_leave_no_timers(
    vhost: VHost, clock: CountingScheduler
) -> None:
    queue, dlq = with_dlq(vhost, "q", **{"x-message-ttl": 100, "x-expires": 1000})
    publish(queue, b"m")
    queue.purge()
    clock.advance(0.2)
    assert bodies(dlq) == []

    publish(queue, b"m")
    vhost.delete_queue("q")
    assert clock.live_timers() == 0
    clock.advance(2.0)
    assert bodies(dlq) == []


# queue expiry (x-expires)


def test_unused_queue_expires_after_the_interval(
    vhost: VHost, clock: CountingScheduler
) -> None:
    declare(vhost, "q", **{"x-expires": 200})
    clock.advance(0.199)
    assert "q" in vhost.queues
    clock.advance(0.001)
    assert "q" not in vhost.queues
    assert clock.live_timers() == 0


def test_publishing_does_not_postpone_queue_expiry(
    vhost: VHost, clock: CountingScheduler
) -> None:
    queue = declare(vhost, "q", **{"x-expires": 200})
    for _ in range(3):
        clock.advance(0.06)
        publish(queue, b"m")
    clock.advance(0.03)
    assert "q" not in vhost.queues


@pytest.mark.parametrize("use", ["basic.get", "redeclare", "passive declare"])
def test_use_postpones_queue_expiry(
    vhost: VHost, clock: CountingScheduler, use: str
) -> None:
    queue = declare(vhost, "q", **{"x-expires": 200})
    clock.advance(0.15)
    if use == "basic.get":
        assert queue.get(no_ack=True) is None
    elif use == "redeclare":
        assert declare(vhost, "q", **{"x-expires": 200}) is queue
    else:
        assert vhost.declare_queue(
            "q", passive=True, durable=False, exclusive=False, auto_delete=False,
            arguments={}, owner=None,
        ) is queue  # fmt: skip

    clock.advance(0.199)
    assert "q" in vhost.queues
    clock.advance(0.001)
    assert "q" not in vhost.queues


def test_consumer_keeps_queue_and_expiry_restarts_when_last_leaves(
    vhost: VHost, clock: CountingScheduler
) -> None:
    queue = declare(vhost, "q", **{"x-expires": 200})
    first, _ = consume(queue)
    second, _ = consume(queue)
    fired = clock.fired
    clock.advance(5.0)
    assert "q" in vhost.queues
    # no timer runs while consumers are attached (and none spins)
    assert clock.fired - fired <= 1
    assert clock.live_timers() == 0

    queue.remove_consumer(first)
    clock.advance(1.0)
    assert "q" in vhost.queues

    queue.remove_consumer(second)
    assert clock.live_timers() == 1
    clock.advance(0.199)
    assert "q" in vhost.queues
    clock.advance(0.001)
    assert "q" not in vhost.queues


def test_expired_queue_does_not_dead_letter_its_messages(
    vhost: VHost, clock: CountingScheduler
) -> None:
    queue, dlq = with_dlq(vhost, "q", **{"x-expires": 100})
    publish(queue, b"m")
    clock.advance(0.1)
    assert "q" not in vhost.queues
    assert bodies(dlq) == []
