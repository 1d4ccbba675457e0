"""Kill the broker with SIGKILL under load, again and again, and check that
no confirmed message is lost, none is duplicated and no acked one returns.

Each cycle starts ``python -m amqpd`` on the same data directory, drains
and checks what the previous cycle left, then runs publishers (their own
connections, publisher confirms, persistent messages ``publisher-id:seq``)
and a consumer that acks some deliveries, rejects a few back to the queue
and keeps the rest unacked, and kills the broker at a random moment.

The topology is declared once, before the first cycle, and never again: a
lost exchange, queue argument or binding shows in the next check.

What the check demands of each queue after a restart:

- every confirmed message that was not acked is there exactly once, and a
  message whose publish was in flight at the kill at most once;
- every message is marked redelivered (deliveries are not journaled);
- per publisher, messages keep their publish order (in the priority queue,
  per publisher and priority, and the priorities do not rise);
- an ack is "settled" once a persistent message the consumer published on
  the same channel after it was confirmed (the journal is one ordered log);
  a settled ack never comes back, an unsettled one (sent in the last moment
  before the kill) may come back once;
- nothing from an earlier cycle comes back (the checks ack everything).

The test suite (tests/integration/test_crash_recovery.py) runs short loops;
run a long one by hand (see docs/durability.md)::

    python tools/crashloop.py --cycles 200 --duration 600 --seed 7
"""

from __future__ import annotations

import argparse
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pika
import pika.exceptions

READY = re.compile(r"amqpd ready: listening on 127\.0\.0\.1:(\d+)")
START_TIMEOUT = 20.0
STOP_TIMEOUT = 10.0

EXCHANGE = "crash.direct"
ROUTING_KEY = "crash"
FIFO = "crash.fifo"
PRIORITY = "crash.priority"
TTL = "crash.ttl"
MARKS = "crash.marks"
MAX_PRIORITY = 5
QUEUES: dict[str, dict[str, Any]] = {
    FIFO: {},
    PRIORITY: {"x-max-priority": MAX_PRIORITY},
    TTL: {"x-message-ttl": 3_600_000},
}
MARKS_ARGUMENTS = {"x-max-length": 1}

ACK, REJECT = 0.75, 0.1  # the consumer's odds; the rest stay unacked
SETTLE_EVERY = 8  # acks between two settling marks
MAX_MESSAGES = 100_000  # per publisher per cycle, a bound on the loop


class CrashCheckFailed(AssertionError):
    """What a restart brought back breaks a durability promise."""


def priority_of(seq: int) -> int:
    """The priority a publisher gives message ``seq`` (0..MAX_PRIORITY)."""
    return seq % (MAX_PRIORITY + 1)


class BrokerProcess:
    """``python -m amqpd`` on 127.0.0.1, port 0, its stderr read on a thread."""

    def __init__(
        self,
        data_dir: Path,
        config: Path | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        argv = [sys.executable, "-m", "amqpd", "--port", "0", "--bind", "127.0.0.1"]
        argv += ["--data-dir", str(data_dir)]
        if config is not None:
            argv += ["--config", str(config)]
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        self.lines: list[str] = []
        self.port = 0
        self._ready = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line.rstrip("\n"))
            match = READY.search(line)
            if match:
                self.port = int(match.group(1))
                self._ready.set()
        self.proc.stderr.close()
        self._ready.set()

    def wait_ready(self, timeout: float = START_TIMEOUT) -> int:
        """The port, once the ready line is out; CrashCheckFailed if the
        broker exits or stays silent."""
        self._ready.wait(timeout)
        if not self.port:
            self.kill()
            raise CrashCheckFailed(f"broker did not start: {self.tail()}")
        return self.port

    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/"

    def kill(self) -> None:
        """SIGKILL (if still running) and reap."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(STOP_TIMEOUT)
        self._reader.join(STOP_TIMEOUT)

    def stop(self) -> int:
        """SIGTERM, then the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(STOP_TIMEOUT)
        self._reader.join(STOP_TIMEOUT)
        return code

    def tail(self, count: int = 15) -> str:
        return "\n".join(self.lines[-count:])


def connect(port: int) -> pika.BlockingConnection:
    params = pika.ConnectionParameters(
        "127.0.0.1", port, blocked_connection_timeout=10, socket_timeout=5
    )
    return pika.BlockingConnection(params)


