"""The message-flow scenarios: publishers and consumers through the broker.

Each function runs one repeat and returns its figures and counts. Every
queue is transient and non-durable except persistent-confirm's, named
uniquely per run and deleted by the run when it ends.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from amqpd.bench.consumer import ConsumePlan, run_consumer
from amqpd.bench.fleet import Result
from amqpd.bench.procstat import ProcSample
from amqpd.bench.publisher import PublishPlan, run_publisher
from amqpd.bench.runner import UNBOUNDED, Outcome, Run, broker_figures
from amqpd.bench.sink import SinkPlan, run_sink
from amqpd.bench.stats import latency_ms, rate

DEFAULT_SIZE = 16
LATENCY_RATE = 1000.0
BACKLOG_SIZE = 100


@dataclass(frozen=True)
class Flow:
    """One publisher's settings for a flow through the broker."""

    exchange: str
    routing_key: str
    body_size: int
    duration: float
    max_count: int = UNBOUNDED
    persistent: bool = False
    confirm_window: int = 0
    rate: float = 0.0
    timed: bool = False


@dataclass
class FlowResult:
    """The publisher's and consumers' reports, and broker readings."""

    publisher: Result
    consumers: list[Result]
    before: ProcSample | None
    after: ProcSample | None


def _publish_plan(run: Run, flow: Flow) -> PublishPlan:
    return PublishPlan(
        url=run.options.url,
        exchange=flow.exchange,
        routing_key=flow.routing_key,
        body_size=flow.body_size,
        max_count=flow.max_count,
        duration=flow.duration,
        persistent=flow.persistent,
        rate=flow.rate,
        confirm_window=flow.confirm_window,
        timed=flow.timed,
    )


def run_flow(run: Run, flow: Flow, queues: list[str]) -> FlowResult:
    """Consumers on ``queues`` (maybe none), one publisher, counts settled."""
    fleet = run.fleet
    consumers = [
        fleet.start(
            f"consumer-{i}",
            run_consumer,
            ConsumePlan(
                run.options.url,
                queue,
                prefetch=run.options.prefetch,
                timed=flow.timed,
                max_duration=flow.duration + run.options.phase_limit,
            ),
        )
        for i, queue in enumerate(queues)
    ]
    fleet.wait_ready(consumers)
    publisher = fleet.start("publisher", run_publisher, _publish_plan(run, flow))
    fleet.wait_ready([publisher])
    before = run.broker()
    for worker in [*consumers, publisher]:
        worker.send("go")
    published = fleet.result(publisher, flow.duration + run.options.phase_limit)
    for worker in consumers:
        worker.send("expect", published["published"])
    consumed = [fleet.result(w, run.options.phase_limit) for w in consumers]
    return FlowResult(published, consumed, before, run.broker())


def delivery_counts(flow: FlowResult) -> tuple[dict[str, int], bool]:
    """Published against consumed: every message once, none twice.

    Also checks that no consumer got more unacked deliveries than its
    prefetch count.
    """
    pub = flow.publisher
    counts = {
        "published": int(pub["published"]),
        "consumed": sum(int(c["distinct"]) for c in flow.consumers),
        "duplicates": sum(int(c["duplicates"]) for c in flow.consumers),
        "missing": sum(int(c["missing"]) for c in flow.consumers),
        "stray": sum(int(c["stray"]) for c in flow.consumers),
    }
    # a consumer that saw more deliveries outstanding than its prefetch
    # count allows: the broker ignored basic.qos, the rates are not fair
    counts["over_prefetch"] = sum(
        1 for c in flow.consumers if c["max_outstanding"] > c["prefetch"]
    )
    ok = (
        counts["duplicates"] == 0
        and counts["missing"] == 0
        and counts["stray"] == 0
        and counts["over_prefetch"] == 0
        and counts["consumed"] == counts["published"] * len(flow.consumers)
    )
    if pub["acked"] or pub["nacked"]:
        counts["confirmed"] = int(pub["acked"])
        counts["nacked"] = int(pub["nacked"])
        ok = ok and counts["nacked"] == 0 and counts["confirmed"] == pub["published"]
    return counts, ok


