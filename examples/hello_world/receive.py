"""Hello world, receiving side: print what arrives on the "hello" queue.

    python examples/hello_world/receive.py [URL] [--count N] [--idle SECONDS]

It stops after N messages, or once nothing has arrived for SECONDS.
"""

from __future__ import annotations

import argparse
import os
import time

import pika
from pika.adapters.blocking_connection import BlockingChannel
from pika.spec import Basic, BasicProperties

DEFAULT_URL = "amqp://guest:guest@localhost:5672/"
QUEUE = "hello"


def main() -> None:
    parser = argparse.ArgumentParser(description="Receive from 'hello'.")
    parser.add_argument(
        "url", nargs="?", default=os.environ.get("AMQP_URL", DEFAULT_URL)
    )
    parser.add_argument("--count", type=int, default=0, help="stop after N (0: no)")
    parser.add_argument("--idle", type=float, default=5.0, help="quiet time to stop")
    args = parser.parse_args()

    received = 0
    last_seen = time.monotonic()

    def on_message(
        channel: BlockingChannel,
        method: Basic.Deliver,
        _properties: BasicProperties,
        body: bytes,
    ) -> None:
        nonlocal received, last_seen
        print(f"received {body.decode()!r}", flush=True)
        channel.basic_ack(method.delivery_tag)
        received += 1
        last_seen = time.monotonic()

    with pika.BlockingConnection(pika.URLParameters(args.url)) as connection:
        channel = connection.channel()
        channel.queue_declare(QUEUE)
        # One unacknowledged message at a time, so that --count N takes
        # exactly N messages and leaves the rest on the queue.
        channel.basic_qos(prefetch_count=1)
        channel.basic_consume(QUEUE, on_message)
        print("ready", flush=True)
        # Serve deliveries in short slices so that the stop conditions are
        # checked often; start_consuming() would wait forever.
        while not (args.count and received >= args.count):
            if time.monotonic() - last_seen > args.idle:
                break
            connection.process_data_events(time_limit=0.1)
    print(f"done after {received} message(s)", flush=True)


if __name__ == "__main__":
    main()
