"""Routing, publishing side: send log lines keyed by their severity.

    python examples/routing/publish.py [URL] [--log SEVERITY:TEXT ...]

The "logs_by_severity" exchange is a direct exchange: a message goes to the
queues whose binding key equals its routing key, here the severity.
"""

from __future__ import annotations

import argparse
import os

import pika

DEFAULT_URL = "amqp://guest:guest@localhost:5672/"
EXCHANGE = "logs_by_severity"
DEMO = ["info:cache warmed", "warning:disk 85% full", "error:payment timeout"]


def parse_log(text: str) -> tuple[str, str]:
    severity, sep, line = text.partition(":")
    if not severity or not sep:
        raise argparse.ArgumentTypeError(f"expected SEVERITY:TEXT, got {text!r}")
    return severity, line


def main() -> None:
    parser = argparse.ArgumentParser(description="Publish logs by severity.")
    parser.add_argument(
        "url", nargs="?", default=os.environ.get("AMQP_URL", DEFAULT_URL)
    )
    parser.add_argument("--log", action="append", type=parse_log, dest="logs")
    args = parser.parse_args()
    logs = args.logs or [parse_log(entry) for entry in DEMO]

    with pika.BlockingConnection(pika.URLParameters(args.url)) as connection:
        channel = connection.channel()
        channel.exchange_declare(EXCHANGE, exchange_type="direct")
        for severity, line in logs:
            channel.basic_publish(EXCHANGE, routing_key=severity, body=line.encode())
            print(f"published [{severity}] {line}", flush=True)


if __name__ == "__main__":
    main()
