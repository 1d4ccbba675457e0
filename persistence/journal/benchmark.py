"""Measure journal appends per second with batch fsync on this machine.

    python -m amqpd.persistence.journal.benchmark [--dir DIR] [--messages N]

Scenarios, each bounded by a message count and a time limit:

- batched: one producer publishes (MESSAGE + ENQUEUE) and awaits commit
  every ``--batch`` records, for 16-byte and 1 KiB bodies;
- pipelined: the same, but it waits for the batch before the last, so
  encoding overlaps with the fsync of the previous batch;
- confirms: many producers each publish one message and wait for its
  confirm, so batches form on their own (the publisher-confirm pattern).

Not a test: numbers depend on the disk and on what else the machine runs.
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import anyio

from .disk import DiskJournal
from .records import EnqueueRecord, MessageRecord

HEADER = b"\x00\x3c\x00\x00\x00\x00\x00\x00\x00\x10\x80\x00\x02"


@dataclass(frozen=True)
class Result:
    name: str
    messages: int
    records: int
    seconds: float
    batches: int
    fsyncs: int
    cpu: float = 0.0

    def line(self) -> str:
        per_batch = self.records / max(self.batches, 1)
        return (
            f"{self.name:<28} {self.messages / self.seconds:>8,.0f} msg/s "
            f"{self.records / self.seconds:>8,.0f} records/s "
            f"{per_batch:>5.0f} records/batch {self.fsyncs:>5} fsyncs "
            f"cpu {self.cpu / self.seconds:>4.0%} of wall"
        )


async def batched(
    directory: Path, body_size: int, limit: int, batch: int, seconds: float
) -> Result:
    """One producer; a commit (write + fsync) every ``batch`` records."""
    journal = DiskJournal(directory)
    journal.recover()
    body = b"x" * body_size
    sent = 0
    start = time.perf_counter()
    async with journal:
        while sent < limit and time.perf_counter() - start < seconds:
            for _ in range(batch // 2):
                sent += 1
                journal.append(MessageRecord(sent, "ex", "rk", HEADER, body))
                journal.append(EnqueueRecord("q", sent, sent))
            await journal.commit()
        elapsed = time.perf_counter() - start
        stats = journal.statistics()
    name = f"batched {body_size}B, {batch}/commit"
    return Result(name, sent, sent * 2, elapsed, stats.batches, stats.fsyncs)


async def pipelined(
    directory: Path, body_size: int, limit: int, batch: int, seconds: float
) -> Result:
    """One producer that keeps appending while the previous batch is synced.

    It waits only for the batch before the last, so encoding in the event
    loop overlaps with write and fsync on the worker thread, as it does in a
    broker with many connections.
    """
    journal = DiskJournal(directory)
    journal.recover()
    body = b"x" * body_size
    sent = 0
    previous = 0
    start = time.perf_counter()
    async with journal:
        while sent < limit and time.perf_counter() - start < seconds:
            for _ in range(batch // 2):
                sent += 1
                journal.append(MessageRecord(sent, "ex", "rk", HEADER, body))
                journal.append(EnqueueRecord("q", sent, sent))
            await journal.commit(previous)
            previous = journal.appended_lsn
        await journal.commit()
        elapsed = time.perf_counter() - start
        stats = journal.statistics()
    name = f"pipelined {body_size}B, {batch}/commit"
    return Result(name, sent, sent * 2, elapsed, stats.batches, stats.fsyncs)


async def confirms(
    directory: Path, body_size: int, limit: int, producers: int, seconds: float
) -> Result:
    """Producers that each wait for their message's confirm before the next."""
    journal = DiskJournal(directory)
    journal.recover()
    body = b"x" * body_size
    counter = 0
    deadline = time.perf_counter() + seconds

    async def producer() -> None:
        nonlocal counter
        while counter < limit and time.perf_counter() < deadline:
            counter += 1
            mid = counter
            journal.append(MessageRecord(mid, "ex", "rk", HEADER, body))
            await journal.commit(journal.append(EnqueueRecord("q", mid, mid)))

    start = time.perf_counter()
    async with journal:
        async with anyio.create_task_group() as group:
            for _ in range(producers):
                group.start_soon(producer)
        elapsed = time.perf_counter() - start
        stats = journal.statistics()
    name = f"confirms {body_size}B, {producers} producers"
    return Result(name, counter, counter * 2, elapsed, stats.batches, stats.fsyncs)


async def run(args: argparse.Namespace) -> list[Result]:
    results = []
    root = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="journal-"))
    runs = 0
    for size in (16, 1024):
        for scenario in ("batched", "pipelined", "confirms"):
            runs += 1
            directory = root / f"run{runs}"
            cpu_start = time.process_time()
            if scenario == "batched":
                result = await batched(
                    directory, size, args.messages, args.batch, args.seconds
                )
            elif scenario == "pipelined":
                result = await pipelined(
                    directory, size, args.messages, args.batch, args.seconds
                )
            else:
                result = await confirms(
                    directory, size, args.messages, args.producers, args.seconds
                )
            cpu = time.process_time() - cpu_start
            result = dataclasses.replace(result, cpu=cpu)
            print(result.line(), flush=True)
            results.append(result)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", help="where to write (default: a temp dir)")
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=1000, help="records per commit")
    parser.add_argument("--producers", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=10.0, help="per scenario")
    args = parser.parse_args(argv)
    anyio.run(run, args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