def abandon(conn: pika.BlockingConnection) -> None:
    """Let a connection to a killed broker notice it and free its socket."""
    deadline = time.monotonic() + STOP_TIMEOUT
    while conn.is_open and time.monotonic() < deadline:
        try:
            conn.process_data_events(0.05)
        except (pika.exceptions.AMQPError, OSError):
            return


def declare_topology(port: int) -> None:
    """The durable exchange, queues and bindings the cycles rely on."""
    conn = connect(port)
    try:
        ch = conn.channel()
        ch.exchange_declare(EXCHANGE, "direct", durable=True)
        for name, arguments in QUEUES.items():
            ch.queue_declare(name, durable=True, arguments=arguments)
            ch.queue_bind(name, EXCHANGE, ROUTING_KEY)
        ch.queue_declare(MARKS, durable=True, arguments=MARKS_ARGUMENTS)
    finally:
        conn.close()


# one cycle's load


@dataclass
class PublisherLog:
    """What one publisher knows: seqs 1..confirmed are confirmed, ``sent``
    is confirmed or was in flight at the kill."""

    pid: str
    confirmed: int = 0
    sent: int = 0
    error: str | None = None


@dataclass
class ConsumerLog:
    """What the consumer did with the FIFO queue's deliveries."""

    settled: set[bytes] = field(default_factory=set)  # acks known durable
    unsettled: set[bytes] = field(default_factory=set)  # acks maybe not
    held: set[bytes] = field(default_factory=set)  # delivered, never acked
    deliveries: int = 0
    rejects: int = 0
    error: str | None = None


@dataclass
class CycleLoad:
    publishers: list[PublisherLog]
    consumer: ConsumerLog
    killed_after: float = 0.0


class Load:
    """Publisher and consumer threads against one broker until ``killed``."""

    def __init__(self, port: int, cycle: int, publishers: int, seed: int) -> None:
        self.port = port
        self.killed = threading.Event()
        self.deadline = time.monotonic() + 30.0  # if nobody kills the broker
        self.publishers = [PublisherLog(f"c{cycle}p{i}") for i in range(publishers)]
        self.consumer = ConsumerLog()
        self._rng = random.Random(f"{seed}/{cycle}/consumer")
        self._threads = [
            threading.Thread(target=self._guard, args=(self._publish, log), daemon=True)
            for log in self.publishers
        ]
        self._threads.append(
            threading.Thread(
                target=self._guard, args=(self._consume, self.consumer), daemon=True
            )
        )

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def join(self) -> None:
        for thread in self._threads:
            thread.join(STOP_TIMEOUT)
            if thread.is_alive():
                raise CrashCheckFailed("a load thread did not stop after the kill")

    def _running(self) -> bool:
        return not self.killed.is_set() and time.monotonic() < self.deadline

    def _guard(
        self, body: Callable[[Any], None], log: PublisherLog | ConsumerLog
    ) -> None:
        """Run ``body``; an error before the kill is a failure, after it
        the expected end."""
        try:
            body(log)
        except (pika.exceptions.AMQPError, OSError) as exc:
            if not self.killed.is_set():
                log.error = f"{type(exc).__name__}: {exc}"

    def _publish(self, log: PublisherLog) -> None:
        conn = connect(self.port)
        ch = conn.channel()
        ch.confirm_delivery()
        while self._running() and log.sent < MAX_MESSAGES:
            seq = log.sent + 1
            props = pika.BasicProperties(delivery_mode=2, priority=priority_of(seq))
            log.sent = seq
            # returns once confirmed; raises on a nack or a return
            ch.basic_publish(
                EXCHANGE, ROUTING_KEY, f"{log.pid}:{seq}".encode(), props,
                mandatory=True,
            )  # fmt: skip
            log.confirmed = seq
        conn.close()

    def _consume(self, log: ConsumerLog) -> None:
        conn = connect(self.port)
        ch = conn.channel()
        ch.confirm_delivery()  # for the settling marks
        ch.basic_qos(prefetch_count=1000)
        pending: list[bytes] = []
        for method, _props, body in ch.consume(FIFO, inactivity_timeout=0.05):
            if not self._running():
                break
            if method is None:
                self._settle(ch, log, pending)
                continue
            log.deliveries += 1
            roll = self._rng.random()
            if roll < ACK:
                ch.basic_ack(method.delivery_tag)
                log.held.discard(body)
                log.unsettled.add(body)
                pending.append(body)
            elif roll < ACK + REJECT:
                ch.basic_reject(method.delivery_tag, requeue=True)
                log.held.discard(body)
                log.rejects += 1
            else:
                log.held.add(body)
            if len(pending) >= SETTLE_EVERY:
                self._settle(ch, log, pending)
        conn.close()

    def _settle(
        self, ch: pika.adapters.blocking_connection.BlockingChannel,
        log: ConsumerLog, pending: list[bytes],
    ) -> None:  # fmt: skip
        """Publish a persistent mark and wait for its confirm: every ack sent
        before it on this channel is then in the journal on disk."""
        if not pending:
            return
        ch.basic_publish("", MARKS, b"mark", pika.BasicProperties(delivery_mode=2))
        log.settled.update(pending)
        log.unsettled.difference_update(pending)
        pending.clear()


