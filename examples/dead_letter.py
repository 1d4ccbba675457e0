"""Dead-lettering: where rejected and expired messages go, and what they say.

    python examples/dead_letter.py [URL] [--ttl MILLISECONDS]

A queue declared with ``x-dead-letter-exchange`` does not simply drop the
messages it gives up on: it republishes them to that exchange. Here the
queue ``dead_letter.orders`` dead-letters to the fanout exchange
``dead_letter.dlx``, and the queue ``dead_letter.parking`` bound to it
collects what comes out:

* "order-1 (bad)" is taken with basic.get and rejected without requeue:
  dead-lettered with reason "rejected";
* "order-2 (late)" is published with ``expiration`` (a per-message TTL, in
  ms, as a string) and nobody takes it in time: dead-lettered with reason
  "expired".

Each dead-lettered copy carries an ``x-death`` header: a list with one entry
per queue and reason it died for, most recent first, each with the queue,
the reason, a count, the time, and the exchange and routing keys it was
first published with (plus ``original-expiration`` when it had one; the
``expiration`` property itself is removed). ``x-first-death-*`` headers say
where it died first. The program prints these for both messages, then
deletes what it declared. The broker URL is the first argument, else the
AMQP_URL environment variable, else amqp://guest:guest@localhost:5672/.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import pika
from pika.adapters.blocking_connection import BlockingChannel

DEFAULT_URL = "amqp://guest:guest@localhost:5672/"
ORDERS = "dead_letter.orders"
DLX = "dead_letter.dlx"
PARKING = "dead_letter.parking"


def declare(channel: BlockingChannel) -> None:
    channel.exchange_declare(DLX, "fanout")
    channel.queue_declare(PARKING)
    channel.queue_bind(PARKING, DLX)
    channel.queue_declare(ORDERS, arguments={"x-dead-letter-exchange": DLX})
    channel.queue_purge(ORDERS)
    channel.queue_purge(PARKING)


Parked = tuple[pika.BasicProperties, bytes]


def collect(channel: BlockingChannel, count: int, timeout: float) -> list[Parked]:
    """Up to ``count`` messages from the parking queue, within ``timeout``."""
    found: list[Parked] = []
    deadline = time.monotonic() + timeout
    while len(found) < count and time.monotonic() < deadline:
        method, props, body = channel.basic_get(PARKING, auto_ack=True)
        if method is None:
            time.sleep(0.05)
            continue
        found.append((props, body))
    return found


def show(props: pika.BasicProperties, body: bytes) -> None:
    headers = props.headers or {}
    print(f"dead-lettered {body.decode()!r}", flush=True)
    for death in headers.get("x-death", []):
        keys = ",".join(death["routing-keys"])
        line = (
            f"  x-death: reason={death['reason']} queue={death['queue']} "
            f"count={death['count']} exchange={death['exchange']!r} "
            f"routing-keys={keys} time={death['time']:%H:%M:%S}"
        )
        if "original-expiration" in death:
            line += f" original-expiration={death['original-expiration']}"
        print(line, flush=True)
    print(
        f"  x-first-death: reason={headers.get('x-first-death-reason')} "
        f"queue={headers.get('x-first-death-queue')}; "
        f"expiration property: {props.expiration}",
        flush=True,
    )


def run(url: str, ttl: int) -> int:
    connection = pika.BlockingConnection(pika.URLParameters(url))
    channel = connection.channel()
    channel.confirm_delivery()
    declare(channel)

    channel.basic_publish("", ORDERS, b"order-1 (bad)")
    method, _props, body = channel.basic_get(ORDERS)
    assert method is not None, "the order just published is not there"
    channel.basic_reject(method.delivery_tag, requeue=False)
    print(f"rejected {body.decode()!r} without requeue", flush=True)

    late = pika.BasicProperties(expiration=str(ttl))
    channel.basic_publish("", ORDERS, b"order-2 (late)", late)
    print(f"published 'order-2 (late)' with expiration {ttl} ms", flush=True)

    found = collect(channel, 2, timeout=ttl / 1000 + 5.0)
    for props, body in found:
        show(props, body)

    channel.queue_delete(ORDERS)
    channel.queue_delete(PARKING)
    channel.exchange_delete(DLX)
    connection.close()
    if len(found) != 2:
        print(f"expected 2 dead-lettered messages, got {len(found)}", flush=True)
        return 1
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(
        description="Reject one message, let another expire, show their x-death."
    )
    parser.add_argument(
        "url", nargs="?", default=os.environ.get("AMQP_URL", DEFAULT_URL)
    )
    parser.add_argument(
        "--ttl", type=int, default=500, help="expiration of the late message, ms"
    )
    args = parser.parse_args()
    sys.exit(run(args.url, args.ttl))


if __name__ == "__main__":
    main()
