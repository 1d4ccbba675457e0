"""Resource alarms as clients see them: memory high watermark and disk free
limit.

While an alarm is on, a connection that publishes gets connection.blocked
(if it announced the capability) and the broker stops reading from it, so
its further publishes wait in the network; connections that only consume go
on draining the queues. When every alarm has cleared the connection gets
connection.unblocked and its waiting messages arrive, in order.

The broker stops reading once it has handled the read that carried the
publish (RabbitMQ stops right after the basic.publish method frame): frames
that came in the same read are handled, later ones wait. So each test first
sends a trigger publish to no queue, waits until the broker has paused the
connection, and only then publishes what it checks.

The brokers here check every 50 ms. A watermark above 1 is a number of
bytes, so 1000.0 is always exceeded; a disk free limit of 10**18 bytes is
never met. Tests change the thresholds on the broker's loop to clear them.
"""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pika
import pytest
from amqp_wire import RawClient
from pamqp import commands as spec
from pika.adapters.blocking_connection import BlockingChannel, BlockingConnection

from amqpd.testing import BrokerThread

CHECK = 0.05
NO_MEMORY = 1000.0  # bytes: below any process's RSS
HUGE_DISK = 10**18  # bytes free needed: more than any disk has


@pytest.fixture
def memory_alarm() -> Iterator[BrokerThread]:
    """A broker whose memory alarm is on from the start."""
    with BrokerThread(
        memory_high_watermark=NO_MEMORY, alarm_check_interval=CHECK
    ) as broker:
        yield broker


def connect(broker: BrokerThread) -> BlockingConnection:
    return pika.BlockingConnection(pika.URLParameters(broker.url))


def set_config(broker: BrokerThread, key: str, value: Any) -> None:
    assert broker.broker is not None
    broker.call(setattr, broker.broker.config, key, value)


def alarms(broker: BrokerThread) -> set[str]:
    assert broker.broker is not None
    node = broker.broker.node
    return set(broker.call(lambda: set(node.alarms)))


def paused_publishers(broker: BrokerThread) -> int:
    """Connections that have published and are not read from now."""
    assert broker.broker is not None
    node = broker.broker.node
    return int(broker.call(
        lambda: sum(1 for d in node.connections
                    if d.conn.has_published and d.paused)
    ))  # fmt: skip


def clear_alarms(broker: BrokerThread) -> None:
    set_config(broker, "memory_high_watermark", 0.9)
    set_config(broker, "disk_free_limit", 0)


def pump_until(
    conns: list[BlockingConnection], done: Callable[[], bool], timeout: float = 2.0
) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            pytest.fail("timed out")
        for conn in conns:
            conn.process_data_events(time_limit=0.005)


def settle(conns: list[BlockingConnection], seconds: float = 0.2) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for conn in conns:
            conn.process_data_events(time_limit=0.005)


class Publisher:
    """A pika connection that records blocked/unblocked notifications."""

    def __init__(self, broker: BrokerThread) -> None:
        self.conn = connect(broker)
        self.events: list[tuple[str, str]] = []
        self.conn.add_on_connection_blocked_callback(
            lambda _c, frame: self.events.append(("blocked", frame.method.reason))
        )
        self.conn.add_on_connection_unblocked_callback(
            lambda _c, _frame: self.events.append(("unblocked", ""))
        )
        self.ch = self.conn.channel()

    def publish(self, queue: str, *bodies: bytes) -> None:
        for body in bodies:
            self.ch.basic_publish("", queue, body)

    def trigger(self, broker: BrokerThread) -> None:
        """Publish to no queue until the broker holds this connection."""
        self.publish("no-such-queue", b"trigger")
        deadline = time.monotonic() + 2.0
        while not (self.events and paused_publishers(broker)):
            if time.monotonic() > deadline:
                pytest.fail(f"publisher not held: {self.events}")
            self.conn.process_data_events(time_limit=0.01)

    def close(self, broker: BrokerThread) -> None:
        """Close (alarms cleared first, or close-ok would never come)."""
        clear_alarms(broker)
        if self.conn.is_open:
            self.conn.close()


def consumer(
    conn: BlockingConnection, queue: str
) -> tuple[BlockingChannel, list[bytes]]:
    ch = conn.channel()
    ch.queue_declare(queue)
    got: list[bytes] = []
    ch.basic_consume(queue, lambda _c, _m, _p, body: got.append(body), auto_ack=True)
    return ch, got


def test_publisher_is_blocked_and_held_until_memory_alarm_clears(
    memory_alarm: BrokerThread,
) -> None:
    queue = f"alarm-{uuid.uuid4().hex[:8]}"
    reader = connect(memory_alarm)
    _, got = consumer(reader, queue)
    publisher = Publisher(memory_alarm)
    try:
        publisher.trigger(memory_alarm)
        assert publisher.events == [("blocked", "low on memory")]
        publisher.publish(queue, b"1", b"2", b"3")
        settle([publisher.conn, reader])
        assert got == []
        assert alarms(memory_alarm) == {"memory"}

        set_config(memory_alarm, "memory_high_watermark", 0.9)
        pump_until(
            [publisher.conn, reader],
            lambda: len(got) == 3 and len(publisher.events) == 2,
        )
        assert got == [b"1", b"2", b"3"]
        assert publisher.events == [("blocked", "low on memory"), ("unblocked", "")]
        assert alarms(memory_alarm) == set()
        assert paused_publishers(memory_alarm) == 0
    finally:
        publisher.close(memory_alarm)
        reader.close()


