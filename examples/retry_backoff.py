"""Retry with exponential backoff, built from plain queues and TTLs.

    python examples/retry_backoff.py [URL] [--failures N] [--max-attempts M]
        [--base-delay MILLISECONDS]

A job that fails should be tried again later, and later still if it fails
again. No broker plugin is needed for that, only standard parts:

* the work queue ``retry_backoff.work``, where the worker takes jobs;
* one delay queue per attempt, ``retry_backoff.delay.<ms>``, declared with
  ``x-message-ttl: <ms>``, ``x-dead-letter-exchange: ""`` (the default
  exchange) and ``x-dead-letter-routing-key: retry_backoff.work``. Nobody
  consumes from it: a message put there waits out the TTL, is dead-lettered
  with reason "expired", and so lands back in the work queue.

When the job fails, the worker publishes it to the delay queue of the next
wait (``--base-delay`` times 2, 4, 8... ms) with an ``attempt`` header one
higher, then acknowledges the original. After ``--max-attempts`` failures it
gives up. The x-death header of a job that came back names the delay queue
it waited in.

Why one delay queue per wait instead of one queue and a per-message
``expiration``? Every message of a delay queue has the same TTL, so they
expire in the order they are queued. With mixed expirations, RabbitMQ
releases a message only once everything ahead of it has gone, so a short
wait can be stuck behind a long one.

The worker here fails ``--failures`` times on purpose and then succeeds. It
prints each attempt, the wait before the next one, and how long the job
really was away; it stops by itself once the job succeeded or was given up
(or when nothing arrives for a while), and deletes the queues it declared.
The broker URL is the first argument, else the AMQP_URL environment
variable, else amqp://guest:guest@localhost:5672/.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import pika
from pika.adapters.blocking_connection import BlockingChannel

DEFAULT_URL = "amqp://guest:guest@localhost:5672/"
WORK = "retry_backoff.work"


def delay_queue(channel: BlockingChannel, delay_ms: int) -> str:
    """Declare the delay queue for waits of ``delay_ms``; its name."""
    name = f"retry_backoff.delay.{delay_ms}"
    channel.queue_declare(name, arguments={
        "x-message-ttl": delay_ms,
        "x-dead-letter-exchange": "",
        "x-dead-letter-routing-key": WORK,
    })  # fmt: skip
    return name


def came_back_from(props: pika.BasicProperties) -> str:
    """The queue the job last waited in, from its x-death header."""
    deaths = (props.headers or {}).get("x-death") or []
    return str(deaths[0]["queue"]) if deaths else "-"


def run(args: argparse.Namespace) -> int:
    connection = pika.BlockingConnection(pika.URLParameters(args.url))
    channel = connection.channel()
    channel.confirm_delivery()
    channel.queue_declare(WORK)
    channel.queue_purge(WORK)
    declared = [WORK]

    channel.basic_publish("", WORK, b"resize-photo-42",
                          pika.BasicProperties(headers={"attempt": 1}))  # fmt: skip
    print("queued job resize-photo-42", flush=True)

    # long enough for the longest wait, so a lost job ends the program too
    idle = args.base_delay * 2**args.max_attempts / 1000 + 5.0
    sent_at = time.monotonic()
    code = 1
    for method, props, body in channel.consume(WORK, inactivity_timeout=idle):
        if method is None:
            print(f"nothing arrived for {idle:.1f} s, stopping", flush=True)
            break
        attempt = int((props.headers or {}).get("attempt", 1))
        away = (time.monotonic() - sent_at) * 1000
        where = came_back_from(props)
        prefix = f"attempt {attempt}: {body.decode()}"
        if attempt > 1:
            prefix += f" came back from {where} after {away:.0f} ms;"
        if attempt > args.failures:
            channel.basic_ack(method.delivery_tag)
            print(f"{prefix} succeeded", flush=True)
            print(f"done: succeeded at attempt {attempt}", flush=True)
            code = 0
            break
        if attempt >= args.max_attempts:
            channel.basic_ack(method.delivery_tag)
            print(f"{prefix} failed, giving up", flush=True)
            print(f"gave up after {attempt} attempts", flush=True)
            code = 0
            break
        delay = args.base_delay * 2 ** (attempt - 1)
        target = delay_queue(channel, delay)
        if target not in declared:
            declared.append(target)
        # the retry first, then the ack: a crash in between repeats the job
        # rather than losing it
        headers = dict(props.headers or {}, attempt=attempt + 1)
        channel.basic_publish("", target, body,
                              pika.BasicProperties(headers=headers))  # fmt: skip
        sent_at = time.monotonic()
        channel.basic_ack(method.delivery_tag)
        print(f"{prefix} failed, retry in {delay} ms via {target}", flush=True)

    channel.cancel()
    for name in declared:
        channel.queue_delete(name)
    connection.close()
    return code


def main() -> None:
    parser = argparse.ArgumentParser(
        description="Retry a failing job with growing waits (TTL delay queues)."
    )
    parser.add_argument(
        "url", nargs="?", default=os.environ.get("AMQP_URL", DEFAULT_URL)
    )
    parser.add_argument(
        "--failures",
        type=int,
        default=3,
        help="how many attempts fail before one succeeds",
    )
    parser.add_argument(
        "--max-attempts", type=int, default=5, help="give up after this many attempts"
    )
    parser.add_argument(
        "--base-delay",
        type=int,
        default=100,
        help="first wait in ms; each next wait is twice as long",
    )
    args = parser.parse_args()
    if args.max_attempts < 1 or args.base_delay < 1 or args.failures < 0:
        parser.error("--failures must be >= 0, --max-attempts and --base-delay >= 1")
    sys.exit(run(args))


if __name__ == "__main__":
    main()
