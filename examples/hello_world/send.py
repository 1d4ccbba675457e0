"""Hello world, sending side: leave one text message on the "hello" queue.

    python examples/hello_world/send.py [URL] [--text TEXT]

URL defaults to $AMQP_URL, then to amqp://guest:guest@localhost:5672/.
"""

from __future__ import annotations

import argparse
import os

import pika

DEFAULT_URL = "amqp://guest:guest@localhost:5672/"
QUEUE = "hello"


def main() -> None:
    parser = argparse.ArgumentParser(description="Send one message to 'hello'.")
    parser.add_argument(
        "url", nargs="?", default=os.environ.get("AMQP_URL", DEFAULT_URL)
    )
    parser.add_argument("--text", default="Hello, world!")
    args = parser.parse_args()

    with pika.BlockingConnection(pika.URLParameters(args.url)) as connection:
        channel = connection.channel()
        # Both sides declare the queue: declaring is idempotent, so whichever
        # program starts first creates it and the message is never lost.
        channel.queue_declare(QUEUE)
        # The default exchange ("") routes by queue name.
        channel.basic_publish(exchange="", routing_key=QUEUE, body=args.text.encode())
        print(f"sent {args.text!r}", flush=True)


if __name__ == "__main__":
    main()
