"""Every bench scenario for about a second against an in-process broker.

Only the counts are checked (every message consumed once, every queue
declared and deleted); timings on a shared CI machine mean nothing.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import pika
import pika.exceptions
import pytest

from amqpd.bench import cli, scenarios
from amqpd.bench.catalog import SCENARIOS
from amqpd.bench.publisher import run_publisher
from amqpd.bench.results import read_lines
from amqpd.bench.runner import Options, Run
from amqpd.bench.session import run_scenario
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
        warmup=0.0,
        quiet_window=0.1,
        quiet_limit=2.0,
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
    argv += ["--rate", "10000", "--warmup", "0"]
    assert cli.main([*argv, "--json", str(out)]) == 0
    records = read_lines(out)
    assert set(records) == {"pubsub-16B", "conn-churn"}
    assert records["pubsub-16B"]["repeats"] == 2
    assert records["pubsub-16B"]["counts_ok"] is True
    assert len(records["conn-churn"]["runs"]) == 2
    capsys.readouterr()
    assert cli.main(["--compare", str(out), str(out)]) == 0
    assert "1.00" in capsys.readouterr().out


def test_two_targets_alternate_and_print_side_by_side(
    amqpd_broker: BrokerThread,
    amqpd_session_broker: BrokerThread,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "run.jsonl"
    argv = ["--target", f"fresh={amqpd_broker.url}"]
    argv += ["--target", f"shared={amqpd_session_broker.url}"]
    argv += ["--scenarios", "publish-only,conn-churn", "--duration", "0.5"]
    argv += ["--repeat", "2", "--warmup", "0.2", "--connections", "10"]
    argv += ["--rate", "10000", "--json", str(out)]
    assert cli.main(argv) == 0
    printed = capsys.readouterr()
    assert "fresh/shared" in printed.out
    assert "higher is better" in printed.out
    assert "publish-only: warm-up on shared" in printed.err
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["scenario"], r["target"]) for r in lines] == [
        ("publish-only", "fresh"),
        ("publish-only", "shared"),
        ("conn-churn", "fresh"),
        ("conn-churn", "shared"),
    ]
    positions = [[run["position"] for run in r["runs"]] for r in lines]
    assert positions == [[0, 2], [1, 3], [4, 6], [5, 7]]
    assert all(r["counts_ok"] for r in lines)
    assert cli.main(["--compare", f"{out}@fresh", f"{out}@shared", "--markdown"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].startswith("| scenario | figure | unit | fresh | shared |")
    assert any(row.startswith("| conn-churn | churn_rate |") for row in table)


def test_persistent_confirm_publishes_delivery_mode_2_into_a_durable_queue(
    amqpd_broker: BrokerThread, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The scenario's own publisher plan, run against the broker: 5 messages."""
    checked: dict[str, object] = {}

    def publish_and_inspect(
        run: Run, flow: scenarios.Flow, queues: list[str]
    ) -> scenarios.FlowResult:
        plan = dataclasses.replace(scenarios._publish_plan(run, flow), max_count=5)
        worker = run.fleet.start("publisher", run_publisher, plan)
        run.fleet.wait_ready([worker])
        worker.send("go")
        published = run.fleet.result(worker, 30)
        with pika.BlockingConnection(pika.URLParameters(amqpd_broker.url)) as conn:
            channel = conn.channel()
            modes = []
            for _ in range(5):
                method, props, _body = channel.basic_get(queues[0], auto_ack=True)
                assert method is not None
                modes.append(props.delivery_mode)
            checked["modes"] = modes
            with pytest.raises(pika.exceptions.ChannelClosedByBroker) as refused:
                channel.queue_declare(queues[0], durable=False)
            checked["redeclare"] = refused.value.reply_code
        consumer = {
            "distinct": 5,
            "duplicates": 0,
            "missing": 0,
            "stray": 0,
            "max_outstanding": 0,
            "prefetch": 1000,
            "last_ns": published["finished_ns"],
            "cpu_s": 0.0,
        }
        return scenarios.FlowResult(published, [consumer], None, None)

    monkeypatch.setattr(scenarios, "run_flow", publish_and_inspect)
    options = dataclasses.replace(smoke_options(amqpd_broker.url), broker_pid=None)
    result = run_scenario(SCENARIOS["persistent-confirm"], options)
    [run] = result.runs
    assert run.error is None, run.error
    assert checked == {"modes": [2] * 5, "redeclare": 406}
    assert run.counts["confirmed"] == 5 and run.counts_ok
    assert result.settings["confirm_window"] == 1000