def flow_figures(flow: FlowResult) -> dict[str, float]:
    """Rates, CPU and memory common to every flow scenario."""
    pub = flow.publisher
    figures = broker_figures(flow.before, flow.after)
    settled = pub["acked"] if pub["acked"] or pub["nacked"] else pub["published"]
    figures["publish_rate"] = rate(settled, pub["started_ns"], pub["finished_ns"])
    sending = (pub["sent_ns"] - pub["started_ns"]) / 1e9
    if sending > 0:
        figures["publisher_cpu_pct"] = 100.0 * pub["cpu_s"] / sending
    if flow.consumers:
        last = max(c["last_ns"] for c in flow.consumers)
        consumed = sum(c["distinct"] for c in flow.consumers)
        name = "consume_rate" if len(flow.consumers) == 1 else "deliver_rate"
        figures[name] = rate(consumed, pub["started_ns"], last)
        busy = (last - pub["started_ns"]) / 1e9
        if busy > 0:
            worst = max(c["cpu_s"] for c in flow.consumers)
            figures["consumer_cpu_pct"] = 100.0 * worst / busy
    return figures


def _size(run: Run, default: int = DEFAULT_SIZE) -> int:
    return run.options.size or default


def _throughput(run: Run, flow: Flow, queues: list[str]) -> Outcome:
    outcome, _result = _measure(run, flow, queues)
    return outcome


def _measure(run: Run, flow: Flow, queues: list[str]) -> tuple[Outcome, FlowResult]:
    run.settings.update(
        body_size=flow.body_size,
        duration=flow.duration,
        prefetch=run.options.prefetch,
        confirm_window=flow.confirm_window,
        rate=flow.rate,
        consumers=len(queues),
    )
    result = run_flow(run, flow, queues)
    counts, ok = delivery_counts(result)
    return Outcome(flow_figures(result), counts, ok), result


def _rate_cap(run: Run) -> float:
    return run.options.rate or 0.0


def publish_only(run: Run) -> Outcome:
    """One publisher into a queue nobody consumes."""
    queue = run.declare_queue(run.name())
    flow = Flow("", queue, _size(run), run.options.duration, rate=_rate_cap(run))
    run.settings.update(body_size=flow.body_size, duration=flow.duration)
    result = run_flow(run, flow, [])
    published = int(result.publisher["published"])
    queued = run.queue_depth(queue, published)
    counts = {"published": published, "queued": queued}
    return Outcome(flow_figures(result), counts, queued == published)


def pubsub(size: int) -> Callable[[Run], Outcome]:
    """One publisher, one consumer with manual acks, a fixed body size."""

    def scenario(run: Run) -> Outcome:
        queue = run.declare_queue(run.name())
        flow = Flow("", queue, size, run.options.duration, rate=_rate_cap(run))
        return _throughput(run, flow, [queue])

    return scenario


def persistent_confirm(run: Run) -> Outcome:
    """Persistent messages into a durable queue, confirms, one consumer.

    delivery-mode 2 on every message and a durable queue: a broker must
    have each message on disk before it confirms it.
    """
    queue = run.declare_queue(run.name(), durable=True)
    run.settings.update(delivery_mode=2, durable_queue=True)
    flow = Flow(
        "",
        queue,
        _size(run),
        run.options.duration,
        persistent=True,
        confirm_window=run.options.confirm_window,
        rate=_rate_cap(run),
    )
    return _throughput(run, flow, [queue])


def fanout(run: Run) -> Outcome:
    """One publisher into a fanout exchange bound to N queues, N consumers."""
    exchange = run.declare_exchange(run.name("x"), "fanout")
    queues = [run.declare_queue(run.name(str(i))) for i in range(run.options.fanout)]
    for queue in queues:
        run.admin.bind_queue(1, queue, exchange, "")
    flow = Flow(exchange, "", _size(run), run.options.duration, rate=_rate_cap(run))
    return _throughput(run, flow, queues)


def latency(run: Run) -> Outcome:
    """A fixed publish rate, every message timed end to end and confirmed.

    It runs for twice --duration so that p99.9 rests on enough samples.
    """
    queue = run.declare_queue(run.name())
    flow = Flow(
        "",
        queue,
        _size(run),
        2 * run.options.duration,
        confirm_window=run.options.confirm_window,
        rate=run.options.rate or LATENCY_RATE,
        timed=True,
    )
    outcome, result = _measure(run, flow, [queue])
    for name, value in latency_ms(result.consumers[0]["latency_ns"]).items():
        outcome.figures[f"e2e_{name}_ms"] = value
    for name, value in latency_ms(result.publisher["confirm_latency_ns"]).items():
        outcome.figures[f"confirm_{name}_ms"] = value
    return outcome


