"""A bench session: scenarios run on one or more brokers, alternating them.

Each target is a labelled broker URL, with the broker's PID when known. For
every scenario the session first gives each target a short unrecorded
warm-up (timed flows only), then runs repeat 1 on every target in turn,
then repeat 2 on every target, and so on: A, B, A, B. Whatever the shared
machine does meanwhile falls on both brokers alike instead of on whichever
ran during a noisy minute.

Before each run, every target's broker must have gone quiet (see
``procstat.wait_quiet``), so that one broker's leftover work (deleting the
last run's queues, compacting its store) is not measured against the other.
Before each repeat of a scenario that weighs memory, a restart command (when
given) restarts the target's broker, so that the figure comes from a fresh
process rather than one whose allocator kept an earlier scenario's memory.
"""

from __future__ import annotations

import dataclasses
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from amqpd.bench.client import BenchConnection, BenchError, BrokerUrl
from amqpd.bench.procstat import wait_quiet
from amqpd.bench.results import RunRecord, ScenarioResult
from amqpd.bench.runner import Options, Progress, Scenario, new_result, run_once

# how long a restart command and the broker's first handshake may take
RESTART_LIMIT = 300.0
READY_LIMIT = 120.0


@dataclass
class Target:
    """One broker under test; ``pid`` changes when the broker is restarted."""

    label: str
    url: str
    pid: int | None = None


@dataclass(frozen=True)
class Step:
    """One run in the session's order: a repeat (or warm-up) on one target."""

    scenario: str
    target: str
    repeat: int  # from 0; warm-ups carry 0
    warmup: bool = False


def schedule(
    scenarios: Sequence[Scenario], labels: Sequence[str], repeat: int, *, warmup: bool
) -> list[Step]:
    """Every run of a session in order: scenario by scenario, targets alternating.

    Within a scenario, warm-ups (if any) come first, one per target; then
    repeat 1 on each target in the given order, then repeat 2, and so on.
    """
    steps: list[Step] = []
    for scenario in scenarios:
        if warmup and scenario.warmup:
            steps += [Step(scenario.name, label, 0, warmup=True) for label in labels]
        for number in range(repeat):
            steps += [Step(scenario.name, label, number) for label in labels]
    return steps


def wait_ready(url: BrokerUrl, timeout: float) -> None:
    """Retry the AMQP handshake until the broker answers or ``timeout`` passes."""
    give_up = time.monotonic() + timeout
    while True:
        try:
            BenchConnection.open(url, timeout=10).close()
            return
        except BenchError:
            if time.monotonic() >= give_up:
                raise
        time.sleep(0.5)


def restart_broker(command: Sequence[str], target: Target) -> int:
    """Run ``command LABEL``; its last line of output is the new broker PID.

    The command must leave nothing holding its standard output open (a
    broker it starts in the background writes elsewhere), or this waits for
    ``RESTART_LIMIT``.
    """
    try:
        done = subprocess.run(
            [*command, target.label],
            capture_output=True,
            text=True,
            timeout=RESTART_LIMIT,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BenchError(f"restart of {target.label} failed: {exc}") from exc
    if done.returncode != 0:
        tail = done.stderr.strip().splitlines()[-3:]
        raise BenchError(
            f"restart of {target.label} exited {done.returncode}: {' | '.join(tail)}"
        )
    words = done.stdout.split()
    if not words or not words[-1].isdigit():
        raise BenchError(f"restart of {target.label} printed no PID")
    pid = int(words[-1])
    if not Path(f"/proc/{pid}").exists():
        raise BenchError(f"restart of {target.label} gave PID {pid}, not running")
    return pid


@dataclass
class Session:
    """Runs scenarios on every target, alternating, and collects the results."""

    targets: list[Target]
    options: Options
    restart_command: list[str] | None = None
    progress: Progress = field(default_factory=Progress)
    position: int = 0

    def run(self, scenario: Scenario) -> list[ScenarioResult]:
        """All repeats of one scenario on every target; one result per target."""
        results = {
            target.label: new_result(scenario, self._options(target), target.label)
            for target in self.targets
        }
        labels = [target.label for target in self.targets]
        warmup = self.options.warmup > 0
        for step in schedule([scenario], labels, self.options.repeat, warmup=warmup):
            self._step(scenario, step, results[step.target])
        if scenario.fresh_broker:
            for result in results.values():
                result.settings["fresh_broker"] = self.restart_command is not None
        return list(results.values())

    def _step(self, scenario: Scenario, step: Step, result: ScenarioResult) -> None:
        say = self.progress.say
        target = next(t for t in self.targets if t.label == step.target)
        where = f" on {target.label}" if len(self.targets) > 1 else ""
        if step.warmup:
            say(f"{scenario.name}: warm-up{where}")
        else:
            number = f"{step.repeat + 1}/{self.options.repeat}"
            say(f"{scenario.name}: repeat {number}{where}")
        try:
            if scenario.fresh_broker and self.restart_command and not step.warmup:
                say(f"{scenario.name}: restarting {target.label}")
                target.pid = restart_broker(self.restart_command, target)
                wait_ready(BrokerUrl.parse(target.url), READY_LIMIT)
        except BenchError as exc:
            record = RunRecord({}, {}, False, [], error=str(exc))
        else:
            if scenario.needs_broker:
                self._wait_quiet()
            options = self._options(target)
            if step.warmup:
                options = dataclasses.replace(options, duration=self.options.warmup)
            record, settings = run_once(scenario, options)
            result.settings = result.settings or settings
        if record.error:
            say(f"{scenario.name}: failed{where}: {record.error}")
        if step.warmup:
            return
        record.position = self.position
        self.position += 1
        result.runs.append(record)

    def _options(self, target: Target) -> Options:
        return dataclasses.replace(self.options, url=target.url, broker_pid=target.pid)

    def _wait_quiet(self) -> None:
        pids = [target.pid for target in self.targets if target.pid]
        if not pids:
            return
        options = self.options
        quiet = wait_quiet(
            pids,
            below_pct=options.quiet_pct,
            window=options.quiet_window,
            limit=options.quiet_limit,
        )
        if not quiet:
            self.progress.say(
                f"a broker stayed busy for {options.quiet_limit:.0f} s; running anyway"
            )


def run_scenario(
    scenario: Scenario, options: Options, progress: Progress | None = None
) -> ScenarioResult:
    """Every repeat of one scenario on the one broker of ``options``."""
    target = Target("broker", options.url, options.broker_pid)
    session = Session([target], options, progress=progress or Progress())
    return session.run(scenario)[0]
