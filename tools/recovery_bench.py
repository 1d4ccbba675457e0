"""Time DiskJournal.recover() on a large journal and report its peak memory.

    python tools/recovery_bench.py [--messages N] [--body B] [--acked PATTERN]
                                   [--dir DIR] [--keep] [--runs R]

Writes a journal of N messages (default 1,000,000, 100-byte bodies) for one
durable queue straight through DiskJournal (MESSAGE + ENQUEUE per message,
flushed every 10,000), acking half of them if asked:

- none: every message stays queued;
- head: the oldest half is acked after all are written (a consumer that
  fell behind and caught up halfway); segments with nothing live go;
- alternate: every other message is acked soon after it is written, so the
  acks sit beside live messages all through the journal.

Then it runs recovery in a fresh child process, once per run, and prints the
seconds recover() took and the child's peak RSS (with the RSS before
recover() for comparison). A child per run keeps the writer's memory out of
the figure. Not a test; bounded by N.
"""

from __future__ import annotations

import argparse
import json
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# tools/ is on sys.path when this runs as a script
from journal_bench import json_body

from amqpd.persistence.journal import (
    AckRecord,
    DiskJournal,
    EnqueueRecord,
    MessageRecord,
)


def content_header(body_size: int) -> bytes:
    """A real content header (basic class, delivery_mode 2), so that a
    broker can be started on the journal this writes."""
    return struct.pack(">HHQHB", 60, 0, body_size, 0x1000, 2)


QUEUE = "/\x00backlog"
FLUSH_EVERY = 10_000


def write(
    directory: Path,
    messages: int,
    body_size: int,
    acked: str,
    json_bodies: bool = False,
) -> float:
    """Write the journal; return the seconds it took."""
    start = time.perf_counter()
    journal = DiskJournal(directory)
    journal.recover()
    body = bytes(range(body_size % 256)) + b"b" * (body_size - body_size % 256)
    if json_bodies:
        body = json_body(body_size)
    header = content_header(len(body))
    for mid in range(1, messages + 1):
        journal.append_many(
            [
                MessageRecord(mid, "", "backlog", header, body),
                EnqueueRecord(QUEUE, mid, mid),
            ]
        )
        if acked == "alternate" and mid % 2 == 0 and mid > 100:
            journal.append(AckRecord(QUEUE, mid - 100))
        if mid % FLUSH_EVERY == 0:
            journal.flush()
    if acked == "head":
        for mid in range(1, messages // 2 + 1):
            journal.append(AckRecord(QUEUE, mid))
            if mid % FLUSH_EVERY == 0:
                journal.flush()
    journal.close()
    return time.perf_counter() - start


def _memory_mib(field: str) -> float:
    # VmHWM, unlike ru_maxrss, starts afresh at exec: it is this child's own
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def recover_here(directory: Path, keep_bodies: int | None) -> dict[str, float]:
    """Run recover() in this process; the child's side."""
    before = _memory_mib("VmRSS")
    journal = DiskJournal(directory)
    start, cpu = time.perf_counter(), time.process_time()
    state = journal.recover(keep_bodies)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    peak = _memory_mib("VmHWM")
    queued = sum(len(queued) for queued in state.queues.values())
    journal.close()
    report = state.report
    return {
        "seconds": seconds,
        "cpu_seconds": cpu,
        "rss_before_mib": before,
        "peak_rss_mib": peak,
        "queued": queued,
        "records": report.records,
        "segments": report.segments,
        "unloaded": len(state.unloaded),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--body", type=int, default=100, help="body bytes")
    parser.add_argument("--json", action="store_true", help="JSON bodies")
    parser.add_argument(
        "--acked", choices=("none", "head", "alternate"), default="none"
    )
    parser.add_argument("--dir", help="journal directory (default: a temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the journal")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--keep-bodies", type=int, default=None,
        help="bytes of bodies recovery keeps in memory (the broker passes "
        "message_memory_budget); default: all",
    )  # fmt: skip
    parser.add_argument("--recover-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.recover_only:
        print(json.dumps(recover_here(Path(args.dir), args.keep_bodies)))
        return 0
    root = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="rbench-"))
    directory = root / "journal"
    try:
        if not directory.exists():
            seconds = write(directory, args.messages, args.body, args.acked, args.json)
            size = sum(p.stat().st_size for p in directory.glob("*.seg"))
            print(
                f"wrote {args.messages:,} messages ({args.acked} acked) in "
                f"{seconds:.1f} s: {size / 2**20:.0f} MiB on disk",
                flush=True,
            )
        for _ in range(args.runs):
            command = [
                sys.executable,
                __file__,
                "--recover-only",
                "--dir",
                str(directory),
            ]
            if args.keep_bodies is not None:
                command += ["--keep-bodies", str(args.keep_bodies)]
            out = subprocess.run(command, check=True, capture_output=True, text=True)
            result = json.loads(out.stdout.splitlines()[-1])
            print(
                f"recover: {result['seconds']:.2f} s "
                f"(cpu {result['cpu_seconds']:.2f} s), "
                f"peak RSS {result['peak_rss_mib']:.0f} MiB "
                f"(before {result['rss_before_mib']:.0f} MiB), "
                f"{result['queued']:,} queued "
                f"({result['unloaded']:,} bodies left on disk), "
                f"{result['records']:,} records in {result['segments']} segments",
                flush=True,
            )
    finally:
        if not args.keep and not args.dir:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