def run_load(
    broker: BrokerProcess, cycle: int, rng: random.Random, publishers: int,
    kill_after: tuple[float, float], seed: int,
) -> CycleLoad:  # fmt: skip
    """Start the load, SIGKILL the broker after a random delay, collect."""
    load = Load(broker.port, cycle, publishers, seed)
    delay = rng.uniform(*kill_after)
    started = time.monotonic()
    load.start()
    time.sleep(delay)
    load.killed.set()
    broker.kill()
    load.join()
    result = CycleLoad(load.publishers, load.consumer, time.monotonic() - started)
    errors = [p.error for p in load.publishers if p.error]
    if load.consumer.error:
        errors.append(load.consumer.error)
    if errors:
        raise CrashCheckFailed(f"cycle {cycle}: client errors before the kill: "
                               f"{errors}\nbroker said:\n{broker.tail()}")  # fmt: skip
    return result


# the check after a restart


def drain(port: int) -> dict[str, list[tuple[bytes, bool]]]:
    """Check the topology, take every ready message of every queue (body,
    redelivered) and ack them all, settled by a confirmed mark."""
    conn = connect(port)
    try:
        ch = conn.channel()
        ch.exchange_declare(EXCHANGE, passive=True)
        ch.exchange_declare(EXCHANGE, "direct", durable=True)  # 406 if changed
        found: dict[str, list[tuple[bytes, bool]]] = {}
        for name, arguments in QUEUES.items():
            count = ch.queue_declare(name, passive=True).method.message_count
            # the same arguments, or 406 PRECONDITION_FAILED
            ch.queue_declare(name, durable=True, arguments=arguments)
            found[name] = _take(ch, name, count)
        ch.confirm_delivery()
        ch.basic_publish("", MARKS, b"mark", pika.BasicProperties(delivery_mode=2))
        for name in QUEUES:
            left = ch.queue_declare(name, passive=True).method.message_count
            if left:
                raise CrashCheckFailed(f"{name}: {left} messages left after draining")
        return found
    finally:
        if conn.is_open:
            conn.close()


def _take(
    ch: pika.adapters.blocking_connection.BlockingChannel, queue: str, count: int
) -> list[tuple[bytes, bool]]:
    taken: list[tuple[bytes, bool]] = []
    if not count:
        return taken
    last_tag = 0
    for method, _props, body in ch.consume(queue, inactivity_timeout=5.0):
        if method is None:
            raise CrashCheckFailed(f"{queue}: {len(taken)} of {count} delivered")
        taken.append((body, bool(method.redelivered)))
        last_tag = method.delivery_tag
        if len(taken) == count:
            break
    ch.basic_ack(last_tag, multiple=True)
    ch.cancel()
    return taken


