"""Every bench scenario for about a second against an in-process broker.

Only the counts are checked (every message consumed once, every queue
declared and deleted); timings on a shared CI machine mean nothing.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from amqpd.bench import cli
from amqpd.bench.catalog import SCENARIOS
from amqpd.bench.results import read_lines
from amqpd.bench.runner import Options, run_scenario
from amqpd.testing import BrokerThread


def smoke_options(url: str) -> Options:
    return Options(
        url=url,
        duration=0.5,
        rate=10_000.0,  # keeps fanout-10's deliveries few on a slow CI machine
        repeat=1,
        backlog=5_000,
        connections=20,
        queues=50,
        fanout=10,
        broker_pid=os.getpid(),  # the fixture's broker runs in this process
        phase_limit=30.0,
    )


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_scenario_counts_add_up(name: str, amqpd_broker: BrokerThread) -> None:
    result = run_scenario(SCENARIOS[name], smoke_options(amqpd_broker.url))
    [run] = result.runs
    assert run.error is None, run.error
    assert run.counts_ok, run.counts
    assert result.counts_ok
    assert run.figures


def test_command_writes_lines_and_compares_them(
    amqpd_broker: BrokerThread, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run.jsonl"
    argv = ["--url", amqpd_broker.url, "--scenarios", "pubsub-16B,conn-churn"]
    argv += ["--duration", "0.5", "--repeat", "2", "--connections", "10"]
    argv += ["--rate", "10000"]
    assert cli.main([*argv, "--json", str(out)]) == 0
    records = read_lines(out)
    assert set(records) == {"pubsub-16B", "conn-churn"}
    assert records["pubsub-16B"]["repeats"] == 2
    assert records["pubsub-16B"]["counts_ok"] is True
    assert len(records["conn-churn"]["runs"]) == 2
    capsys.readouterr()
    assert cli.main(["--compare", str(out), str(out)]) == 0
    assert "1.00" in capsys.readouterr().out
