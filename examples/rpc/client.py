"""RPC, calling side: ask the server for prime factors and wait for answers.

    python examples/rpc/client.py [URL] [--number N ...] [--timeout SECONDS]

All questions go out at once; the answers come back on this client's own
callback queue, in whatever order the servers finish them, and are matched
to their questions by correlation_id. Exit status 1 if any answer is
missing when the timeout expires.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import uuid

import pika
from pika.adapters.blocking_connection import BlockingChannel
from pika.spec import Basic, BasicProperties

DEFAULT_URL = "amqp://guest:guest@localhost:5672/"
QUEUE = "rpc.factorize"


def main() -> int:
    parser = argparse.ArgumentParser(description="Ask for prime factors.")
    parser.add_argument(
        "url", nargs="?", default=os.environ.get("AMQP_URL", DEFAULT_URL)
    )
    parser.add_argument("--number", action="append", dest="numbers")
    parser.add_argument("--timeout", type=float, default=10.0)
    args = parser.parse_args()
    numbers: list[str] = args.numbers or ["360", "9973", "600851475143"]

    pending: dict[str, str] = {}  # correlation_id -> the question
    answers: dict[str, str] = {}  # question -> answer

    def on_reply(
        channel: BlockingChannel,
        method: Basic.Deliver,
        properties: BasicProperties,
        body: bytes,
    ) -> None:
        channel.basic_ack(method.delivery_tag)
        question = pending.pop(properties.correlation_id or "", None)
        if question is None:
            return  # a late answer to an earlier run: not ours any more
        answers[question] = body.decode()

    with pika.BlockingConnection(pika.URLParameters(args.url)) as connection:
        channel = connection.channel()
        # declared here too, so that questions wait for a server to start
        channel.queue_declare(QUEUE)
        # the callback queue: named by the broker, private to this connection
        callback_queue = channel.queue_declare("", exclusive=True).method.queue
        channel.basic_consume(callback_queue, on_reply)

        for number in numbers:
            correlation_id = uuid.uuid4().hex
            pending[correlation_id] = number
            channel.basic_publish(
                exchange="",
                routing_key=QUEUE,
                properties=pika.BasicProperties(
                    reply_to=callback_queue, correlation_id=correlation_id
                ),
                body=number.encode(),
            )

        deadline = time.monotonic() + args.timeout
        while pending and time.monotonic() < deadline:
            connection.process_data_events(time_limit=0.1)

    for number in numbers:
        if number in answers:
            print(f"{number} = {answers[number]}", flush=True)
        else:
            print(f"{number}: no answer within {args.timeout} s", flush=True)
    return 1 if pending else 0


if __name__ == "__main__":
    sys.exit(main())
