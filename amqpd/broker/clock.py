"""Clocks and timers for the broker model.

The model never sleeps; it asks a scheduler to call it back. The broker uses
the running asyncio loop; unit tests use ``ManualScheduler`` and move time
by hand.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections.abc import Callable


class AsyncioScheduler:
    """Timers on the running asyncio (or uvloop) event loop."""

    def __init__(self) -> None:
        self.stopped = False

    def clock(self) -> float:
        return time.monotonic()

    def call_later(
        self, delay: float, callback: Callable[[], None]
    ) -> asyncio.TimerHandle:
        return asyncio.get_running_loop().call_later(delay, self._fire, callback)

    def _fire(self, callback: Callable[[], None]) -> None:
        if not self.stopped:
            callback()

    def stop(self) -> None:
        """Fire no more timers: the broker is shutting down, and a queue
        expiring messages now would write to a journal that is closing."""
        self.stopped = True


class _ManualTimer:
    __slots__ = ("callback", "cancelled")

    def __init__(self, callback: Callable[[], None]) -> None:
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class ManualScheduler:
    """A scheduler whose time moves only when ``advance`` is called."""

    def __init__(self) -> None:
        self.now = 0.0
        self._timers: list[tuple[float, int, _ManualTimer]] = []
        self._ids = itertools.count()

    def clock(self) -> float:
        return self.now

    def call_later(self, delay: float, callback: Callable[[], None]) -> _ManualTimer:
        timer = _ManualTimer(callback)
        heapq.heappush(self._timers, (self.now + delay, next(self._ids), timer))
        return timer

    def stop(self) -> None:
        """Drop every pending timer."""
        self._timers.clear()

    def advance(self, seconds: float) -> None:
        """Move time forward, firing every timer that falls due on the way."""
        end = self.now + seconds
        while self._timers and self._timers[0][0] <= end:
            due, _, timer = heapq.heappop(self._timers)
            self.now = max(self.now, due)
            if not timer.cancelled:
                timer.callback()
        self.now = end
