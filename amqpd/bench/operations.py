"""Scenarios that exercise the broker's bookkeeping rather than messages.

conn-churn opens and closes connections one after another; many-queues
declares thousands of queues, weighs them, then deletes them. Both loops run
in a worker process like the message flows, so the parent stays free to
read the broker's CPU and memory.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from amqpd.bench.client import BenchConnection, BrokerUrl
from amqpd.bench.fleet import Link, Result
from amqpd.bench.runner import Outcome, Run, broker_figures
from amqpd.bench.stats import latency_ms, rate


@dataclass(frozen=True)
class ChurnPlan:
    """How many connect/channel/close cycles, within how many seconds."""

    url: str
    connections: int
    max_duration: float


def run_churn(plan: ChurnPlan, link: Link) -> Result:
    """Worker entry: connect, open a channel, close both, many times."""
    url = BrokerUrl.parse(plan.url)
    link.ready()
    started = link.wait_go()
    give_up = started + int(plan.max_duration * 1e9)
    cycles: list[int] = []
    for _ in range(plan.connections):
        begin = time.monotonic_ns()
        conn = BenchConnection.open(url)
        conn.open_channel(1)
        conn.close_channel(1)
        conn.close(strict=True)
        end = time.monotonic_ns()
        cycles.append(end - begin)
        if end > give_up:
            break
    return {
        "completed": len(cycles),
        "started_ns": started,
        "finished_ns": time.monotonic_ns(),
        "cycle_ns": cycles,
    }


def conn_churn(run: Run) -> Outcome:
    """Connect, open a channel, close, N times in a row."""
    options = run.options
    run.settings.update(connections=options.connections)
    plan = ChurnPlan(options.url, options.connections, options.phase_limit)
    worker = run.fleet.start("churn", run_churn, plan)
    run.fleet.wait_ready([worker])
    before = run.broker()
    worker.send("go")
    done = run.fleet.result(worker, options.phase_limit + 60)
    figures = broker_figures(before, run.broker())
    figures["churn_rate"] = rate(
        done["completed"], done["started_ns"], done["finished_ns"]
    )
    for name, value in latency_ms(done["cycle_ns"]).items():
        if name != "p999":
            figures[f"cycle_{name}_ms"] = value
    counts = {"requested": options.connections, "completed": int(done["completed"])}
    return Outcome(figures, counts, counts["completed"] == options.connections)


@dataclass(frozen=True)
class QueuesPlan:
    """How many queues to declare (then delete), under what name prefix."""

    url: str
    prefix: str
    count: int
    max_duration: float


def run_queues(plan: QueuesPlan, link: Link) -> Result:
    """Worker entry: declare the queues, wait for the parent, delete them."""
    conn = BenchConnection.open(BrokerUrl.parse(plan.url))
    conn.open_channel(1)
    link.ready()
    started = link.wait_go()
    give_up = started + int(plan.max_duration * 1e9)
    declared = 0
    for i in range(plan.count):
        conn.declare_queue(1, f"{plan.prefix}-{i}")
        declared += 1
        if i % 100 == 0 and time.monotonic_ns() > give_up:
            break
    declared_ns = time.monotonic_ns()
    resumed = link.checkpoint({"declared": declared})
    deleted = 0
    leftover_messages = 0
    for i in range(declared):
        leftover_messages += conn.delete_queue(1, f"{plan.prefix}-{i}")
        deleted += 1
    deleted_ns = time.monotonic_ns()
    conn.close()
    return {
        "declared": declared,
        "deleted": deleted,
        "leftover_messages": leftover_messages,
        "declare_rate": rate(declared, started, declared_ns),
        "delete_rate": rate(deleted, resumed, deleted_ns),
    }


def many_queues(run: Run) -> Outcome:
    """Declare N queues on one channel, weigh the broker, delete them."""
    options = run.options
    run.settings.update(queues=options.queues)
    prefix = run.name()
    # should the worker die half-way, the run's cleanup deletes the rest
    run.queues.extend(f"{prefix}-{i}" for i in range(options.queues))
    plan = QueuesPlan(options.url, prefix, options.queues, options.phase_limit)
    worker = run.fleet.start("queues", run_queues, plan)
    run.fleet.wait_ready([worker])
    before = run.broker()
    worker.send("go")
    declared = int(worker.receive("checkpoint", options.phase_limit + 60)["declared"])
    loaded = run.broker()
    rested = run.broker_at_rest()
    worker.send("go")
    done = run.fleet.result(worker, options.phase_limit + 60)
    if done["deleted"] == options.queues:
        run.queues.clear()
    figures = broker_figures(before, loaded)
    figures["declare_rate"] = float(done["declare_rate"])
    figures["delete_rate"] = float(done["delete_rate"])
    if before is not None and rested is not None and declared:
        figures["broker_rss_mib"] = rested.rss_bytes / 2**20
        figures["rss_per_queue"] = (rested.rss_bytes - before.rss_bytes) / declared
    counts = {
        "requested": options.queues,
        "declared": declared,
        "deleted": int(done["deleted"]),
    }
    ok = declared == options.queues == counts["deleted"]
    return Outcome(figures, counts, ok)
