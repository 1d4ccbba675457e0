"""One repeat of one scenario: a ``Run``, its cleanup, and its record.

A ``Run`` gives a scenario unique names, an admin connection for topology,
a fleet of worker processes and broker readings; whatever it declared it
deletes when the repeat ends, even after a failure. ``session`` decides
which repeat runs when, on which broker.
"""

from __future__ import annotations

import datetime
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from amqpd.bench.client import BenchConnection, BenchError, BrokerUrl
from amqpd.bench.fleet import Fleet
from amqpd.bench.procstat import (
    ProcSample,
    cpu_percent,
    load_average,
    machine,
    sample,
    wait_quiet,
)
from amqpd.bench.results import RunRecord, ScenarioResult

# Duration-bound publishers get a count limit no run reaches.
UNBOUNDED = 10**12


@dataclass(frozen=True)
class Options:
    """Everything the command line decides about a bench run."""

    url: str
    duration: float = 5.0
    size: int | None = None
    prefetch: int = 1000
    confirm_window: int = 1000
    rate: float | None = None
    broker_pid: int | None = None
    repeat: int = 3
    backlog: int = 1_000_000
    connections: int = 500
    queues: int = 10_000
    fanout: int = 10
    # a scenario that cannot finish within this many seconds is cut short
    phase_limit: float = 300.0
    # seconds of unrecorded flow on each broker before a flow scenario's
    # first repeat; 0 skips the warm-up
    warmup: float = 1.0
    # before each run every broker must use under quiet_pct of a core for
    # quiet_window seconds; the bench waits at most quiet_limit for that
    quiet_pct: float = 10.0
    quiet_window: float = 0.5
    quiet_limit: float = 20.0


@dataclass
class Outcome:
    """What one repeat of a scenario measured and counted."""

    figures: dict[str, float]
    counts: dict[str, int]
    counts_ok: bool


class Run:
    """One repeat of one scenario."""

    def __init__(self, options: Options, scenario: str) -> None:
        self.options = options
        self.url = BrokerUrl.parse(options.url)
        self.scenario = scenario
        self.token = uuid.uuid4().hex[:10]
        self.fleet = Fleet()
        self.settings: dict[str, Any] = {}
        self.queues: list[str] = []
        self.exchanges: list[str] = []
        self._admin: BenchConnection | None = None

    def name(self, suffix: str = "") -> str:
        """A queue or exchange name no other run uses."""
        base = f"amqpd-bench-{self.scenario}-{self.token}"
        return f"{base}-{suffix}" if suffix else base

    @property
    def admin(self) -> BenchConnection:
        """The parent's own connection (channel 1) for topology."""
        if self._admin is None:
            self._admin = BenchConnection.open(self.url)
            self._admin.open_channel(1)
        return self._admin

    def declare_queue(self, name: str, *, durable: bool = False) -> str:
        """Declare a queue that is deleted when the run ends."""
        self.queues.append(name)
        self.admin.declare_queue(1, name, durable=durable)
        return name

    def declare_exchange(self, name: str, kind: str) -> str:
        """Declare an exchange that is deleted when the run ends."""
        self.exchanges.append(name)
        self.admin.declare_exchange(1, name, kind)
        return name

    def queue_depth(self, name: str, want: int, timeout: float = 10.0) -> int:
        """Ready messages in a queue, polled until it reaches ``want``.

        A broker may route published messages to a queue a moment after it
        answered the publisher's channel.close, so one reading can be low.
        """
        give_up = time.monotonic() + timeout
        while True:
            depth, _consumers = self.admin.declare_queue(1, name, passive=True)
            if depth >= want or time.monotonic() > give_up:
                return depth
            time.sleep(0.05)

    def broker(self) -> ProcSample | None:
        """CPU and RSS of the broker process, when its PID was given."""
        pid = self.options.broker_pid
        return sample(pid) if pid else None

    def broker_at_rest(self) -> ProcSample | None:
        """The broker's reading once it went quiet, to weigh its memory.

        Right after the last message or declare the broker may still be
        collecting garbage or paging; its RSS settles once it idles.
        """
        pid = self.options.broker_pid
        if not pid:
            return None
        options = self.options
        wait_quiet(
            [pid],
            below_pct=options.quiet_pct,
            window=options.quiet_window,
            limit=options.quiet_limit,
        )
        return sample(pid)

    def close(self) -> None:
        """Stop the workers, delete what the run declared, disconnect."""
        self.fleet.close()
        if not self.queues and not self.exchanges:
            if self._admin is not None:
                self._admin.close()
            return
        for kind, names in (("queue", self.queues), ("exchange", self.exchanges)):
            for name in names:
                self._delete(kind, name)
        if self._admin is not None:
            self._admin.close()
            self._admin = None

    def _delete(self, kind: str, name: str) -> None:
        # a failed run may have left the admin channel closed: reopen once
        for _attempt in range(2):
            try:
                if kind == "queue":
                    self.admin.delete_queue(1, name)
                else:
                    self.admin.delete_exchange(1, name)
                return
            except BenchError:
                if self._admin is not None:
                    self._admin.close()
                self._admin = None
            except OSError:
                self._admin = None


def broker_figures(
    before: ProcSample | None, after: ProcSample | None
) -> dict[str, float]:
    """Broker CPU (percent of a core) and RSS (MiB) over a measured phase."""
    if before is None or after is None:
        return {}
    return {
        "broker_cpu_pct": cpu_percent(before, after),
        "broker_rss_mib": after.rss_bytes / 2**20,
    }


@dataclass(frozen=True)
class Scenario:
    """A named benchmark and the function that runs one repeat of it."""

    name: str
    describe: str
    run: Callable[[Run], Outcome]
    needs_broker: bool = True
    # a timed flow: a short unrecorded run first warms the broker up
    warmup: bool = False
    # weighs the broker's memory: best on a freshly started broker process
    fresh_broker: bool = False


@dataclass
class Progress:
    """Where to say what is happening (stderr for the CLI, nothing in tests)."""

    say: Callable[[str], None] = field(default=lambda _text: None)


def run_once(scenario: Scenario, options: Options) -> tuple[RunRecord, dict[str, Any]]:
    """Run one repeat of a scenario; return its record and its settings.

    A failure becomes a record with the error, so that one bad repeat does
    not end the bench; whatever the run declared is deleted either way.
    """
    run = Run(options, scenario.name)
    try:
        outcome = scenario.run(run)
    except Exception as exc:  # one failed repeat must not end the bench
        record = RunRecord({}, {}, False, load_average(), error=str(exc))
    else:
        record = RunRecord(
            outcome.figures, outcome.counts, outcome.counts_ok, load_average()
        )
    finally:
        run.close()
    return record, run.settings


def new_result(scenario: Scenario, options: Options, target: str) -> ScenarioResult:
    """An empty result for the repeats of ``scenario`` on one target."""
    return ScenarioResult(
        scenario=scenario.name,
        broker=BrokerUrl.parse(options.url).redacted(),
        settings={},
        target=target,
        machine=machine(),
        started=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    )
