"""Every program in examples/ run against a real broker, as a user runs them.

Receivers start first and say "ready" once subscribed; then the sender runs.
Each program stops by itself (a message count or a quiet time); the tests
still kill every child by PID at the end.
"""

from __future__ import annotations

import os
import queue
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from amqpd.testing import BrokerThread

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
TIMEOUT = 20.0


class Program:
    """An example running in the background, its stdout read on a thread."""

    def __init__(self, script: str, args: list[str], env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(EXAMPLES / script), *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        self.lines: list[str] = []
        self._fresh: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._fresh.put(line.rstrip("\n"))
        self._fresh.put(None)

    def wait_for(self, text: str, timeout: float = TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                pytest.fail(f"no {text!r} within {timeout}s: {self.lines}")
            try:
                line = self._fresh.get(timeout=remaining)
            except queue.Empty:
                continue
            if line is None:
                pytest.fail(f"exited before {text!r}: {self.lines} {self.stderr()}")
            self.lines.append(line)
            if line.endswith(text):
                return

    def finish(self, timeout: float = TIMEOUT) -> list[str]:
        """Every stdout line, once the program stopped by itself with 0."""
        code = self.proc.wait(timeout=timeout)
        self._reader.join(timeout=timeout)
        while not self._fresh.empty():
            line = self._fresh.get_nowait()
            if line is not None:
                self.lines.append(line)
        assert code == 0, self.stderr()
        return self.lines

    def stderr(self) -> str:
        if self.proc.poll() is None or self.proc.stderr is None:
            return ""
        return self.proc.stderr.read()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=TIMEOUT)
        for pipe in (self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                pipe.close()


class Examples:
    """Starts examples against one broker and kills leftovers at the end."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.env = {k: v for k, v in os.environ.items() if k != "AMQP_URL"}
        self.started: list[Program] = []

    def start(self, script: str, *args: str) -> Program:
        program = Program(script, [self.url, *args], self.env)
        self.started.append(program)
        return program

    def run(
        self, script: str, *args: str, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        argv = [*args] if env is not None else [self.url, *args]
        proc = subprocess.Popen(
            [sys.executable, str(EXAMPLES / script), *argv],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env if env is not None else self.env,
        )
        try:
            out, err = proc.communicate(timeout=TIMEOUT)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate(timeout=TIMEOUT)
        return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


@pytest.fixture
def examples(amqpd_broker: BrokerThread) -> Iterator[Examples]:
    runner = Examples(amqpd_broker.url)
    try:
        yield runner
    finally:
        for program in runner.started:
            program.kill()


def ok(result: subprocess.CompletedProcess[str]) -> list[str]:
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


# hello world


def test_hello_world_receiver_gets_the_message_send_left(examples: Examples) -> None:
    assert ok(examples.run("hello_world/send.py", "--text", "hi there")) == [
        "sent 'hi there'"
    ]

    lines = ok(examples.run("hello_world/receive.py", "--count", "1"))

    assert lines == ["ready", "received 'hi there'", "done after 1 message(s)"]


def test_hello_world_receiver_started_first_gets_the_message(
    examples: Examples,
) -> None:
    receiver = examples.start("hello_world/receive.py", "--count", "1")
    receiver.wait_for("ready")

    ok(examples.run("hello_world/send.py"))

    assert receiver.finish()[1:] == [
        "received 'Hello, world!'",
        "done after 1 message(s)",
    ]


def test_hello_world_takes_the_url_from_amqp_url(examples: Examples) -> None:
    env = dict(examples.env, AMQP_URL=examples.url)

    ok(examples.run("hello_world/send.py", "--text", "via env", env=env))
    lines = ok(examples.run("hello_world/receive.py", "--count", "1", env=env))

    assert lines[1] == "received 'via env'"


def test_receiver_stops_by_itself_when_nothing_arrives(examples: Examples) -> None:
    started = time.monotonic()
    lines = ok(examples.run("hello_world/receive.py", "--idle", "0.3"))

    assert lines == ["ready", "done after 0 message(s)"]
    assert time.monotonic() - started < 5


# work queue


def test_work_queue_worker_does_queued_tasks_in_order(examples: Examples) -> None:
    queued = ok(examples.run("work_queue/new_task.py"))
    assert len(queued) == 4

    lines = ok(examples.run("work_queue/worker.py", "--name", "w", "--count", "4"))

    assert lines == [
        "w ready",
        "w finished resize-photo (300 ms)",
        "w finished send-invoice (50 ms)",
        "w finished index-page (50 ms)",
        "w finished ping (0 ms)",
        "w done after 4 task(s)",
    ]


def test_work_queue_busy_worker_gets_no_more_tasks_fair_dispatch(
    examples: Examples,
) -> None:
    workers = [
        examples.start("work_queue/worker.py", "--name", name, "--idle", "1.5")
        for name in ("a", "b")
    ]
    for worker, name in zip(workers, ("a", "b"), strict=True):
        worker.wait_for(f"{name} ready")

    quick = [f"--task=quick-{n}:0" for n in range(1, 6)]
    ok(examples.run("work_queue/new_task.py", "--task=slow:800", *quick))

    done = {name: w.finish()[1:-1] for name, w in zip("ab", workers, strict=True)}
    slow_worker = "a" if any("slow" in line for line in done["a"]) else "b"
    other = "b" if slow_worker == "a" else "a"
    # with prefetch 1 the worker busy on the slow task holds only that one;
    # the other worker does every quick task, in queue order
    assert done[slow_worker] == [f"{slow_worker} finished slow (800 ms)"]
    assert done[other] == [f"{other} finished quick-{n} (0 ms)" for n in range(1, 6)]


# publish/subscribe


def test_publish_subscribe_every_subscriber_hears_every_message(
    examples: Examples,
) -> None:
    subscribers = [
        examples.start("publish_subscribe/subscribe.py", "--count", "2")
        for _ in range(2)
    ]
    for subscriber in subscribers:
        subscriber.wait_for("ready")

    ok(examples.run("publish_subscribe/publish.py", "--message=one", "--message=two"))

    for subscriber in subscribers:
        assert subscriber.finish()[1:] == [
            "heard 'one'",
            "heard 'two'",
            "done after 2 message(s)",
        ]


# routing


def test_routing_delivers_only_the_severities_bound(examples: Examples) -> None:
    errors = examples.start("routing/subscribe.py", "--severity=error", "--count=1")
    chatter = examples.start(
        "routing/subscribe.py", "--severity=info", "--severity=warning", "--count=3"
    )
    errors.wait_for("ready")
    chatter.wait_for("ready")

    ok(
        examples.run(
            "routing/publish.py", "--log=info:cache warmed", "--log=error:disk failed",
            "--log=warning:disk 90% full", "--log=debug:ignored",
            "--log=info:request served",
        )
    )  # fmt: skip

    assert errors.finish()[1:] == ["[error] disk failed", "done after 1 message(s)"]
    assert chatter.finish()[1:] == [
        "[info] cache warmed",
        "[warning] disk 90% full",
        "[info] request served",
        "done after 3 message(s)",
    ]


# topics


def test_topics_deliver_by_pattern_once_per_queue(examples: Examples) -> None:
    europe = examples.start(
        "topics/subscribe.py", "--pattern=orders.*.created", "--pattern=*.eu.#",
        "--count=2",
    )  # fmt: skip
    orders = examples.start("topics/subscribe.py", "--pattern=orders.#", "--count=2")
    everything = examples.start("topics/subscribe.py", "--pattern=#", "--count=3")
    for subscriber in (europe, orders, everything):
        subscriber.wait_for("ready")

    ok(examples.run("topics/publish.py"))

    assert europe.finish()[1:-1] == [
        "orders.eu.created: order 1001",
        "users.eu.created: user ada",
    ]
    assert orders.finish()[1:-1] == [
        "orders.eu.created: order 1001",
        "orders.us.cancelled: order 1002",
    ]
    assert everything.finish()[1:-1] == [
        "orders.eu.created: order 1001",
        "orders.us.cancelled: order 1002",
        "users.eu.created: user ada",
    ]


# rpc


def test_rpc_client_gets_each_answer_matched_to_its_question(
    examples: Examples,
) -> None:
    server = examples.start("rpc/server.py", "--count", "4")
    server.wait_for("ready")

    lines = ok(
        examples.run(
            "rpc/client.py", "--number=360", "--number=9973",
            "--number=600851475143", "--number=twelve",
        )
    )  # fmt: skip

    assert lines == [
        "360 = 2 2 2 3 3 5",
        "9973 = 9973",
        "600851475143 = 71 839 1471 6857",
        "twelve = error: expected an integer from 2 to 1000000000000, got 'twelve'",
    ]
    assert server.finish()[-1] == "done after 4 request(s)"


def test_rpc_client_without_a_server_gives_up_with_status_1(
    examples: Examples,
) -> None:
    result = examples.run("rpc/client.py", "--number=10", "--timeout=0.3")

    assert result.returncode == 1
    assert result.stdout.splitlines() == ["10: no answer within 0.3 s"]


# publisher confirms


def test_publisher_confirms_per_message_and_in_batches(examples: Examples) -> None:
    lines = ok(
        examples.run(
            "publisher_confirms/confirms.py", "--messages=300", "--batch-size=40"
        )
    )

    assert len(lines) == 3
    assert re.fullmatch(
        r"per-message: 300 messages confirmed in \d+\.\d{3} s", lines[0]
    )
    assert re.fullmatch(
        r"batch of 40: 300 messages confirmed in \d+\.\d{3} s", lines[1]
    )
    assert lines[2] == "queue held 600 messages"


def test_publisher_confirms_batch_mode_alone(examples: Examples) -> None:
    lines = ok(
        examples.run(
            "publisher_confirms/confirms.py", "--messages=7", "--batch-size=3",
            "--mode=batch",
        )
    )  # fmt: skip

    assert re.fullmatch(r"batch of 3: 7 messages confirmed in \d+\.\d{3} s", lines[0])
    assert lines[1] == "queue held 7 messages"
