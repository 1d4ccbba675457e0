"""Topics, subscribing side: receive the events that match some patterns.

    python examples/topics/subscribe.py [URL] --pattern P [--pattern P ...]
                                        [--count N] [--idle SECONDS]

In a pattern "*" stands for exactly one word and "#" for zero or more:
"orders.*.created" matches "orders.eu.created"; "*.eu.#" matches every
European event; "#" alone matches everything. A message that matches two
of a queue's patterns still arrives once.
"""

from __future__ import annotations

import argparse
import os
import time

import pika
from pika.adapters.blocking_connection import BlockingChannel
from pika.spec import Basic, BasicProperties

DEFAULT_URL = "amqp://guest:guest@localhost:5672/"
EXCHANGE = "activity"


def main() -> None:
    parser = argparse.ArgumentParser(description="Receive events by pattern.")
    parser.add_argument(
        "url", nargs="?", default=os.environ.get("AMQP_URL", DEFAULT_URL)
    )
    parser.add_argument("--pattern", action="append", required=True)
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
        print(f"{method.routing_key}: {body.decode()}", flush=True)
        channel.basic_ack(method.delivery_tag)
        received += 1
        last_seen = time.monotonic()

    with pika.BlockingConnection(pika.URLParameters(args.url)) as connection:
        channel = connection.channel()
        channel.exchange_declare(EXCHANGE, exchange_type="topic")
        queue = channel.queue_declare("", exclusive=True).method.queue
        for pattern in args.pattern:
            channel.queue_bind(queue, EXCHANGE, routing_key=pattern)
        channel.basic_qos(prefetch_count=1)
        channel.basic_consume(queue, on_message)
        print("ready", flush=True)
        while not (args.count and received >= args.count):
            if time.monotonic() - last_seen > args.idle:
                break
            connection.process_data_events(time_limit=0.1)
    print(f"done after {received} message(s)", flush=True)


if __name__ == "__main__":
    main()
