"""The two figures the core issue asks for, with pika as the client.

1. messages per second for one pika publisher and one pika consumer (16-byte
   bodies, manual ack with multiple every 100, prefetch 1000);
2. the broker's RSS with 100,000 queued 16-byte messages.

    python tools/pika_figures.py URL BROKER_PID [N]
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.synchronize
import sys
import time

import pika


def rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def _consume(url: str, n: int, ready: multiprocessing.synchronize.Event) -> None:
    conn = pika.BlockingConnection(pika.URLParameters(url))
    ch = conn.channel()
    ch.basic_qos(prefetch_count=1000)
    count = 0

    def on_message(chan, method, _props, _body):  # type: ignore[no-untyped-def]
        nonlocal count
        count += 1
        if count % 100 == 0 or count == n:
            chan.basic_ack(method.delivery_tag, multiple=True)
        if count == n:
            chan.stop_consuming()

    ch.basic_consume("pika-figures", on_message)
    ready.set()
    ch.start_consuming()
    conn.close()


def throughput(url: str, n: int) -> tuple[float, float]:
    """Publisher here, consumer in its own process (pika is single-threaded
    Python: sharing one process would measure the GIL)."""
    conn = pika.BlockingConnection(pika.URLParameters(url))
    ch = conn.channel()
    ch.queue_declare("pika-figures")
    ch.queue_purge("pika-figures")
    ready = multiprocessing.Event()
    consumer = multiprocessing.Process(target=_consume, args=(url, n, ready))
    consumer.start()
    ready.wait()
    start = time.perf_counter()
    body = b"x" * 16
    for _ in range(n):
        ch.basic_publish("", "pika-figures", body)
    published = time.perf_counter() - start
    consumer.join()
    total = time.perf_counter() - start
    ch.queue_delete("pika-figures")
    conn.close()
    return n / published, n / total


def backlog_rss(url: str, pid: int, n: int = 100_000) -> tuple[int, int]:
    conn = pika.BlockingConnection(pika.URLParameters(url))
    ch = conn.channel()
    ch.queue_declare("pika-backlog")
    ch.queue_purge("pika-backlog")
    time.sleep(0.5)
    before = rss(pid)
    body = b"x" * 16
    for _ in range(n):
        ch.basic_publish("", "pika-backlog", body)
    ch.queue_declare("pika-backlog", passive=True)  # a round trip: all routed
    time.sleep(0.5)
    after = rss(pid)
    ch.queue_delete("pika-backlog")
    conn.close()
    return before, after


def main() -> None:
    url, pid = sys.argv[1], int(sys.argv[2])
    n = int(sys.argv[3]) if len(sys.argv) > 3 else 200_000
    pub, e2e = throughput(url, n)
    print(
        f"pika 1 publisher + 1 consumer, 16 B, manual ack: publish {pub:,.0f} msg/s, "
        f"end to end {e2e:,.0f} msg/s ({n:,} messages)"
    )
    before, after = backlog_rss(url, pid)
    print(
        f"broker RSS: {before / 2**20:.1f} MiB before, {after / 2**20:.1f} MiB with "
        f"100,000 queued 16-byte messages ({(after - before) / 100_000:.0f} B/message)"
    )


if __name__ == "__main__":
    main()
