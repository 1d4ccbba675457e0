"""Routing, subscribing side: receive only the severities asked for.

    python examples/routing/subscribe.py [URL] --severity S [--severity S ...]
                                         [--count N] [--idle SECONDS]

One private queue, one binding per severity: a queue bound with keys
"warning" and "error" receives both and nothing else.
"""

from __future__ import annotations

import argparse
import os
import time

import pika
from pika.adapters.blocking_connection import BlockingChannel
from pika.spec import Basic, BasicProperties

DEFAULT_URL = "amqp://guest:guest@localhost:5672/"
EXCHANGE = "logs_by_severity"


def main() -> None:
    parser = argparse.ArgumentParser(description="Receive logs of some severities.")
    parser.add_argument(
        "url", nargs="?", default=os.environ.get("AMQP_URL", DEFAULT_URL)
    )
    parser.add_argument("--severity", action="append", required=True)
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
        # the routing key a message was published with arrives with it
        print(f"[{method.routing_key}] {body.decode()}", flush=True)
        channel.basic_ack(method.delivery_tag)
        received += 1
        last_seen = time.monotonic()

    with pika.BlockingConnection(pika.URLParameters(args.url)) as connection:
        channel = connection.channel()
        channel.exchange_declare(EXCHANGE, exchange_type="direct")
        queue = channel.queue_declare("", exclusive=True).method.queue
        for severity in args.severity:
            channel.queue_bind(queue, EXCHANGE, routing_key=severity)
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
