"""Sessions over several targets: the alternation order, warm-ups, restarts,
quiet waits, and the side-by-side table's math."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from amqpd.bench import session as session_module
from amqpd.bench.client import BenchError
from amqpd.bench.procstat import wait_quiet
from amqpd.bench.report import side_by_side_lines
from amqpd.bench.results import RunRecord, ScenarioResult
from amqpd.bench.runner import Options, Outcome, Run, Scenario
from amqpd.bench.session import Session, Step, Target, schedule


def scenario(name: str, **flags: bool) -> Scenario:
    return Scenario(name, "test", lambda run: Outcome({}, {}, True), **flags)


def test_schedule_alternates_targets_within_each_repeat() -> None:
    steps = schedule([scenario("s")], ["amqpd", "rabbitmq"], 3, warmup=True)
    assert [(s.target, s.repeat) for s in steps] == [
        ("amqpd", 0),
        ("rabbitmq", 0),
        ("amqpd", 1),
        ("rabbitmq", 1),
        ("amqpd", 2),
        ("rabbitmq", 2),
    ]
    assert not any(step.warmup for step in steps)


def test_schedule_warms_each_target_up_before_the_first_repeat() -> None:
    flows = [scenario("flow", warmup=True), scenario("churn")]
    steps = schedule(flows, ["a", "b", "c"], 2, warmup=True)
    assert steps[:3] == [
        Step("flow", "a", 0, warmup=True),
        Step("flow", "b", 0, warmup=True),
        Step("flow", "c", 0, warmup=True),
    ]
    assert [(s.scenario, s.target, s.repeat) for s in steps[3:]] == [
        ("flow", "a", 0),
        ("flow", "b", 0),
        ("flow", "c", 0),
        ("flow", "a", 1),
        ("flow", "b", 1),
        ("flow", "c", 1),
        ("churn", "a", 0),
        ("churn", "b", 0),
        ("churn", "c", 0),
        ("churn", "a", 1),
        ("churn", "b", 1),
        ("churn", "c", 1),
    ]
    assert not any(s.warmup for s in schedule(flows, ["a"], 1, warmup=False))


class Recorder:
    """A scenario body that notes which broker and duration each run had."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, float, int | None]] = []

    def __call__(self, run: Run) -> Outcome:
        options = run.options
        self.calls.append((options.url, options.duration, options.broker_pid))
        rate = float(len(self.calls))
        return Outcome({"publish_rate": rate}, {"n": len(self.calls)}, True)


def two_targets() -> list[Target]:
    return [Target("a", "amqp://127.0.0.1:1/"), Target("b", "amqp://127.0.0.1:2/")]


def test_session_runs_warmups_unrecorded_then_alternates() -> None:
    body = Recorder()
    flow = Scenario("flow", "test", body, needs_broker=False, warmup=True)
    options = Options(url="amqp://127.0.0.1:9/", repeat=3, warmup=0.25)
    session = Session(two_targets(), options)
    a, b = session.run(flow)
    assert [(url[-3:-1], duration) for url, duration, _pid in body.calls] == [
        (":1", 0.25),
        (":2", 0.25),
        (":1", 5.0),
        (":2", 5.0),
        (":1", 5.0),
        (":2", 5.0),
        (":1", 5.0),
        (":2", 5.0),
    ]
    assert (a.target, b.target) == ("a", "b")
    assert [run.position for run in a.runs] == [0, 2, 4]
    assert [run.position for run in b.runs] == [1, 3, 5]
    assert [run.figures["publish_rate"] for run in a.runs] == [3.0, 5.0, 7.0]
    assert a.counts_ok and b.counts_ok
    # the next scenario carries on counting positions
    c, d = session.run(Scenario("next", "test", body, needs_broker=False))
    assert [run.position for run in c.runs + d.runs] == [6, 8, 10, 7, 9, 11]