def check(found: dict[str, list[tuple[bytes, bool]]], load: CycleLoad) -> list[str]:
    """Every broken promise in what came back after a cycle's kill."""
    problems: list[str] = []
    logs = {p.pid: p for p in load.publishers}
    consumer = load.consumer
    for queue, items in found.items():
        bodies = [body for body, _ in items]
        for body, times in Counter(bodies).items():
            if times > 1:
                problems.append(f"{queue}: {body!r} came back {times} times")
        not_redelivered = [body for body, again in items if not again]
        if not_redelivered:
            problems.append(
                f"{queue}: {len(not_redelivered)} recovered messages not marked "
                f"redelivered, first {not_redelivered[0]!r}"
            )
        seen: dict[str, list[int]] = {pid: [] for pid in logs}
        for body in bodies:
            pid, _, seq = body.decode(errors="replace").partition(":")
            if pid not in logs or not seq.isdigit():
                problems.append(f"{queue}: {body!r} is not from the last cycle")
                continue
            seen[pid].append(int(seq))
        if queue == PRIORITY:
            problems += _check_priority_order(queue, items)
        for pid, seqs in seen.items():
            problems += _check_publisher(queue, logs[pid], seqs, consumer)
    return problems


def _check_publisher(
    queue: str, log: PublisherLog, seqs: list[int], consumer: ConsumerLog
) -> list[str]:
    problems = []
    present = set(seqs)
    acks = queue == FIFO
    for seq in range(1, log.confirmed + 1):
        body = f"{log.pid}:{seq}".encode()
        if seq in present:
            if acks and body in consumer.settled:
                problems.append(f"{queue}: settled ack of {body!r} was undone")
        elif not (acks and (body in consumer.settled or body in consumer.unsettled)):
            problems.append(f"{queue}: confirmed {body!r} is lost")
    beyond = [s for s in present if s > log.sent]
    if beyond:
        problems.append(f"{queue}: {log.pid} never sent seq {min(beyond)}")
    groups: dict[int, list[int]] = {}
    for seq in seqs:
        key = priority_of(seq) if queue == PRIORITY else 0
        groups.setdefault(key, []).append(seq)
    for group in groups.values():
        if group != sorted(group):
            problems.append(f"{queue}: {log.pid} out of order: {group[:20]}")
    return problems


def _check_priority_order(queue: str, items: list[tuple[bytes, bool]]) -> list[str]:
    last = MAX_PRIORITY
    for body, _ in items:
        seq = body.decode(errors="replace").rpartition(":")[2]
        if not seq.isdigit():
            continue
        prio = priority_of(int(seq))
        if prio > last:
            return [f"{queue}: priority {prio} ({body!r}) after priority {last}"]
        last = prio
    return []


# the loop


@dataclass
class LoopStats:
    cycles: int = 0
    confirmed: int = 0
    recovered: int = 0
    settled: int = 0
    unsettled_back: int = 0
    start_seconds: list[float] = field(default_factory=list)


def start_broker(
    data_dir: Path, config: Path | None, env: dict[str, str] | None, stats: LoopStats
) -> BrokerProcess:
    began = time.monotonic()
    broker = BrokerProcess(data_dir, config, env)
    broker.wait_ready()
    stats.start_seconds.append(time.monotonic() - began)
    return broker


def crash_loop(
    data_dir: Path,
    *,
    cycles: int,
    seed: int,
    duration: float = 3600.0,
    publishers: int = 3,
    kill_after: tuple[float, float] = (0.3, 1.0),
    config: Path | None = None,
    env: dict[str, str] | None = None,
    report: Callable[[str], None] = print,
) -> LoopStats:
    """Declare the topology, then kill-restart-check ``cycles`` times (or
    until ``duration`` seconds have passed); CrashCheckFailed on the first
    broken promise. Leaves the broker stopped cleanly."""
    rng = random.Random(seed)
    stats = LoopStats()
    broker = start_broker(data_dir, config, env, stats)
    try:
        declare_topology(broker.port)
        # stored for sure: a clean stop flushes the definitions store
        code = broker.stop()
        if code != 0:
            raise CrashCheckFailed(f"clean stop exited {code}: {broker.tail()}")
        ends = time.monotonic() + duration
        load: CycleLoad | None = None
        for cycle in range(1, cycles + 1):
            if time.monotonic() >= ends:
                break
            broker = start_broker(data_dir, config, env, stats)
            if load is not None:
                _verify(broker, load, cycle - 1, seed, stats)
            load = run_load(broker, cycle, rng, publishers, kill_after, seed)
            stats.cycles += 1
            stats.confirmed += sum(p.confirmed for p in load.publishers)
            stats.settled += len(load.consumer.settled)
            report(
                f"cycle {cycle}: killed after {load.killed_after:.2f}s; confirmed "
                f"{sum(p.confirmed for p in load.publishers)}, delivered "
                f"{load.consumer.deliveries}, acks settled "
                f"{len(load.consumer.settled)} unsettled "
                f"{len(load.consumer.unsettled)}, held {len(load.consumer.held)}"
            )
        broker = start_broker(data_dir, config, env, stats)
        if load is not None:
            _verify(broker, load, stats.cycles, seed, stats)
        _probe(broker.port)
        code = broker.stop()
        if code != 0:
            raise CrashCheckFailed(f"clean stop exited {code}: {broker.tail()}")
        return stats
    finally:
        broker.kill()


