"""Readings from /proc: broker CPU and memory, machine description, load.

CPU time is utime + stime of the broker process from /proc/PID/stat, in
clock ticks; memory is VmRSS from /proc/PID/status. Linux only, like the
rest of the bench's measurements.
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

_TICK = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class ProcSample:
    """CPU seconds used so far and resident memory, at a monotonic time."""

    cpu_s: float
    rss_bytes: int
    at: float


def sample(pid: int) -> ProcSample:
    """Read one process's CPU time and RSS."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    # comm (field 2) may hold spaces and parentheses; fields resume after ")"
    fields = stat[stat.rindex(")") + 2 :].split()
    # utime and stime are fields 14 and 15 of the full line
    ticks = int(fields[11]) + int(fields[12])
    return ProcSample(ticks / _TICK, rss_bytes(pid), time.monotonic())


def rss_bytes(pid: int) -> int:
    """VmRSS of a process, in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise ValueError(f"no VmRSS for process {pid}")


def cpu_percent(before: ProcSample, after: ProcSample) -> float:
    """Average CPU use between two samples, in percent of one core."""
    wall = after.at - before.at
    return 100.0 * (after.cpu_s - before.cpu_s) / wall if wall > 0 else 0.0


def wait_quiet(
    pids: Iterable[int], *, below_pct: float, window: float, limit: float
) -> bool:
    """Wait until every process used under ``below_pct`` of a core in a window.

    A broker may still be deleting the last run's queues, compacting its
    store or collecting garbage when the bench moves on; measuring the next
    run (on it or on another broker) then would charge that work to the
    wrong run. Returns False when ``limit`` seconds passed without a quiet
    window. A process that is gone counts as quiet.
    """
    watched = list(pids)
    give_up = time.monotonic() + limit
    while True:
        before = _samples(watched)
        time.sleep(window)
        after = _samples(watched)
        busy = [
            pid
            for pid, first in before.items()
            if pid in after and cpu_percent(first, after[pid]) >= below_pct
        ]
        if not busy:
            return True
        if time.monotonic() >= give_up:
            return False


def _samples(pids: Iterable[int]) -> dict[int, ProcSample]:
    taken: dict[int, ProcSample] = {}
    for pid in pids:
        try:
            taken[pid] = sample(pid)
        except (OSError, ValueError):
            continue
    return taken


def load_average() -> list[float]:
    """The 1, 5 and 15 minute load averages."""
    return [round(value, 2) for value in os.getloadavg()]


def machine() -> dict[str, object]:
    """Core count, CPU model, memory, kernel and Python of this machine."""
    model = "unknown"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem_kib = 0
    meminfo = Path("/proc/meminfo")
    if meminfo.exists():
        first = meminfo.read_text().splitlines()[0]
        mem_kib = int(first.split()[1])
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "mem_total_gib": round(mem_kib / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
    }
