"""Garbage-collector settings for a broker process.

Queued messages are long-lived objects. With CPython's default settings a
full collection runs every time the count of long-lived objects grows by a
quarter, so filling a queue pays for traversing every queued message again
and again: about 30% of the publish path with a million messages queued.
The broker process instead collects the young generations often, the old
one on a timer. Only the ``amqpd`` command applies this; an application
that embeds the broker keeps its own settings.
"""

from __future__ import annotations

import gc

import anyio

FULL_COLLECTION_INTERVAL = 300.0  # seconds


def apply() -> None:
    """Young generations as usual, the oldest never automatically."""
    gc.freeze()  # what start-up created lives as long as the process
    gc.set_threshold(5_000, 20, 1_000_000_000)


async def collect_periodically(interval: float = FULL_COLLECTION_INTERVAL) -> None:
    """A full collection now and then frees cycles that reached the old
    generation (connections that lived long enough, for instance)."""
    while True:
        await anyio.sleep(interval)
        gc.collect()