def backlog(run: Run) -> Outcome:
    """Fill a queue with no consumer, weigh it, then drain it."""
    return _backlog(run, persistent=False)


def persistent_backlog(run: Run) -> Outcome:
    """``backlog`` with persistent messages into a durable queue, confirmed.

    Against a broker whose memory budget for message bodies is below the
    backlog, the drain reads the bodies back from the broker's disk.
    """
    return _backlog(run, persistent=True)


def _backlog(run: Run, persistent: bool) -> Outcome:
    options = run.options
    queue = run.declare_queue(run.name(), durable=persistent)
    flow = Flow(
        "",
        queue,
        BACKLOG_SIZE,
        options.phase_limit,
        max_count=options.backlog,
        rate=_rate_cap(run),
        persistent=persistent,
        confirm_window=options.confirm_window if persistent else 0,
    )
    run.settings.update(body_size=BACKLOG_SIZE, messages=options.backlog)
    if persistent:
        run.settings.update(delivery_mode=2, durable_queue=True)
    filled = run_flow(run, flow, [])
    published = int(filled.publisher["published"])
    queued = run.queue_depth(queue, published)
    weighed = run.broker_at_rest()
    fill = flow_figures(filled)
    figures = {"fill_rate": fill["publish_rate"]}
    if "broker_cpu_pct" in fill:
        figures["broker_cpu_pct"] = fill["broker_cpu_pct"]
    if filled.before is not None and weighed is not None and queued:
        figures["rss_per_message"] = (
            weighed.rss_bytes - filled.before.rss_bytes
        ) / queued
        figures["broker_rss_mib"] = weighed.rss_bytes / 2**20
    drain = run.fleet.start(
        "consumer",
        run_consumer,
        ConsumePlan(
            options.url,
            queue,
            prefetch=options.prefetch,
            expected=published,
            max_duration=options.phase_limit,
        ),
    )
    run.fleet.wait_ready([drain])
    drain.send("go")
    drained = run.fleet.result(drain, options.phase_limit + 60)
    figures["drain_rate"] = rate(
        drained["distinct"], drained["started_ns"], drained["last_ns"]
    )
    draining = (drained["last_ns"] - drained["started_ns"]) / 1e9
    if draining > 0:
        figures["consumer_cpu_pct"] = 100.0 * drained["cpu_s"] / draining
    counts, ok = delivery_counts(
        FlowResult(filled.publisher, [drained], filled.before, weighed)
    )
    counts["queued"] = queued
    return Outcome(figures, counts, ok and queued == published)


def client_ceiling(run: Run) -> Outcome:
    """The publisher against the bench's own sink: the client's top speed."""
    fleet = run.fleet
    size = _size(run)
    run.settings.update(body_size=size, duration=run.options.duration)
    sink = fleet.start("sink", run_sink, SinkPlan(max_duration=run.options.phase_limit))
    port = fleet.wait_ready([sink])[0]["port"]
    plan = PublishPlan(
        url=f"amqp://bench:bench@127.0.0.1:{port}/",
        exchange="",
        routing_key="sink",
        body_size=size,
        max_count=UNBOUNDED,
        duration=run.options.duration,
        fence=False,
        sink=True,
    )
    publisher = fleet.start("publisher", run_publisher, plan)
    fleet.wait_ready([publisher])
    publisher.send("go")
    pub = fleet.result(publisher, run.options.duration + 60)
    took = fleet.result(sink, 60)
    expected_bytes = pub["published"] * pub["message_bytes"]
    counts = {
        "published": int(pub["published"]),
        "sink_messages": int(took["discarded_bytes"]) // int(pub["message_bytes"]),
    }
    figures = {
        "publish_rate": rate(pub["published"], pub["started_ns"], pub["sent_ns"]),
        "publisher_cpu_pct": 100.0
        * pub["cpu_s"]
        / max((pub["sent_ns"] - pub["started_ns"]) / 1e9, 1e-9),
    }
    return Outcome(figures, counts, took["discarded_bytes"] == expected_bytes)
