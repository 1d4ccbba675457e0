"""What the scenarios ask of the broker, checked without one."""

from __future__ import annotations

from typing import Any

import pytest
from pamqp import commands, header
from pamqp import frame as pamqp_frame

from amqpd.bench import frames, scenarios
from amqpd.bench.catalog import SCENARIOS
from amqpd.bench.fleet import Result
from amqpd.bench.runner import Options


class FakeRun:
    """Stands in for a Run: records declares, never connects."""

    def __init__(self, options: Options) -> None:
        self.options = options
        self.settings: dict[str, Any] = {}
        self.declared: list[tuple[str, bool]] = []

    def name(self, suffix: str = "") -> str:
        return f"bench-q{suffix}"

    def declare_queue(self, name: str, *, durable: bool = False) -> str:
        self.declared.append((name, durable))
        return name


def settled_flow(published: int) -> scenarios.FlowResult:
    publisher: Result = {
        "published": published,
        "acked": published,
        "nacked": 0,
        "started_ns": 0,
        "sent_ns": 10**9,
        "finished_ns": 10**9,
        "cpu_s": 0.1,
    }
    consumer: Result = {
        "distinct": published,
        "duplicates": 0,
        "missing": 0,
        "stray": 0,
        "max_outstanding": 10,
        "prefetch": 1000,
        "last_ns": 10**9,
        "cpu_s": 0.1,
    }
    return scenarios.FlowResult(publisher, [consumer], None, None)


def test_persistent_confirm_is_durable_persistent_with_a_window_of_1000(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: list[tuple[scenarios.Flow, list[str]]] = []

    def fake_flow(run: Any, flow: scenarios.Flow, queues: list[str]) -> Any:
        seen.append((flow, queues))
        return settled_flow(500)

    monkeypatch.setattr(scenarios, "run_flow", fake_flow)
    run = FakeRun(Options(url="amqp://127.0.0.1:1/"))
    outcome = scenarios.persistent_confirm(run)  # type: ignore[arg-type]
    [(flow, queues)] = seen
    assert run.declared == [("bench-q", True)]
    assert queues == ["bench-q"]
    assert flow.persistent and flow.confirm_window == 1000
    assert run.settings["confirm_window"] == 1000
    assert run.settings["delivery_mode"] == 2 and run.settings["durable_queue"]
    assert outcome.counts_ok and outcome.counts["confirmed"] == 500
    # the publisher's frames carry delivery-mode 2 and it selects confirms
    plan = scenarios._publish_plan(run, flow)  # type: ignore[arg-type]
    assert plan.persistent and plan.confirm_window == 1000
    template = frames.message_template(
        1,
        plan.exchange,
        plan.routing_key,
        plan.body_size,
        persistent=True,
        frame_max=131072,
    )
    used, _channel, publish = pamqp_frame.unmarshal(template.data)
    assert isinstance(publish, commands.Basic.Publish)
    assert publish.routing_key == "bench-q"
    _used, _channel, content = pamqp_frame.unmarshal(template.data[used:])
    assert isinstance(content, header.ContentHeader)
    assert content.properties.delivery_mode == 2


def test_persistent_confirm_counts_fail_when_a_confirm_is_missing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    short = settled_flow(500)
    short.publisher["acked"] = 499
    monkeypatch.setattr(scenarios, "run_flow", lambda run, flow, queues: short)
    outcome = scenarios.persistent_confirm(FakeRun(Options(url="amqp://h/")))  # type: ignore[arg-type]
    assert not outcome.counts_ok


def test_memory_scenarios_ask_for_a_fresh_broker_and_flows_for_a_warmup() -> None:
    fresh = {name for name, s in SCENARIOS.items() if s.fresh_broker}
    assert fresh == {"backlog", "persistent-backlog", "many-queues"}
    warm = {name for name, s in SCENARIOS.items() if s.warmup}
    assert warm == {
        "publish-only",
        "pubsub-16B",
        "pubsub-1KiB",
        "persistent-confirm",
        "fanout-10",
        "latency",
    }
