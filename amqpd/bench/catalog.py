"""Every scenario the bench knows, in the order a full run goes through them."""

from __future__ import annotations

from amqpd.bench import operations, scenarios
from amqpd.bench.runner import Scenario

SCENARIOS: dict[str, Scenario] = {
    scenario.name: scenario
    for scenario in (
        Scenario(
            "client-ceiling",
            "the bench publisher into a local sink: the client's own limit",
            scenarios.client_ceiling,
            needs_broker=False,
        ),
        Scenario(
            "publish-only",
            "1 publisher, transient 16-byte bodies, queue without consumer",
            scenarios.publish_only,
            warmup=True,
        ),
        Scenario(
            "pubsub-16B",
            "1 publisher, 1 consumer, 16-byte bodies, ack multiple every 100",
            scenarios.pubsub(16),
            warmup=True,
        ),
        Scenario(
            "pubsub-1KiB",
            "1 publisher, 1 consumer, 1 KiB bodies, ack multiple every 100",
            scenarios.pubsub(1024),
            warmup=True,
        ),
        Scenario(
            "persistent-confirm",
            "persistent messages, durable queue, confirm window, 1 consumer",
            scenarios.persistent_confirm,
            warmup=True,
        ),
        Scenario(
            "fanout-10",
            "1 publisher into a fanout exchange bound to 10 queues, 10 consumers",
            scenarios.fanout,
            warmup=True,
        ),
        Scenario(
            "latency",
            "fixed rate, end-to-end and confirm latency percentiles",
            scenarios.latency,
            warmup=True,
        ),
        Scenario(
            "backlog",
            "fill a queue with 100-byte messages, weigh it, drain it",
            scenarios.backlog,
            fresh_broker=True,
        ),
        Scenario(
            "persistent-backlog",
            "backlog with persistent messages into a durable queue, confirmed",
            scenarios.persistent_backlog,
            fresh_broker=True,
        ),
        Scenario(
            "conn-churn",
            "connect, open a channel, close, many times",
            operations.conn_churn,
        ),
        Scenario(
            "many-queues",
            "declare many queues, weigh them, delete them",
            operations.many_queues,
            fresh_broker=True,
        ),
    )
}
