"""Measure the journal's write path and its compression codecs.

    python tools/journal_bench.py appends [--messages N] [--seconds S] [--runs R]
    python tools/journal_bench.py codecs [--seconds S]

``appends`` drives a DiskJournal the way the broker does: per persistent
publish one ``append_many([MessageRecord, EnqueueRecord])`` and, for a
confirm-mode publisher, one ``on_durable``; per ack one ``AckRecord``.
Group commit with batch fsync (the default options). Scenarios:

- confirm: publishes arrive in chunks (as from one socket read) and the
  event loop runs the writer between chunks; every message gets its confirm;
- confirm+ack: the same, and each chunk acks the chunk before it;
- append cost: appends only, timed apart from the flushes between them,
  so the figure is the event-loop CPU per message and nothing else.

``codecs`` measures compress and decompress speed and the size ratio of
zlib, zstd and lz4 on payloads like message bodies (docs/journal-compression.md
has the numbers from one run). It needs the ``lz4`` package, which amqpd
itself does not use: ``pip install lz4``.

Not a test: figures depend on the disk and on what else the machine runs.
Every loop is bounded by a message count and a time limit.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import anyio
import anyio.lowlevel

from amqpd.persistence.journal import (
    AckRecord,
    DiskJournal,
    EnqueueRecord,
    JournalError,
    JournalOptions,
    MessageRecord,
    Record,
)

# a basic content header: class 60, body size, delivery-mode 2
HEADER = b"\x00\x3c\x00\x00\x00\x00\x00\x00\x00\x10\x10\x00\x02"
QUEUE = "/\x00orders"


# payloads


def json_body(size: int, seed: int = 1) -> bytes:
    """A JSON document of about ``size`` bytes, like an order event batch."""
    rng = random.Random(seed)
    names = ["Ada", "Grace", "Linus", "Barbara", "Ken", "Margaret", "Dennis"]
    states = ["new", "paid", "packed", "shipped", "delivered", "returned"]
    words = "fast cheap blue green large small fragile gift express".split()
    events = []
    out = b""
    while len(out) < size:
        events.append(
            {
                "id": f"{rng.getrandbits(64):016x}",
                "ts": f"2024-05-{rng.randint(1, 28):02d}T"
                f"{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:"
                f"{rng.randint(0, 59):02d}.{rng.randint(0, 999):03d}Z",
                "customer": {
                    "id": rng.randint(1, 10**6),
                    "name": rng.choice(names),
                    "email": f"user{rng.randint(1, 10**5)}@example.com",
                },
                "status": rng.choice(states),
                "items": [
                    {
                        "sku": f"SKU-{rng.randint(0, 999999):06d}",
                        "qty": rng.randint(1, 5),
                        "price": round(rng.uniform(1, 500), 2),
                    }
                    for _ in range(rng.randint(1, 4))
                ],
                "note": " ".join(rng.choice(words) for _ in range(rng.randint(0, 6))),
            }
        )
        out = json.dumps(events).encode()
    return out[:size]


def random_body(size: int, seed: int = 2) -> bytes:
    """Incompressible bytes (already compressed or encrypted bodies)."""
    return random.Random(seed).randbytes(size)


def text_body(size: int, seed: int = 3) -> bytes:
    """Log lines: repetitive text with varying numbers."""
    rng = random.Random(seed)
    lines = []
    total = 0
    while total < size:
        line = (
            f"2024-05-01T12:{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}Z "
            f"INFO worker-{rng.randint(1, 8)} processed job {rng.randint(1, 10**6)} "
            f"in {rng.randint(1, 900)} ms\n"
        )
        lines.append(line)
        total += len(line)
    return "".join(lines).encode()[:size]


# codecs


@dataclass(frozen=True)
class CodecResult:
    payload: str
    codec: str
    size: int
    packed: int
    compress_mb_s: float
    decompress_mb_s: float

    def row(self) -> str:
        ratio = self.packed / self.size
        return (
            f"| {self.payload} | {self.codec} | {ratio:.3f} | "
            f"{self.compress_mb_s:,.0f} | {self.decompress_mb_s:,.0f} |"
        )


def codec_table() -> dict[str, tuple[Callable[[bytes], bytes], Callable[..., bytes]]]:
    import lz4.block  # type: ignore[import-untyped]
    import zstandard

    zstd1 = zstandard.ZstdCompressor(level=1)
    zstd3 = zstandard.ZstdCompressor(level=3)
    unzstd = zstandard.ZstdDecompressor()

    def zstd_out(data: bytes, size: int) -> bytes:
        return unzstd.decompress(data, max_output_size=size)

    def zlib_out(data: bytes, size: int) -> bytes:
        return zlib.decompress(data)

    def lz4_out(data: bytes, size: int) -> bytes:
        return bytes(lz4.block.decompress(data))

    return {
        "zlib 1": (lambda data: zlib.compress(data, 1), zlib_out),
        "zstd 1": (zstd1.compress, zstd_out),
        "zstd 3": (zstd3.compress, zstd_out),
        "lz4": (lz4.block.compress, lz4_out),
    }


def _best_rate(func: Callable[[], object], size: int, seconds: float) -> float:
    """MB/s of the fastest of several timed rounds of ``func``."""
    rounds: list[float] = []
    deadline = time.perf_counter() + seconds
    loops = max(1, 2_000_000 // size)
    while time.perf_counter() < deadline or len(rounds) < 3:
        start = time.perf_counter()
        for _ in range(loops):
            func()
        rounds.append((time.perf_counter() - start) / loops)
        if len(rounds) >= 50:
            break
    return size / min(rounds) / 1e6


def run_codecs(seconds: float) -> list[CodecResult]:
    payloads = [
        ("JSON 4 KiB", json_body(4096)),
        ("JSON 16 KiB", json_body(16384)),
        ("JSON 64 KiB", json_body(65536)),
        ("log text 16 KiB", text_body(16384)),
        ("random 16 KiB", random_body(16384)),
    ]
    results = []
    for name, data in payloads:
        for codec, (pack, unpack) in codec_table().items():
            packed = pack(data)
            assert unpack(packed, len(data)) == data
            size = len(data)
            c_rate = _best_rate(partial(pack, data), size, seconds)
            d_rate = _best_rate(partial(unpack, packed, size), size, seconds)
            result = CodecResult(name, codec, len(data), len(packed), c_rate, d_rate)
            print(result.row(), flush=True)
            results.append(result)
    return results


# appends


@dataclass(frozen=True)
class AppendResult:
    name: str
    messages: int
    records: int
    seconds: float
    cpu: float
    batches: int
    fsyncs: int

    def line(self) -> str:
        per_batch = self.records / max(self.batches, 1)
        return (
            f"{self.name:<34} {self.messages / self.seconds:>9,.0f} msg/s "
            f"{self.records / self.seconds:>9,.0f} records/s "
            f"{per_batch:>6.0f} records/batch {self.fsyncs:>5} fsyncs "
            f"cpu {self.cpu / self.seconds:>4.0%}"
        )


async def confirm_run(
    directory: Path,
    body: bytes,
    limit: int,
    seconds: float,
    chunk: int,
    acks: bool,
    options: JournalOptions | None = None,
) -> AppendResult:
    """Publishes in chunks with a confirm each; optionally ack the last chunk."""
    journal = DiskJournal(directory, options)
    journal.recover()
    confirmed = 0

    def confirm(error: JournalError | None) -> None:
        nonlocal confirmed
        confirmed += 1

    sent = records = 0
    cpu0, start = time.process_time(), time.perf_counter()
    deadline = start + seconds
    async with journal:
        while sent < limit and time.perf_counter() < deadline:
            first = sent + 1
            for mid in range(first, first + chunk):
                lsn = journal.append_many(
                    [
                        MessageRecord(mid, "orders", "new", HEADER, body),
                        EnqueueRecord(QUEUE, mid, mid),
                    ]
                )
                journal.on_durable(lsn, confirm)
            sent += chunk
            records += 2 * chunk
            if acks and first > chunk:
                for mid in range(first - chunk, first):
                    journal.append(AckRecord(QUEUE, mid))
                records += chunk
            await anyio.lowlevel.checkpoint()
        await journal.commit()
        elapsed = time.perf_counter() - start
        cpu = time.process_time() - cpu0
        stats = journal.statistics()
    assert confirmed == sent, (confirmed, sent)
    kind = "confirm+ack" if acks else "confirm"
    name = f"{kind} {len(body)}B, {chunk}/chunk"
    return AppendResult(name, sent, records, elapsed, cpu, stats.batches, stats.fsyncs)


def append_cost(
    directory: Path,
    body: bytes,
    limit: int,
    seconds: float,
    options: JournalOptions | None = None,
) -> float:
    """CPU microseconds of append_many per message, flushes not counted.

    CPU time of this thread rather than wall time, so that other work on a
    busy machine does not count; the records are built outside the timing.
    """
    journal = DiskJournal(directory, options)
    journal.recover()
    spent = 0.0
    sent = 0
    deadline = time.perf_counter() + seconds
    while sent < limit and time.perf_counter() < deadline:
        pairs: list[list[Record]] = [
            [
                MessageRecord(mid, "orders", "new", HEADER, body),
                EnqueueRecord(QUEUE, mid, mid),
            ]
            for mid in range(sent + 1, sent + 1001)
        ]
        start = time.thread_time()
        for pair in pairs:
            journal.append_many(pair)
        spent += time.thread_time() - start
        sent += 1000
        journal.flush()
    journal.close()
    return spent / sent * 1e6


def _body(size: int) -> bytes:
    return b"x" * size if size < 1024 else json_body(size)


async def run_appends(args: argparse.Namespace) -> None:
    root = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="jbench-"))
    bodies = [_body(int(size)) for size in args.bodies.split(",")]
    scenarios = args.scenarios.split(",")
    options = JournalOptions(compression=args.compression) if args.compression else None
    count = 0
    for body in bodies if "cost" in scenarios else ():
        costs = []
        for _ in range(args.runs):
            count += 1
            costs.append(
                append_cost(root / f"c{count}", body, args.messages, 5.0, options)
            )
        print(
            f"append cost {len(body)}B: median {statistics.median(costs):.2f} us/msg "
            f"(runs: {', '.join(f'{c:.2f}' for c in costs)})",
            flush=True,
        )
    for acks in (False, True):
        if ("ack" if acks else "confirm") not in scenarios:
            continue
        for body in bodies:
            rates = []
            for _ in range(args.runs):
                count += 1
                result = await confirm_run(
                    root / f"r{count}",
                    body,
                    args.messages,
                    args.seconds,
                    50,
                    acks,
                    options,
                )
                print("  " + result.line(), flush=True)
                rates.append(result.messages / result.seconds)
            print(
                f"{result.name}: median {statistics.median(rates):,.0f} msg/s",
                flush=True,
            )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    appends = sub.add_parser("appends", help="append rates with group commit")
    appends.add_argument("--dir", help="where to write (default: a temp dir)")
    appends.add_argument("--messages", type=int, default=200_000)
    appends.add_argument("--seconds", type=float, default=5.0, help="per run")
    appends.add_argument("--runs", type=int, default=3)
    appends.add_argument("--bodies", default="16,1024,16384", help="body sizes")
    appends.add_argument("--compression", choices=("zstd", "zlib"), help="codec")
    appends.add_argument(
        "--scenarios", default="cost,confirm,ack", help="cost, confirm, ack"
    )
    codecs = sub.add_parser("codecs", help="compression speed and ratio")
    codecs.add_argument("--seconds", type=float, default=0.5, help="per measure")
    args = parser.parse_args(argv)
    if args.command == "codecs":
        print("| payload | codec | size ratio | compress MB/s | decompress MB/s |")
        print("| --- | --- | --- | --- | --- |")
        run_codecs(args.seconds)
    else:
        anyio.run(run_appends, args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
