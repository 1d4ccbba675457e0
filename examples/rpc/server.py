"""RPC, serving side: answer "prime factors of N" requests.

    python examples/rpc/server.py [URL] [--count N] [--idle SECONDS]

Requests arrive on the "rpc.factorize" queue. Each carries the queue to
answer on (reply_to) and a correlation_id that the answer copies, so that
the client can tell which of its questions an answer belongs to. Run
several servers to share the load.
"""

from __future__ import annotations

import argparse
import os
import time

import pika
from pika.adapters.blocking_connection import BlockingChannel
from pika.spec import Basic, BasicProperties

DEFAULT_URL = "amqp://guest:guest@localhost:5672/"
QUEUE = "rpc.factorize"
LIMIT = 10**12  # keeps trial division well under a second


def factorize(n: int) -> list[int]:
    factors = []
    divisor = 2
    while divisor * divisor <= n:
        while n % divisor == 0:
            factors.append(divisor)
            n //= divisor
        divisor += 1
    if n > 1:
        factors.append(n)
    return factors


def answer(request: bytes) -> str:
    text = request.decode(errors="replace").strip()
    if not text.isdigit() or not 2 <= int(text) <= LIMIT:
        return f"error: expected an integer from 2 to {LIMIT}, got {text!r}"
    return " ".join(str(f) for f in factorize(int(text)))


def main() -> None:
    parser = argparse.ArgumentParser(description="Serve factorization requests.")
    parser.add_argument(
        "url", nargs="?", default=os.environ.get("AMQP_URL", DEFAULT_URL)
    )
    parser.add_argument("--count", type=int, default=0, help="stop after N (0: no)")
    parser.add_argument("--idle", type=float, default=5.0, help="quiet time to stop")
    args = parser.parse_args()

    served = 0
    last_seen = time.monotonic()

    def on_request(
        channel: BlockingChannel,
        method: Basic.Deliver,
        properties: BasicProperties,
        body: bytes,
    ) -> None:
        nonlocal served, last_seen
        result = answer(body)
        if properties.reply_to:
            channel.basic_publish(
                exchange="",
                routing_key=properties.reply_to,
                properties=pika.BasicProperties(
                    correlation_id=properties.correlation_id
                ),
                body=result.encode(),
            )
        # acknowledge after answering: a crash in between means the request
        # is served again rather than lost
        channel.basic_ack(method.delivery_tag)
        served += 1
        last_seen = time.monotonic()
        print(f"answered {body.decode(errors='replace')!r}: {result}", flush=True)

    with pika.BlockingConnection(pika.URLParameters(args.url)) as connection:
        channel = connection.channel()
        channel.queue_declare(QUEUE)
        channel.basic_qos(prefetch_count=1)
        channel.basic_consume(QUEUE, on_request)
        print("ready", flush=True)
        while not (args.count and served >= args.count):
            if time.monotonic() - last_seen > args.idle:
                break
            connection.process_data_events(time_limit=0.1)
    print(f"done after {served} request(s)", flush=True)


if __name__ == "__main__":
    main()
