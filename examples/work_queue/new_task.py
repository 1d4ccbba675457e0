"""Work queue, producing side: put tasks on the durable "tasks" queue.

    python examples/work_queue/new_task.py [URL] [--task NAME:MILLISECONDS ...]

Each task names a job and how long a worker needs for it. Tasks are
persistent messages on a durable queue, so they outlive a broker restart.
"""

from __future__ import annotations

import argparse
import os

import pika

DEFAULT_URL = "amqp://guest:guest@localhost:5672/"
QUEUE = "tasks"
DEMO_TASKS = ["resize-photo:300", "send-invoice:50", "index-page:50", "ping:0"]


def parse_task(text: str) -> tuple[str, int]:
    name, _, millis = text.partition(":")
    if not name or not millis.isdigit():
        raise argparse.ArgumentTypeError(f"expected NAME:MILLISECONDS, got {text!r}")
    return name, int(millis)


def main() -> None:
    parser = argparse.ArgumentParser(description="Queue tasks for the workers.")
    parser.add_argument(
        "url", nargs="?", default=os.environ.get("AMQP_URL", DEFAULT_URL)
    )
    parser.add_argument(
        "--task", action="append", type=parse_task, dest="tasks",
        help="NAME:MILLISECONDS (repeatable)",
    )  # fmt: skip
    args = parser.parse_args()
    tasks = args.tasks or [parse_task(t) for t in DEMO_TASKS]

    persistent = pika.BasicProperties(delivery_mode=pika.DeliveryMode.Persistent)
    with pika.BlockingConnection(pika.URLParameters(args.url)) as connection:
        channel = connection.channel()
        channel.queue_declare(QUEUE, durable=True)
        for name, millis in tasks:
            body = f"{name}:{millis}".encode()
            channel.basic_publish("", QUEUE, body, properties=persistent)
            print(f"queued {name} ({millis} ms)", flush=True)


if __name__ == "__main__":
    main()
