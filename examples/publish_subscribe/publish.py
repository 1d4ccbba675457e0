"""Publish/subscribe, publishing side: announce to every subscriber at once.

    python examples/publish_subscribe/publish.py [URL] [--message TEXT ...]

The "announcements" exchange is a fanout: it copies each message to every
queue bound to it and ignores the routing key. With no subscriber bound the
message goes nowhere; that is how fanout works, not an error.
"""

from __future__ import annotations

import argparse
import os

import pika

DEFAULT_URL = "amqp://guest:guest@localhost:5672/"
EXCHANGE = "announcements"


def main() -> None:
    parser = argparse.ArgumentParser(description="Announce to all subscribers.")
    parser.add_argument(
        "url", nargs="?", default=os.environ.get("AMQP_URL", DEFAULT_URL)
    )
    parser.add_argument("--message", action="append", dest="messages")
    args = parser.parse_args()
    messages = args.messages or ["service starting", "service ready"]

    with pika.BlockingConnection(pika.URLParameters(args.url)) as connection:
        channel = connection.channel()
        channel.exchange_declare(EXCHANGE, exchange_type="fanout")
        for text in messages:
            channel.basic_publish(EXCHANGE, routing_key="", body=text.encode())
            print(f"announced {text!r}", flush=True)


if __name__ == "__main__":
    main()