def _verify(
    broker: BrokerProcess, load: CycleLoad, cycle: int, seed: int, stats: LoopStats
) -> None:
    try:
        found = drain(broker.port)
    except pika.exceptions.AMQPError as exc:
        raise CrashCheckFailed(
            f"seed {seed}, after cycle {cycle}: {type(exc).__name__}: {exc}\n"
            f"broker said:\n{broker.tail()}"
        ) from None
    problems = check(found, load)
    if problems:
        shown = "\n  ".join(problems[:20])
        raise CrashCheckFailed(
            f"seed {seed}, after cycle {cycle}: {len(problems)} problems:\n  {shown}"
        )
    stats.recovered += sum(len(items) for items in found.values())
    fifo = {body for body, _ in found[FIFO]}
    stats.unsettled_back += len(fifo & load.consumer.unsettled)


def _probe(port: int) -> None:
    """The bindings route: one message through the exchange reaches every
    queue."""
    conn = connect(port)
    try:
        ch = conn.channel()
        ch.confirm_delivery()
        ch.basic_publish(
            EXCHANGE, ROUTING_KEY, b"probe", pika.BasicProperties(delivery_mode=2),
            mandatory=True,
        )  # fmt: skip
        for name in QUEUES:
            method, _props, body = ch.basic_get(name, auto_ack=True)
            if method is None or body != b"probe":
                raise CrashCheckFailed(f"{name}: the probe did not arrive ({body!r})")
    finally:
        conn.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="SIGKILL amqpd under load, restart, check; repeat."
    )
    parser.add_argument("--cycles", type=int, default=100, help="default 100")
    parser.add_argument(
        "--duration", type=float, default=600.0, help="seconds at most (default 600)"
    )
    parser.add_argument("--seed", type=int, help="default: random, printed")
    parser.add_argument("--publishers", type=int, default=3)
    parser.add_argument(
        "--kill-after", type=float, nargs=2, default=(0.3, 1.5), metavar=("MIN", "MAX"),
        help="seconds of load before the kill (default 0.3 1.5)",
    )  # fmt: skip
    parser.add_argument("--config", type=Path, help="an amqpd TOML config file")
    parser.add_argument(
        "--data-dir", type=Path, help="default: a temporary directory, removed"
    )
    args = parser.parse_args(argv)
    seed = args.seed
    if seed is None:
        seed = random.SystemRandom().randrange(2**32)
    print(f"crash loop seed {seed}", flush=True)
    temporary = args.data_dir is None
    data_dir = args.data_dir or Path(tempfile.mkdtemp(prefix="amqpd-crash-"))
    try:
        stats = crash_loop(
            data_dir, cycles=args.cycles, seed=seed, duration=args.duration,
            publishers=args.publishers, kill_after=tuple(args.kill_after),
            config=args.config, env=dict(os.environ),
            report=lambda line: print(line, flush=True),
        )  # fmt: skip
    except CrashCheckFailed as exc:
        print(f"FAILED: {exc}", flush=True)
        print(f"data directory kept: {data_dir}", flush=True)
        return 1
    starts = sorted(stats.start_seconds)
    print(
        f"passed: {stats.cycles} cycles, {stats.confirmed} confirmed, "
        f"{stats.recovered} recovered, {stats.settled} settled acks, "
        f"{stats.unsettled_back} unsettled acks came back; start "
        f"median {starts[len(starts) // 2]:.2f}s max {starts[-1]:.2f}s"
    )
    if temporary:
        shutil.rmtree(data_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