@pytest.fixture
def no_handshake(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    waited: list[str] = []
    monkeypatch.setattr(
        session_module, "wait_ready", lambda url, timeout: waited.append(url.redacted())
    )
    return waited


def test_restart_command_runs_per_repeat_and_target_and_sets_the_pid(
    no_handshake: list[str],
) -> None:
    # the command prints chatter, then its parent's PID (this test's process)
    printer = "import os, sys; print('restarting', sys.argv[1]); print(os.getppid())"
    body = Recorder()
    memory = Scenario("memory", "test", body, needs_broker=False, fresh_broker=True)
    session = Session(
        two_targets(),
        Options(url="amqp://127.0.0.1:9/", repeat=2, warmup=1.0),
        restart_command=[sys.executable, "-c", printer],
    )
    results = session.run(memory)
    assert [pid for _url, _duration, pid in body.calls] == [os.getpid()] * 4
    assert [target.pid for target in session.targets] == [os.getpid()] * 2
    assert len(no_handshake) == 4
    assert no_handshake[:2] == [
        "amqp://guest@127.0.0.1:1/",
        "amqp://guest@127.0.0.1:2/",
    ]
    assert all(result.settings["fresh_broker"] is True for result in results)
    without = Session(two_targets(), Options(url="amqp://127.0.0.1:9/", repeat=1))
    assert without.run(memory)[0].settings["fresh_broker"] is False


def test_failed_restart_is_recorded_and_the_scenario_not_run(
    no_handshake: list[str],
) -> None:
    body = Recorder()
    memory = Scenario("memory", "test", body, needs_broker=False, fresh_broker=True)
    fails = "import sys; sys.stderr.write('port taken\\n'); sys.exit(3)"
    session = Session(
        two_targets(),
        Options(url="amqp://127.0.0.1:9/", repeat=1),
        restart_command=[sys.executable, "-c", fails],
    )
    a, b = session.run(memory)
    assert body.calls == [] and no_handshake == []
    assert a.runs[0].error == "restart of a exited 3: port taken"
    assert not a.counts_ok and not b.counts_ok


@pytest.mark.parametrize(
    ("printed", "reason"),
    [("print('done')", "printed no PID"), ("print(999999999)", "not running")],
)
def test_restart_needs_the_pid_of_a_running_process(printed: str, reason: str) -> None:
    with pytest.raises(BenchError, match=reason):
        session_module.restart_broker([sys.executable, "-c", printed], Target("a", ""))


@pytest.fixture
def spinner() -> Iterator[int]:
    code = (
        "import time\nend = time.monotonic() + 20\nwhile time.monotonic() < end: pass"
    )
    child = subprocess.Popen([sys.executable, "-c", code])
    time.sleep(0.2)
    yield child.pid
    child.kill()
    child.wait()


def test_wait_quiet_gives_up_on_a_busy_process(spinner: int) -> None:
    start = time.monotonic()
    assert not wait_quiet([spinner], below_pct=10.0, window=0.1, limit=0.3)
    assert time.monotonic() - start < 2.0


def test_wait_quiet_passes_idle_and_vanished_processes() -> None:
    sleeper = subprocess.Popen(["sleep", "20"])
    try:
        assert wait_quiet(
            [sleeper.pid, 999_999_999], below_pct=10.0, window=0.1, limit=5.0
        )
    finally:
        sleeper.kill()
        sleeper.wait()


def result(target: str, figures: list[dict[str, float]]) -> ScenarioResult:
    record = ScenarioResult("pubsub-16B", "amqp://guest@127.0.0.1:1/", {}, target)
    for position, values in enumerate(figures):
        record.runs.append(RunRecord(values, {"published": 5}, True, [1.0, 2.0, 3.0]))
        record.runs[-1].position = position
    return record


def test_side_by_side_table_gives_medians_spread_and_ratio() -> None:
    ours = result(
        "amqpd",
        [
            {"publish_rate": 300.0, "e2e_p99_ms": 4.0},
            {"publish_rate": 100.0, "e2e_p99_ms": 2.0},
            {"publish_rate": 200.0, "e2e_p99_ms": 3.0},
        ],
    )
    theirs = result(
        "rabbitmq",
        [{"publish_rate": 400.0, "e2e_p99_ms": 1.5, "broker_cpu_pct": 50.0}] * 3,
    )
    lines = side_by_side_lines([ours, theirs])
    assert lines[0] == "== pubsub-16B  (3 repeats per target, counts add up)"
    assert lines[1].split() == [
        "figure",
        "unit",
        "amqpd",
        "rabbitmq",
        "amqpd/rabbitmq",
        "better",
    ]
    rows = {line.split()[0]: line.split() for line in lines[3:6]}
    assert rows["publish_rate"] == [
        "publish_rate",
        "msg/s",
        "200",
        "±50%",
        "400",
        "0.50",
        "higher",
        "is",
        "better",
    ]
    assert rows["e2e_p99_ms"][2:6] == ["3.00", "±33%", "1.50", "2.00"]
    assert rows["e2e_p99_ms"][6] == "lower"
    assert rows["broker_cpu_pct"][2:5] == ["-", "50.00", "-"]
    assert lines[6] == "  amqpd repeat 1: published=5 load=1.00/2.00/3.00 ok"
    assert len(lines) == 12


def test_side_by_side_flags_a_target_whose_counts_fail() -> None:
    ours = result("amqpd", [{"publish_rate": 1.0}])
    theirs = result("rabbitmq", [{"publish_rate": 2.0}])
    theirs.runs[0].counts_ok = False
    assert "COUNTS DO NOT ADD UP" in side_by_side_lines([ours, theirs])[0]
