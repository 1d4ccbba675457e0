"""Consumers and the channel-side interface a queue delivers through."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from amqpd.broker.queue import Entry, Queue


UNLIMITED = 1 << 30


class DeliverySink(Protocol):
    """What a queue needs from the channel a consumer lives on."""

    @property
    def blocked(self) -> bool:
        """True while deliveries to this channel must pause (flow, buffer)."""

    def has_capacity(self) -> bool:
        """False while a channel-wide (global) prefetch limit is reached."""

    def room(self) -> int:
        """Deliveries the channel-wide prefetch still allows."""

    def output_room(self) -> int:
        """Bytes the connection's output buffer takes before it is full."""

    def deliver_batch(
        self, consumer: Consumer, entries: list[Entry], queue: Queue
    ) -> None:
        """deliver() for several messages, as one write."""

    def deliver(self, consumer: Consumer, entry: Entry, queue: Queue) -> None:
        """Send one message to the consumer and track it until settled."""

    def cancel_by_server(self, consumer: Consumer) -> None:
        """The queue went away: tell the client (consumer_cancel_notify)."""


class Consumer:
    """One basic.consume subscription on a queue."""

    __slots__ = (
        "arguments", "channel", "ctag", "exclusive", "no_ack", "prefetch",
        "priority", "queue", "tag", "unacked",
    )  # fmt: skip

    def __init__(
        self,
        tag: str,
        queue: Queue,
        channel: DeliverySink,
        *,
        no_ack: bool,
        exclusive: bool,
        prefetch: int,
        arguments: dict[str, Any],
    ) -> None:
        self.tag = tag
        raw = tag.encode()
        self.ctag = bytes((len(raw),)) + raw
        self.queue = queue
        self.channel = channel
        self.no_ack = no_ack
        self.exclusive = exclusive
        self.prefetch = prefetch
        self.unacked = 0
        self.arguments = arguments
        prio = arguments.get("x-priority", 0)
        self.priority = (
            prio if isinstance(prio, int) and not isinstance(prio, bool) else 0
        )

    def can_take(self) -> bool:
        """True when this consumer may receive one more message now."""
        if self.prefetch and self.unacked >= self.prefetch:
            return False
        channel = self.channel
        return not channel.blocked and channel.has_capacity()

    def room(self) -> int:
        """How many messages this consumer may receive now (a large number
        when nothing limits it)."""
        channel = self.channel
        if channel.blocked:
            return 0
        room = self.prefetch - self.unacked if self.prefetch else UNLIMITED
        return max(0, min(room, channel.room()))

    def __repr__(self) -> str:
        return f"<Consumer {self.tag!r} on {self.queue.name!r}>"
