"""Resource alarms: memory high watermark and disk free limit.

While an alarm is on, connections that publish get connection.blocked and
are not read from until every alarm clears (connection.unblocked);
consumers on other connections keep draining, as in RabbitMQ.
"""

from __future__ import annotations

import logging
import os
import resource
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import anyio

if TYPE_CHECKING:
    from amqpd.broker.node import Node

log = logging.getLogger("amqpd.alarm")

MEMORY, DISK = "memory", "disk"


def process_rss() -> int:
    """Resident set size of this process in bytes."""
    try:
        with open("/proc/self/statm", "rb") as fh:
            pages = int(fh.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        # no /proc, or no file descriptor left: the peak is the best we have
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def total_memory() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def memory_limit(watermark: float) -> int:
    """The watermark in bytes: a fraction of RAM when <= 1, else bytes."""
    return int(watermark * total_memory()) if watermark <= 1 else int(watermark)


class AlarmMonitor:
    """Checks memory and disk every ``alarm_check_interval`` seconds."""

    def __init__(self, node: Node, data_dir: Path) -> None:
        self.node = node
        self.data_dir = data_dir
        self.cleared = anyio.Event()
        self.cleared.set()

    def check(self) -> None:
        config = self.node.config
        rss = process_rss()
        self._set(MEMORY, rss > memory_limit(config.memory_high_watermark),
                  f"process RSS {rss} bytes")  # fmt: skip
        try:
            free = shutil.disk_usage(self.data_dir).free
        except OSError:
            return
        self._set(DISK, free < config.disk_free_limit, f"{free} bytes free")

    def _set(self, kind: str, on: bool, detail: str) -> None:
        alarms = self.node.alarms
        if on == (kind in alarms):
            return
        if on:
            log.warning("%s alarm set: %s", kind, detail)
            alarms.add(kind)
            if self.cleared.is_set():
                self.cleared = anyio.Event()
        else:
            log.warning("%s alarm cleared: %s", kind, detail)
            alarms.discard(kind)
        reason = f"low on {' and '.join(sorted(alarms))}" if alarms else ""
        self.node.alarm_changed(reason)
        if not alarms:
            self.cleared.set()

    async def run(self) -> None:
        while True:
            try:
                self.check()
            except Exception:  # a failed check must not stop the broker
                log.exception("resource check failed")
            await anyio.sleep(self.node.config.alarm_check_interval)
