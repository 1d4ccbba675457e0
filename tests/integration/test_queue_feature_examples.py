"""examples/retry_backoff.py and examples/dead_letter.py, run as a user runs
them, against a broker from the test fixture; what they print is checked
line by line. Each program stops by itself; subprocess.run's timeout kills
one that would not.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pika
import pytest
from pika.exceptions import ChannelClosedByBroker

from amqpd.testing import BrokerThread

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def run(script: str, *args: str, env_url: str | None = None) -> list[str]:
    """Run an example to its end; its stdout lines (exit status 0 checked)."""
    env = dict(os.environ)
    env.pop("AMQP_URL", None)
    if env_url is not None:
        env["AMQP_URL"] = env_url
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / script), *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout.splitlines()


def assert_gone(broker: BrokerThread, *queues: str) -> None:
    """The example deleted what it declared."""
    with pika.BlockingConnection(pika.URLParameters(broker.url)) as conn:
        for name in queues:
            with pytest.raises(ChannelClosedByBroker) as info:
                conn.channel().queue_declare(name, passive=True)
            assert info.value.reply_code == 404


def came_back(line: str, attempt: int, waited_in: int, then: str) -> int:
    """The measured time away (ms) from an 'attempt N: ... came back' line."""
    match = re.fullmatch(
        rf"attempt {attempt}: resize-photo-42 came back from "
        rf"retry_backoff\.delay\.{waited_in} after (\d+) ms; {re.escape(then)}",
        line,
    )
    assert match, line
    return int(match.group(1))


def test_retry_backoff_waits_twice_as_long_each_time_then_succeeds(
    amqpd_broker: BrokerThread,
) -> None:
    lines = run(
        "retry_backoff.py", amqpd_broker.url, "--failures", "3", "--base-delay", "50"
    )

    assert len(lines) == 6, lines
    assert lines[0] == "queued job resize-photo-42"
    assert lines[1] == (
        "attempt 1: resize-photo-42 failed, retry in 50 ms via retry_backoff.delay.50"
    )
    waits = [
        came_back(lines[2], 2, 50,
                  "failed, retry in 100 ms via retry_backoff.delay.100"),
        came_back(lines[3], 3, 100,
                  "failed, retry in 200 ms via retry_backoff.delay.200"),
        came_back(lines[4], 4, 200, "succeeded"),
    ]  # fmt: skip
    # each wait is the delay queue's TTL: never shorter, not much longer
    for waited, delay in zip(waits, (50, 100, 200), strict=True):
        assert delay - 1 <= waited < delay + 1000
    assert lines[5] == "done: succeeded at attempt 4"
    assert_gone(
        amqpd_broker, "retry_backoff.work", "retry_backoff.delay.50",
        "retry_backoff.delay.100", "retry_backoff.delay.200",
    )  # fmt: skip


def test_retry_backoff_gives_up_after_max_attempts(
    amqpd_broker: BrokerThread,
) -> None:
    lines = run(
        "retry_backoff.py", amqpd_broker.url, "--failures", "10",
        "--max-attempts", "3", "--base-delay", "20",
    )  # fmt: skip

    assert lines[1] == (
        "attempt 1: resize-photo-42 failed, retry in 20 ms via retry_backoff.delay.20"
    )
    came_back(lines[2], 2, 20, "failed, retry in 40 ms via retry_backoff.delay.40")
    came_back(lines[3], 3, 40, "failed, giving up")
    assert lines[4:] == ["gave up after 3 attempts"]
    assert_gone(amqpd_broker, "retry_backoff.work", "retry_backoff.delay.20")


def test_retry_backoff_takes_the_url_from_amqp_url(amqpd_broker: BrokerThread) -> None:
    lines = run("retry_backoff.py", "--failures", "0", env_url=amqpd_broker.url)

    assert lines == [
        "queued job resize-photo-42",
        "attempt 1: resize-photo-42 succeeded",
        "done: succeeded at attempt 1",
    ]


def test_dead_letter_prints_x_death_of_a_rejected_and_an_expired_message(
    amqpd_broker: BrokerThread,
) -> None:
    lines = run("dead_letter.py", "--ttl", "100", env_url=amqpd_broker.url)

    # the time of death is a timestamp printed as HH:MM:SS
    shown = [re.sub(r"time=\d\d:\d\d:\d\d\b", "time=T", line) for line in lines]
    assert shown == [
        "rejected 'order-1 (bad)' without requeue",
        "published 'order-2 (late)' with expiration 100 ms",
        "dead-lettered 'order-1 (bad)'",
        "  x-death: reason=rejected queue=dead_letter.orders count=1 exchange='' "
        "routing-keys=dead_letter.orders time=T",
        "  x-first-death: reason=rejected queue=dead_letter.orders; "
        "expiration property: None",
        "dead-lettered 'order-2 (late)'",
        "  x-death: reason=expired queue=dead_letter.orders count=1 exchange='' "
        "routing-keys=dead_letter.orders time=T original-expiration=100",
        "  x-first-death: reason=expired queue=dead_letter.orders; "
        "expiration property: None",
    ]
    assert_gone(amqpd_broker, "dead_letter.orders", "dead_letter.parking")
