"""The ready messages of a queue, in delivery order.

``FifoReady`` is a deque. ``PriorityReady`` (queues with x-max-priority)
keeps one deque per priority and serves the highest non-empty one first,
FIFO within a priority. Both put a requeued message back at its original
place, found by its per-queue sequence number.
"""

from __future__ import annotations

import bisect
from collections import deque
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from amqpd.broker.queue import Entry


def _seq(entry: Entry) -> int:
    return entry.seq


def _insert(items: deque[Entry], entry: Entry) -> None:
    if not items or entry.seq < items[0].seq:
        items.appendleft(entry)
    elif entry.seq > items[-1].seq:
        items.append(entry)
    else:
        items.insert(bisect.bisect(items, entry.seq, key=_seq), entry)


class FifoReady:
    """Ready messages of a queue without priorities."""

    __slots__ = ("items",)

    def __init__(self) -> None:
        self.items: deque[Entry] = deque()

    def __len__(self) -> int:
        return len(self.items)

    def __bool__(self) -> bool:
        return bool(self.items)

    def __iter__(self) -> Iterator[Entry]:
        return iter(self.items)

    def append(self, entry: Entry) -> None:
        self.items.append(entry)

    def popleft(self) -> Entry:
        return self.items.popleft()

    def head(self) -> Entry:
        return self.items[0]

    def put_back(self, entry: Entry) -> None:
        _insert(self.items, entry)

    def clear(self) -> None:
        self.items.clear()

    def remove_if(self, doomed: Callable[[Entry], bool]) -> list[Entry]:
        """Remove and return every entry for which ``doomed`` is true."""
        gone = [e for e in self.items if doomed(e)]
        if gone:
            self.items = deque(e for e in self.items if not doomed(e))
        return gone


class PriorityReady:
    """Ready messages of a priority queue: highest priority first."""

    __slots__ = ("count", "levels")

    def __init__(self, max_priority: int) -> None:
        self.levels: list[deque[Entry]] = [deque() for _ in range(max_priority + 1)]
        self.count = 0

    def __len__(self) -> int:
        return self.count

    def __bool__(self) -> bool:
        return self.count > 0

    def __iter__(self) -> Iterator[Entry]:
        for level in reversed(self.levels):
            yield from level

    def append(self, entry: Entry) -> None:
        self.levels[entry.priority].append(entry)
        self.count += 1

    def _top(self) -> deque[Entry]:
        for level in reversed(self.levels):
            if level:
                return level
        raise IndexError("no ready messages")

    def popleft(self) -> Entry:
        entry = self._top().popleft()
        self.count -= 1
        return entry

    def head(self) -> Entry:
        return self._top()[0]

    def put_back(self, entry: Entry) -> None:
        _insert(self.levels[entry.priority], entry)
        self.count += 1

    def clear(self) -> None:
        for level in self.levels:
            level.clear()
        self.count = 0

    def remove_if(self, doomed: Callable[[Entry], bool]) -> list[Entry]:
        gone: list[Entry] = []
        for i, level in enumerate(self.levels):
            hit = [e for e in level if doomed(e)]
            if hit:
                gone += hit
                self.levels[i] = deque(e for e in level if not doomed(e))
        self.count -= len(gone)
        return gone


Ready = FifoReady | PriorityReady
