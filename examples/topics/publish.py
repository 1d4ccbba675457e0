"""Topics, publishing side: send events with dotted routing keys.

    python examples/topics/publish.py [URL] [--event KEY:TEXT ...]

Keys name what happened as words separated by dots, most general first,
for example "orders.eu.created". Subscribers pick events by pattern.
"""

from __future__ import annotations

import argparse
import os

import pika

DEFAULT_URL = "amqp://guest:guest@localhost:5672/"
EXCHANGE = "activity"
DEMO = [
    "orders.eu.created:order 1001",
    "orders.us.cancelled:order 1002",
    "users.eu.created:user ada",
]


def parse_event(text: str) -> tuple[str, str]:
    key, sep, line = text.partition(":")
    if not key or not sep:
        raise argparse.ArgumentTypeError(f"expected KEY:TEXT, got {text!r}")
    return key, line


def main() -> None:
    parser = argparse.ArgumentParser(description="Publish events by topic.")
    parser.add_argument(
        "url", nargs="?", default=os.environ.get("AMQP_URL", DEFAULT_URL)
    )
    parser.add_argument("--event", action="append", type=parse_event, dest="events")
    args = parser.parse_args()
    events = args.events or [parse_event(entry) for entry in DEMO]

    with pika.BlockingConnection(pika.URLParameters(args.url)) as connection:
        channel = connection.channel()
        channel.exchange_declare(EXCHANGE, exchange_type="topic")
        for key, line in events:
            channel.basic_publish(EXCHANGE, routing_key=key, body=line.encode())
            print(f"published {key}: {line}", flush=True)


if __name__ == "__main__":
    main()
