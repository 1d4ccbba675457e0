"""Work queue, working side: take tasks from "tasks" one at a time.

    python examples/work_queue/worker.py [URL] [--name NAME] [--count N]
                                         [--idle SECONDS]

Run several workers at once. With a prefetch of 1 the broker hands a worker
its next task only after it acknowledged the previous one, so a worker
stuck on a long task does not hoard the short ones (fair dispatch). A task
is acknowledged only after it is done: if a worker dies mid-task, the
broker gives the task to another worker.
"""

from __future__ import annotations

import argparse
import os
import time

import pika
from pika.adapters.blocking_connection import BlockingChannel
from pika.spec import Basic, BasicProperties

DEFAULT_URL = "amqp://guest:guest@localhost:5672/"
QUEUE = "tasks"


def main() -> None:
    parser = argparse.ArgumentParser(description="Work through queued tasks.")
    parser.add_argument(
        "url", nargs="?", default=os.environ.get("AMQP_URL", DEFAULT_URL)
    )
    parser.add_argument("--name", default=f"worker-{os.getpid()}")
    parser.add_argument("--count", type=int, default=0, help="stop after N (0: no)")
    parser.add_argument("--idle", type=float, default=5.0, help="quiet time to stop")
    args = parser.parse_args()

    done = 0
    last_seen = time.monotonic()

    def on_task(
        channel: BlockingChannel,
        method: Basic.Deliver,
        _properties: BasicProperties,
        body: bytes,
    ) -> None:
        nonlocal done, last_seen
        name, _, millis = body.decode().partition(":")
        time.sleep(int(millis or 0) / 1000)  # stands in for real work
        channel.basic_ack(method.delivery_tag)
        done += 1
        last_seen = time.monotonic()
        print(f"{args.name} finished {name} ({millis} ms)", flush=True)

    with pika.BlockingConnection(pika.URLParameters(args.url)) as connection:
        channel = connection.channel()
        channel.queue_declare(QUEUE, durable=True)
        channel.basic_qos(prefetch_count=1)
        channel.basic_consume(QUEUE, on_task)
        print(f"{args.name} ready", flush=True)
        while not (args.count and done >= args.count):
            if time.monotonic() - last_seen > args.idle:
                break
            connection.process_data_events(time_limit=0.1)
    print(f"{args.name} done after {done} task(s)", flush=True)


if __name__ == "__main__":
    main()
