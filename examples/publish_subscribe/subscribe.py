"""Publish/subscribe, subscribing side: hear every announcement.

    python examples/publish_subscribe/subscribe.py [URL] [--count N]
                                                   [--idle SECONDS]

Each subscriber gets its own queue: the broker names it, only this
connection may use it (exclusive), and it disappears with the connection.
Binding that queue to the fanout exchange is what subscribes it. Only
messages published after the binding exists arrive.
"""

from __future__ import annotations

import argparse
import os
import time

import pika
from pika.adapters.blocking_connection import BlockingChannel
from pika.spec import Basic, BasicProperties

DEFAULT_URL = "amqp://guest:guest@localhost:5672/"
EXCHANGE = "announcements"


def main() -> None:
    parser = argparse.ArgumentParser(description="Listen to announcements.")
    parser.add_argument(
        "url", nargs="?", default=os.environ.get("AMQP_URL", DEFAULT_URL)
    )
    parser.add_argument("--count", type=int, default=0, help="stop after N (0: no)")
    parser.add_argument("--idle", type=float, default=5.0, help="quiet time to stop")
    args = parser.parse_args()

    heard = 0
    last_seen = time.monotonic()

    def on_message(
        channel: BlockingChannel,
        method: Basic.Deliver,
        _properties: BasicProperties,
        body: bytes,
    ) -> None:
        nonlocal heard, last_seen
        channel.basic_ack(method.delivery_tag)
        heard += 1
        last_seen = time.monotonic()
        print(f"heard {body.decode()!r}", flush=True)

    with pika.BlockingConnection(pika.URLParameters(args.url)) as connection:
        channel = connection.channel()
        channel.exchange_declare(EXCHANGE, exchange_type="fanout")
        queue = channel.queue_declare("", exclusive=True).method.queue
        channel.queue_bind(queue, EXCHANGE)
        channel.basic_qos(prefetch_count=1)
        channel.basic_consume(queue, on_message)
        print("ready", flush=True)
        while not (args.count and heard >= args.count):
            if time.monotonic() - last_seen > args.idle:
                break
            connection.process_data_events(time_limit=0.1)
    print(f"done after {heard} message(s)", flush=True)


if __name__ == "__main__":
    main()