def test_consumers_drain_queues_while_publishers_are_blocked(
    amqpd_broker: BrokerThread,
) -> None:
    queue = f"alarm-{uuid.uuid4().hex[:8]}"
    publisher = Publisher(amqpd_broker)
    reader = connect(amqpd_broker)
    try:
        reader.channel().queue_declare(queue)
        publisher.publish(queue, *[str(i).encode() for i in range(5)])
        publisher.ch.queue_declare(queue, passive=True)  # all five are in
        set_config(amqpd_broker, "alarm_check_interval", CHECK)
        set_config(amqpd_broker, "memory_high_watermark", NO_MEMORY)
        # the next check (within the default 1 s interval) sets the alarm
        pump_until([publisher.conn], lambda: bool(publisher.events), timeout=3.0)
        publisher.trigger(amqpd_broker)
        assert publisher.events == [("blocked", "low on memory")]

        # a connection that never published is neither blocked nor paused
        _, got = consumer(reader, queue)
        pump_until([reader], lambda: len(got) == 5)
        assert got == [b"0", b"1", b"2", b"3", b"4"]
        publisher.publish(queue, b"late")
        settle([publisher.conn, reader])
        assert len(got) == 5

        set_config(amqpd_broker, "memory_high_watermark", 0.9)
        pump_until(
            [publisher.conn, reader],
            lambda: len(got) == 6 and len(publisher.events) == 2,
        )
        assert got[-1] == b"late"
        assert publisher.events[-1] == ("unblocked", "")
    finally:
        publisher.close(amqpd_broker)
        reader.close()


def test_disk_alarm_blocks_publishers_until_free_space_suffices() -> None:
    with BrokerThread(disk_free_limit=HUGE_DISK, alarm_check_interval=CHECK) as broker:
        queue = f"alarm-{uuid.uuid4().hex[:8]}"
        reader = connect(broker)
        _, got = consumer(reader, queue)
        publisher = Publisher(broker)
        try:
            publisher.trigger(broker)
            assert publisher.events == [("blocked", "low on disk")]
            assert alarms(broker) == {"disk"}
            publisher.publish(queue, b"1")
            settle([publisher.conn, reader])
            assert got == []

            set_config(broker, "disk_free_limit", 0)
            pump_until(
                [publisher.conn, reader],
                lambda: len(got) == 1 and len(publisher.events) == 2,
            )
            assert got == [b"1"]
            assert publisher.events[-1] == ("unblocked", "")
        finally:
            publisher.close(broker)
            reader.close()


def test_unblocked_only_when_every_alarm_has_cleared() -> None:
    with BrokerThread(
        disk_free_limit=HUGE_DISK, memory_high_watermark=NO_MEMORY,
        alarm_check_interval=CHECK,
    ) as broker:  # fmt: skip
        queue = f"alarm-{uuid.uuid4().hex[:8]}"
        reader = connect(broker)
        _, got = consumer(reader, queue)
        publisher = Publisher(broker)
        try:
            publisher.trigger(broker)
            assert publisher.events == [("blocked", "low on disk and memory")]

            set_config(broker, "disk_free_limit", 0)
            deadline = time.monotonic() + 2.0
            while alarms(broker) != {"memory"} and time.monotonic() < deadline:
                time.sleep(0.01)
            assert alarms(broker) == {"memory"}
            publisher.publish(queue, b"1")
            settle([publisher.conn, reader])
            assert got == []
            assert publisher.events == [("blocked", "low on disk and memory")]

            set_config(broker, "memory_high_watermark", 0.9)
            pump_until(
                [publisher.conn, reader],
                lambda: len(got) == 1 and len(publisher.events) == 2,
            )
            assert publisher.events[-1] == ("unblocked", "")
        finally:
            publisher.close(broker)
            reader.close()


def test_client_without_blocked_capability_is_held_without_notification(
    memory_alarm: BrokerThread,
) -> None:
    queue = f"alarm-{uuid.uuid4().hex[:8]}"
    reader = connect(memory_alarm)
    _, got = consumer(reader, queue)
    with RawClient(memory_alarm.port, timeout=0.3) as raw:
        raw.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        raw.start()
        raw.login(capabilities={})
        raw.tune()
        raw.send_method(0, spec.Connection.Open(virtual_host="/"))
        raw.expect(spec.Connection.OpenOk, 0)
        raw.open_channel(1)
        # one write, one read: the whole first message is handled before
        # the broker stops reading
        raw.publish(1, "", queue, b"1")
        pump_until([reader], lambda: got == [b"1"] and paused_publishers(memory_alarm))
        raw.publish(1, "", queue, b"2")
        settle([reader])
        assert got == [b"1"]
        with pytest.raises(TimeoutError):
            raw.recv_frame()  # no connection.blocked for this client

        set_config(memory_alarm, "memory_high_watermark", 0.9)
        pump_until([reader], lambda: len(got) == 2)
        assert got == [b"1", b"2"]
    reader.close()


def test_connection_that_only_consumes_is_not_blocked(
    memory_alarm: BrokerThread,
) -> None:
    queue = f"alarm-{uuid.uuid4().hex[:8]}"
    watcher = Publisher(memory_alarm)  # records events, never publishes
    try:
        ch, got = consumer(watcher.conn, queue)
        declared = ch.queue_declare(queue, passive=True).method
        assert declared.consumer_count == 1
        settle([watcher.conn], 0.15)
        assert watcher.events == []
        assert got == []
    finally:
        watcher.close(memory_alarm)
