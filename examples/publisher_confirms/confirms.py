"""Publisher confirms: know that the broker took responsibility for a message.

    python examples/publisher_confirms/confirms.py [URL] [--messages N]
        [--batch-size B] [--mode per-message|batch|both] [--timeout SECONDS]

On a channel in confirm mode the broker answers every publish with an ack
(it has the message; for a persistent message on a durable queue, on disk)
or a nack (it lost it). Two ways to wait for those answers:

* per message: publish, wait for the answer, publish the next. Simple, and
  a failure points at one message, but every message costs a round trip.
  pika's BlockingConnection works this way once confirms are on.
* in batches: publish B messages, then wait until all B are answered. One
  round trip per batch; on a nack the whole batch is suspect. This needs
  pika's callback-driven SelectConnection, which lets several publishes be
  outstanding at once.

Both publish to the "confirms.demo" queue, which is emptied first and
deleted at the end; the program prints how long each way took and how
many messages the queue held.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import pika
from pika.channel import Channel
from pika.frame import Method

DEFAULT_URL = "amqp://guest:guest@localhost:5672/"
QUEUE = "confirms.demo"
PERSISTENT = pika.BasicProperties(delivery_mode=pika.DeliveryMode.Persistent)


def publish_one_by_one(url: str, count: int) -> float:
    """Seconds to publish ``count`` messages, each confirmed before the next."""
    with pika.BlockingConnection(pika.URLParameters(url)) as connection:
        channel = connection.channel()
        channel.confirm_delivery()
        started = time.perf_counter()
        for n in range(count):
            # returns once acked; raises pika.exceptions.NackError on a nack
            channel.basic_publish("", QUEUE, f"message {n}".encode(), PERSISTENT)
        return time.perf_counter() - started


class BatchPublisher:
    """Publishes in batches of ``batch_size`` on a SelectConnection, waiting
    for every confirm of a batch before sending the next one."""

    def __init__(self, url: str, count: int, batch_size: int, timeout: float):
        self.params = pika.URLParameters(url)
        self.count = count
        self.batch_size = batch_size
        self.timeout = timeout
        self.sent = 0
        self.unconfirmed: set[int] = set()  # sequence numbers of this batch
        self.nacked = 0
        self.started = 0.0
        self.elapsed = 0.0
        self.failure = ""
        self.channel: Channel | None = None
        self.connection: pika.SelectConnection | None = None

    def run(self) -> float:
        self.connection = pika.SelectConnection(
            self.params,
            on_open_callback=lambda conn: conn.channel(on_open_callback=self._ready),
            on_open_error_callback=lambda _conn, exc: self._fail(str(exc)),
            on_close_callback=lambda conn, _exc: conn.ioloop.stop(),
        )
        self.connection.ioloop.call_later(self.timeout, lambda: self._fail("timed out"))
        self.connection.ioloop.start()
        if self.failure:
            raise RuntimeError(self.failure)
        if self.nacked:
            raise RuntimeError(f"{self.nacked} message(s) nacked")
        return self.elapsed

    def _ready(self, channel: Channel) -> None:
        self.channel = channel
        channel.confirm_delivery(self._on_confirm, callback=self._start)

    def _start(self, _frame: Method) -> None:
        self.started = time.perf_counter()
        self._publish_batch()

    def _publish_batch(self) -> None:
        assert self.channel is not None
        batch = min(self.batch_size, self.count - self.sent)
        for _ in range(batch):
            # a channel's confirms count its publishes from 1
            self.sent += 1
            self.unconfirmed.add(self.sent)
            body = f"message {self.sent}".encode()
            self.channel.basic_publish("", QUEUE, body, PERSISTENT)

    def _on_confirm(self, frame: Method) -> None:
        method = frame.method
        tag = method.delivery_tag
        if method.multiple:  # answers everything up to and including tag
            answered = {seq for seq in self.unconfirmed if seq <= tag}
        else:
            answered = {tag} & self.unconfirmed
        self.unconfirmed -= answered
        if isinstance(method, pika.spec.Basic.Nack):
            self.nacked += len(answered)
        if self.unconfirmed:
            return
        if self.sent < self.count:
            self._publish_batch()
            return
        self.elapsed = time.perf_counter() - self.started
        self._close()

    def _fail(self, reason: str) -> None:
        self.failure = self.failure or reason
        self._close()

    def _close(self) -> None:
        connection = self.connection
        if connection is None:
            return
        if connection.is_open:
            connection.close()  # on_close_callback stops the loop
        elif not connection.is_closing:
            connection.ioloop.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description="Compare ways to wait for confirms.")
    parser.add_argument(
        "url", nargs="?", default=os.environ.get("AMQP_URL", DEFAULT_URL)
    )
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument(
        "--mode", choices=["per-message", "batch", "both"], default="both"
    )
    parser.add_argument("--timeout", type=float, default=30.0)
    args = parser.parse_args()

    with pika.BlockingConnection(pika.URLParameters(args.url)) as connection:
        channel = connection.channel()
        channel.queue_declare(QUEUE, durable=True)
        channel.queue_purge(QUEUE)

    if args.mode in ("per-message", "both"):
        seconds = publish_one_by_one(args.url, args.messages)
        print(f"per-message: {args.messages} messages confirmed in {seconds:.3f} s")
    if args.mode in ("batch", "both"):
        publisher = BatchPublisher(
            args.url, args.messages, args.batch_size, args.timeout
        )
        try:
            seconds = publisher.run()
        except RuntimeError as exc:
            print(f"batch: failed: {exc}", file=sys.stderr)
            return 1
        print(
            f"batch of {args.batch_size}: {args.messages} messages confirmed "
            f"in {seconds:.3f} s"
        )

    with pika.BlockingConnection(pika.URLParameters(args.url)) as connection:
        channel = connection.channel()
        held = channel.queue_declare(QUEUE, passive=True).method.message_count
        channel.queue_delete(QUEUE)
    print(f"queue held {held} messages", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
