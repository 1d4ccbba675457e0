"""Publisher-side bookkeeping of basic.ack and basic.nack from the broker.

Delivery tags of a confirm-mode channel count published messages from 1.
The broker may confirm one tag or every tag up to one (multiple), in any
order, so the tracker keeps a low-water mark (every tag at or below it is
settled) plus the set of settled tags above it. In the usual case, acks
arriving in order, the set stays empty and each ack is O(1).
"""

from __future__ import annotations

from array import array
from collections.abc import Callable

from amqpd.bench import frames

_unpack_head = frames.FRAME_HEAD.unpack_from
_unpack_key = frames.METHOD_ID.unpack_from
_unpack_tag = frames.U64.unpack_from


class ConfirmTracker:
    """Counts acked and nacked tags; optionally times each confirm."""

    def __init__(self, *, timed: bool) -> None:
        self.low = 0
        self.above: set[int] = set()
        self.acked = 0
        self.nacked = 0
        self.returned = 0
        self.timed = timed
        # send time of tag t is sent_ns[t - 1]; confirm latency in ns
        self.sent_ns = array("q")
        self.latency_ns = array("q")
        self.on_other: Callable[[int, int, bytes], bool] | None = None
        self._rest = b""

    @property
    def settled(self) -> int:
        """How many tags were acked or nacked."""
        return self.acked + self.nacked

    def settle(self, tag: int, *, multiple: bool, ack: bool, now_ns: int) -> None:
        """Record one basic.ack or basic.nack."""
        if tag <= self.low:
            return
        if multiple:
            above = self.above
            fresh = [t for t in range(self.low + 1, tag + 1) if t not in above]
            if above:
                self.above = {t for t in above if t > tag}
            self.low = tag
        else:
            if tag in self.above:
                return
            self.above.add(tag)
            fresh = [tag]
            while self.low + 1 in self.above:
                self.low += 1
                self.above.discard(self.low)
        if ack:
            self.acked += len(fresh)
        else:
            self.nacked += len(fresh)
        if self.timed:
            sent = self.sent_ns
            self.latency_ns.extend(now_ns - sent[t - 1] for t in fresh)

    def feed(self, data: bytes, now_ns: int) -> None:
        """Parse every whole frame in ``data`` (after any leftover)."""
        if self._rest:
            data = self._rest + data
        pos = 0
        end_all = len(data)
        while pos + 7 <= end_all:
            kind, channel, size = _unpack_head(data, pos)
            end = pos + 8 + size
            if end > end_all:
                break
            if kind == frames.FRAME_METHOD:
                key = _unpack_key(data, pos + 7)[0]
                if key == frames.BASIC_ACK or key == frames.BASIC_NACK:
                    tag = _unpack_tag(data, pos + 11)[0]
                    multiple = bool(data[pos + 19] & 1)
                    ack = key == frames.BASIC_ACK
                    self.settle(tag, multiple=multiple, ack=ack, now_ns=now_ns)
                elif key == frames.BASIC_RETURN:
                    self.returned += 1
                elif self.on_other is not None:
                    self.on_other(channel, key, data[pos + 7 : end - 1])
            pos = end
        self._rest = data[pos:]
