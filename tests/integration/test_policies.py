"""Policies: set and cleared at run time through the node, or read from the
configuration file, and what clients then see of the queues and exchanges
they match.

A policy matches by regular expression (anywhere in the name unless
anchored), for queues, exchanges or both; of several matching policies only
the one of highest priority applies. Where a queue argument and the policy
set the same key, the lower value wins for the numeric limits and the
argument wins for the rest, as in RabbitMQ. Each test uses names with its
own prefix and anchors its patterns to it, so the session broker serves them
all; the ``policies`` fixture clears what a test set.
"""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pika
import pytest
from pika.adapters.blocking_connection import BlockingChannel, BlockingConnection
from pika.exceptions import NackError

from amqpd.broker.policy import Policy
from amqpd.testing import BrokerThread


class Policies:
    """Sets policies on a broker's default vhost; clears them afterwards."""

    def __init__(self, broker: BrokerThread) -> None:
        self.broker = broker
        self.names: list[str] = []
        self.prefix = f"pol{uuid.uuid4().hex[:10]}"

    @property
    def node(self) -> Any:
        assert self.broker.broker is not None
        return self.broker.broker.node

    def set(
        self,
        name: str,
        pattern: str,
        definition: dict[str, Any],
        priority: int = 0,
        apply_to: str = "all",
    ) -> Policy:
        self.names.append(name)
        policy: Policy = self.broker.call(
            lambda: self.node.set_policy(
                "/", name, pattern, definition, priority=priority, apply_to=apply_to
            )
        )
        return policy

    def clear(self, name: str) -> bool:
        cleared: bool = self.broker.call(lambda: self.node.clear_policy("/", name))
        return cleared

    def settings(self, queue: str) -> dict[str, Any]:
        """The queue's effective settings, read on the broker's loop."""

        def read() -> dict[str, Any]:
            return dataclasses.asdict(self.node.vhosts["/"].queues[queue].settings)

        result: dict[str, Any] = self.broker.call(read)
        return result

    def exchange_policy(self, exchange: str) -> tuple[str | None, str | None]:
        """(policy name, effective alternate exchange) of an exchange."""

        def read() -> tuple[str | None, str | None]:
            ex = self.node.vhosts["/"].exchanges[exchange]
            return (ex.policy.name if ex.policy else None), ex.alternate

        result: tuple[str | None, str | None] = self.broker.call(read)
        return result


@pytest.fixture
def policies(amqpd_session_broker: BrokerThread) -> Iterator[Policies]:
    helper = Policies(amqpd_session_broker)
    yield helper
    for name in helper.names:
        helper.clear(name)


@pytest.fixture
def conn(amqpd_session_broker: BrokerThread) -> Iterator[BlockingConnection]:
    connection = pika.BlockingConnection(pika.URLParameters(amqpd_session_broker.url))
    yield connection
    if connection.is_open:
        connection.close()


@pytest.fixture
def ch(conn: BlockingConnection) -> BlockingChannel:
    return conn.channel()


def declare(ch: BlockingChannel, name: str, **arguments: Any) -> str:
    ch.queue_declare(name, auto_delete=False, arguments=arguments)
    return name


def count(ch: BlockingChannel, queue: str) -> int:
    return int(ch.queue_declare(queue, passive=True).method.message_count)


def publish(ch: BlockingChannel, queue: str, *bodies: bytes) -> None:
    for body in bodies:
        ch.basic_publish("", queue, body)


def drain(ch: BlockingChannel, queue: str) -> list[bytes]:
    bodies = []
    while True:
        method, _, body = ch.basic_get(queue, auto_ack=True)
        if method is None:
            return bodies
        bodies.append(body)


def wait_for(done: Callable[[], bool], timeout: float = 2.0) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            pytest.fail("condition not reached in time")
        time.sleep(0.01)


# matching: pattern, apply-to, priority


def test_policy_applies_to_queues_its_pattern_matches_anywhere(
    policies: Policies, ch: BlockingChannel
) -> None:
    p = policies.prefix
    policies.set(f"{p}-any", f"{p}-jobs", {"max-length": 1}, apply_to="queues")
    matching = declare(ch, f"x-{p}-jobs-1")
    other = declare(ch, f"{p}-mail")
    assert policies.settings(matching)["policy"] == f"{p}-any"
    assert policies.settings(other)["policy"] is None
    publish(ch, matching, b"1", b"2")
    publish(ch, other, b"1", b"2")
    assert (count(ch, matching), count(ch, other)) == (1, 2)


def test_anchored_pattern_matches_whole_names_only(
    policies: Policies, ch: BlockingChannel
) -> None:
    p = policies.prefix
    policies.set(f"{p}-exact", f"^{p}-q$", {"max-length": 1})
    exact = declare(ch, f"{p}-q")
    longer = declare(ch, f"{p}-q2")
    assert policies.settings(exact)["max_length"] == 1
    assert policies.settings(longer)["max_length"] is None


def test_highest_priority_policy_applies_alone(
    policies: Policies, ch: BlockingChannel
) -> None:
    p = policies.prefix
    policies.set(f"{p}-low", f"^{p}", {"max-length": 1}, priority=1)
    policies.set(f"{p}-high", f"^{p}", {"message-ttl": 60000}, priority=5)
    queue = declare(ch, f"{p}-q")
    settings = policies.settings(queue)
    assert (settings["policy"], settings["message_ttl"], settings["max_length"]) == (
        f"{p}-high", 60000, None,
    )  # fmt: skip
    publish(ch, queue, b"1", b"2", b"3")
    assert count(ch, queue) == 3
    # the higher one goes: the lower one applies again
    policies.clear(f"{p}-high")
    assert policies.settings(queue)["policy"] == f"{p}-low"
    assert count(ch, queue) == 1


def test_apply_to_exchanges_leaves_queues_alone(
    policies: Policies, ch: BlockingChannel
) -> None:
    p = policies.prefix
    ch.exchange_declare(f"{p}-ex", "direct", auto_delete=False)
    ch.exchange_declare(f"{p}-ae", "fanout", auto_delete=False)
    policies.set(
        f"{p}-ex-only", f"^{p}-", {"alternate-exchange": f"{p}-ae"},
        apply_to="exchanges",
    )  # fmt: skip
    queue = declare(ch, f"{p}-q")
    assert policies.settings(queue)["policy"] is None
    assert policies.exchange_policy(f"{p}-ex") == (f"{p}-ex-only", f"{p}-ae")
    for name in (f"{p}-ex", f"{p}-ae"):
        ch.exchange_delete(name)


def test_apply_to_queues_leaves_exchanges_alone(
    policies: Policies, ch: BlockingChannel
) -> None:
    p = policies.prefix
    ch.exchange_declare(f"{p}-ex", "direct", auto_delete=False)
    policies.set(
        f"{p}-q-only", f"^{p}-", {"alternate-exchange": "amq.fanout",
                                   "max-length": 1}, apply_to="queues",
    )  # fmt: skip
    queue = declare(ch, f"{p}-q")
    assert policies.exchange_policy(f"{p}-ex") == (None, None)
    assert policies.settings(queue)["max_length"] == 1
    ch.exchange_delete(f"{p}-ex")


def test_apply_to_all_covers_queues_and_exchanges(
    policies: Policies, ch: BlockingChannel
) -> None:
    p = policies.prefix
    ch.exchange_declare(f"{p}-ex", "direct", auto_delete=False)
    policies.set(
        f"{p}-all", f"^{p}-", {"alternate-exchange": "amq.fanout", "max-length": 2}
    )
    queue = declare(ch, f"{p}-q")
    assert policies.exchange_policy(f"{p}-ex") == (f"{p}-all", "amq.fanout")
    assert policies.settings(queue)["max_length"] == 2
    ch.exchange_delete(f"{p}-ex")


def test_list_policies_shows_what_is_set(policies: Policies) -> None:
    p = policies.prefix
    policies.set(f"{p}-a", f"^{p}", {"max-length": 3}, priority=2, apply_to="queues")
    listed = policies.broker.call(lambda: policies.node.list_policies("/"))
    mine = [x for x in listed if x.name.startswith(p)]
    assert [
        (x.vhost, x.name, x.pattern, x.definition, x.priority, x.apply_to) for x in mine
    ] == [("/", f"{p}-a", f"^{p}", {"max-length": 3}, 2, "queues")]


# changes apply to existing queues


def test_policy_set_later_applies_to_existing_queue(
    policies: Policies, ch: BlockingChannel
) -> None:
    p = policies.prefix
    queue = declare(ch, f"{p}-q")
    publish(ch, queue, b"1", b"2", b"3", b"4", b"5")
    policies.set(f"{p}-cap", f"^{p}-q$", {"max-length": 2})
    assert count(ch, queue) == 2
    assert drain(ch, queue) == [b"4", b"5"]


def test_replacing_a_policy_changes_existing_queues(
    policies: Policies, ch: BlockingChannel
) -> None:
    p = policies.prefix
    policies.set(f"{p}-cap", f"^{p}-q$", {"max-length": 4})
    queue = declare(ch, f"{p}-q")
    publish(ch, queue, b"1", b"2", b"3", b"4")
    policies.set(f"{p}-cap", f"^{p}-q$", {"max-length": 1})
    assert drain(ch, queue) == [b"4"]


def test_clear_policy_reverts_to_the_arguments(
    policies: Policies, ch: BlockingChannel
) -> None:
    p = policies.prefix
    policies.set(f"{p}-cap", f"^{p}-q$", {"max-length": 1, "message-ttl": 5})
    queue = declare(ch, f"{p}-q", **{"x-message-ttl": 60000})
    assert policies.clear(f"{p}-cap") is True
    assert policies.clear(f"{p}-cap") is False
    settings = policies.settings(queue)
    assert (settings["policy"], settings["max_length"], settings["message_ttl"]) == (
        None, None, 60000,
    )  # fmt: skip
    publish(ch, queue, b"1", b"2", b"3")
    assert count(ch, queue) == 3


# each key, with and without a queue argument

LOWER_WINS = [
    ("message-ttl", "x-message-ttl", "message_ttl"),
    ("expires", "x-expires", "expires"),
    ("max-length", "x-max-length", "max_length"),
    ("max-length-bytes", "x-max-length-bytes", "max_length_bytes"),
    ("delivery-limit", "x-delivery-limit", "delivery_limit"),
]


@pytest.mark.parametrize(("key", "arg", "field"), LOWER_WINS, ids=lambda v: v)
@pytest.mark.parametrize(
    ("argument", "policy", "effective"),
    [(50000, 70000, 50000), (90000, 70000, 70000), (None, 70000, 70000)],
    ids=["argument-lower", "policy-lower", "policy-only"],
)
def test_lower_value_wins_for_numeric_limits(
    policies: Policies,
    ch: BlockingChannel,
    key: str,
    arg: str,
    field: str,
    argument: int | None,
    policy: int,
    effective: int,
) -> None:
    p = policies.prefix
    policies.set(f"{p}-num", f"^{p}-q$", {key: policy})
    args = {} if argument is None else {arg: argument}
    queue = declare(ch, f"{p}-q", **args)
    assert policies.settings(queue)[field] == effective
    ch.queue_delete(queue)


@pytest.mark.parametrize(
    ("key", "arg", "field", "argument", "policy"),
    [
        ("overflow", "x-overflow", "overflow", "reject-publish", "drop-head"),
        (
            "dead-letter-exchange",
            "x-dead-letter-exchange",
            "dead_letter_exchange",
            "dlx-arg",
            "dlx-policy",
        ),
    ],
    ids=["overflow", "dead-letter-exchange"],
)
def test_argument_wins_for_other_keys(
    policies: Policies,
    ch: BlockingChannel,
    key: str,
    arg: str,
    field: str,
    argument: str,
    policy: str,
) -> None:
    p = policies.prefix
    policies.set(f"{p}-kw", f"^{p}-", {key: policy})
    with_arg = declare(ch, f"{p}-a", **{arg: argument})
    without = declare(ch, f"{p}-b")
    assert policies.settings(with_arg)[field] == argument
    assert policies.settings(without)[field] == policy


def test_argument_wins_for_dead_letter_routing_key(
    policies: Policies, ch: BlockingChannel
) -> None:
    p = policies.prefix
    policies.set(f"{p}-dl", f"^{p}-q$", {"dead-letter-routing-key": "from-policy"})
    queue = declare(ch, f"{p}-q", **{
        "x-dead-letter-exchange": "", "x-dead-letter-routing-key": f"{p}-dead",
    })  # fmt: skip
    assert policies.settings(queue)["dead_letter_routing_key"] == f"{p}-dead"


def test_policy_message_ttl_expires_messages(
    policies: Policies, ch: BlockingChannel
) -> None:
    p = policies.prefix
    policies.set(f"{p}-ttl", f"^{p}-q$", {"message-ttl": 30})
    queue = declare(ch, f"{p}-q")
    publish(ch, queue, b"short-lived")
    wait_for(lambda: count(ch, queue) == 0)


def test_argument_ttl_lower_than_policy_ttl_wins_behaviourally(
    policies: Policies, ch: BlockingChannel
) -> None:
    p = policies.prefix
    policies.set(f"{p}-ttl", f"^{p}-", {"message-ttl": 60000})
    fast = declare(ch, f"{p}-fast", **{"x-message-ttl": 30})
    slow = declare(ch, f"{p}-slow", **{"x-message-ttl": 600000})
    publish(ch, fast, b"m")
    publish(ch, slow, b"m")
    wait_for(lambda: count(ch, fast) == 0)
    assert count(ch, slow) == 1
    assert policies.settings(slow)["message_ttl"] == 60000


def test_policy_expires_deletes_unused_queue(
    policies: Policies, ch: BlockingChannel
) -> None:
    p = policies.prefix
    policies.set(f"{p}-exp", f"^{p}-q$", {"expires": 60})
    queue = declare(ch, f"{p}-q")
    assert policies.settings(queue)["expires"] == 60

    # watched on the broker: a passive declare would count as use
    def gone() -> bool:
        present: bool = policies.broker.call(
            lambda: queue in policies.node.vhosts["/"].queues
        )
        return not present

    wait_for(gone)


def test_policy_max_length_bytes_drops_from_the_head(
    policies: Policies, ch: BlockingChannel
) -> None:
    p = policies.prefix
    policies.set(f"{p}-bytes", f"^{p}-q$", {"max-length-bytes": 10})
    queue = declare(ch, f"{p}-q")
    publish(ch, queue, b"aaaa", b"bbbb", b"cccc")
    assert drain(ch, queue) == [b"bbbb", b"cccc"]


def test_argument_max_length_lower_than_policy_wins_behaviourally(
    policies: Policies, ch: BlockingChannel
) -> None:
    p = policies.prefix
    policies.set(f"{p}-cap", f"^{p}-", {"max-length": 3})
    low = declare(ch, f"{p}-low", **{"x-max-length": 1})
    high = declare(ch, f"{p}-high", **{"x-max-length": 10})
    for queue in (low, high):
        publish(ch, queue, b"1", b"2", b"3", b"4", b"5")
    assert drain(ch, low) == [b"5"]
    assert drain(ch, high) == [b"3", b"4", b"5"]


def test_policy_overflow_reject_publish_nacks_publishes(
    policies: Policies, ch: BlockingChannel
) -> None:
    p = policies.prefix
    policies.set(
        f"{p}-full", f"^{p}-q$", {"max-length": 1, "overflow": "reject-publish"}
    )
    queue = declare(ch, f"{p}-q")
    ch.confirm_delivery()
    publish(ch, queue, b"first")
    with pytest.raises(NackError):
        publish(ch, queue, b"second")
    assert drain(ch, queue) == [b"first"]


def test_argument_overflow_wins_over_policy_overflow(
    policies: Policies, ch: BlockingChannel
) -> None:
    p = policies.prefix
    policies.set(
        f"{p}-full", f"^{p}-q$", {"max-length": 1, "overflow": "reject-publish"}
    )
    queue = declare(ch, f"{p}-q", **{"x-overflow": "drop-head"})
    ch.confirm_delivery()
    publish(ch, queue, b"first", b"second")
    assert drain(ch, queue) == [b"second"]


def test_policy_dead_letter_exchange_and_routing_key(
    policies: Policies, ch: BlockingChannel
) -> None:
    p = policies.prefix
    dead = declare(ch, f"{p}-dead")
    policies.set(
        f"{p}-dlx", f"^{p}-q$",
        {"dead-letter-exchange": "", "dead-letter-routing-key": dead},
    )  # fmt: skip
    queue = declare(ch, f"{p}-q")
    publish(ch, queue, b"bad")
    method, _, _ = ch.basic_get(queue)
    assert method is not None
    ch.basic_reject(method.delivery_tag, requeue=False)
    method, props, body = ch.basic_get(dead, auto_ack=True)
    assert body == b"bad"
    death = props.headers["x-death"][0]
    assert (death["queue"], death["reason"], death["count"]) == (queue, "rejected", 1)


def test_argument_dead_letter_exchange_wins_over_policy(
    policies: Policies, ch: BlockingChannel
) -> None:
    p = policies.prefix
    ch.exchange_declare(f"{p}-dlx-arg", "fanout", auto_delete=False)
    ch.exchange_declare(f"{p}-dlx-pol", "fanout", auto_delete=False)
    to_arg, to_pol = declare(ch, f"{p}-to-arg"), declare(ch, f"{p}-to-pol")
    ch.queue_bind(to_arg, f"{p}-dlx-arg")
    ch.queue_bind(to_pol, f"{p}-dlx-pol")
    policies.set(f"{p}-dlx", f"^{p}-q$", {"dead-letter-exchange": f"{p}-dlx-pol"})
    queue = declare(ch, f"{p}-q", **{"x-dead-letter-exchange": f"{p}-dlx-arg"})
    publish(ch, queue, b"bad")
    method, _, _ = ch.basic_get(queue)
    assert method is not None
    ch.basic_nack(method.delivery_tag, requeue=False)
    assert (drain(ch, to_arg), drain(ch, to_pol)) == ([b"bad"], [])
    for name in (f"{p}-dlx-arg", f"{p}-dlx-pol"):
        ch.exchange_delete(name)


def test_policy_delivery_limit_drops_after_too_many_returns(
    policies: Policies, ch: BlockingChannel
) -> None:
    p = policies.prefix
    dead = declare(ch, f"{p}-dead")
    policies.set(f"{p}-lim", f"^{p}-q$", {
        "delivery-limit": 1, "dead-letter-exchange": "",
        "dead-letter-routing-key": dead,
    })  # fmt: skip
    queue = declare(ch, f"{p}-q")
    publish(ch, queue, b"poison")
    for expected_redelivered in (False, True):
        method, _, _ = ch.basic_get(queue)
        assert method is not None and method.redelivered is expected_redelivered
        ch.basic_nack(method.delivery_tag, requeue=True)
    assert count(ch, queue) == 0
    method, props, body = ch.basic_get(dead, auto_ack=True)
    assert (body, props.headers["x-death"][0]["reason"]) == (
        b"poison", "delivery_limit",
    )  # fmt: skip


def test_policy_alternate_exchange_takes_unroutable_messages(
    policies: Policies, ch: BlockingChannel
) -> None:
    p = policies.prefix
    ch.exchange_declare(f"{p}-ex", "direct", auto_delete=False)
    ch.exchange_declare(f"{p}-ae", "fanout", auto_delete=False)
    caught = declare(ch, f"{p}-caught")
    ch.queue_bind(caught, f"{p}-ae")
    policies.set(
        f"{p}-ae-pol", f"^{p}-ex$", {"alternate-exchange": f"{p}-ae"},
        apply_to="exchanges",
    )  # fmt: skip
    ch.confirm_delivery()
    ch.basic_publish(f"{p}-ex", "nowhere", b"lost?", mandatory=True)
    assert drain(ch, caught) == [b"lost?"]
    # cleared: unroutable again
    policies.clear(f"{p}-ae-pol")
    with pytest.raises(pika.exceptions.UnroutableError):
        ch.basic_publish(f"{p}-ex", "nowhere", b"lost", mandatory=True)
    for name in (f"{p}-ex", f"{p}-ae"):
        ch.exchange_delete(name)


def test_argument_alternate_exchange_wins_over_policy(
    policies: Policies, ch: BlockingChannel
) -> None:
    p = policies.prefix
    ch.exchange_declare(f"{p}-ae-arg", "fanout", auto_delete=False)
    ch.exchange_declare(f"{p}-ae-pol", "fanout", auto_delete=False)
    ch.exchange_declare(
        f"{p}-ex", "direct", auto_delete=False,
        arguments={"alternate-exchange": f"{p}-ae-arg"},
    )  # fmt: skip
    to_arg, to_pol = declare(ch, f"{p}-to-arg"), declare(ch, f"{p}-to-pol")
    ch.queue_bind(to_arg, f"{p}-ae-arg")
    ch.queue_bind(to_pol, f"{p}-ae-pol")
    policies.set(f"{p}-ae", f"^{p}-ex$", {"alternate-exchange": f"{p}-ae-pol"})
    ch.basic_publish(f"{p}-ex", "nowhere", b"m")
    assert policies.exchange_policy(f"{p}-ex") == (f"{p}-ae", f"{p}-ae-arg")
    assert (drain(ch, to_arg), drain(ch, to_pol)) == ([b"m"], [])
    for name in (f"{p}-ex", f"{p}-ae-arg", f"{p}-ae-pol"):
        ch.exchange_delete(name)


def test_rabbitmq_3_policy_with_queue_mode_and_ha_keys_applies_its_other_keys(
    policies: Policies, ch: BlockingChannel
) -> None:
    # common in RabbitMQ 3.x exports: queue-mode and the mirroring keys are
    # accepted (no effect here) and the limits beside them apply
    p = policies.prefix
    policies.set(
        f"{p}-lazy", f"^{p}-q$",
        {"queue-mode": "lazy", "queue-master-locator": "min-masters",
         "ha-mode": "exactly", "ha-params": 2, "ha-sync-mode": "automatic",
         "max-length": 2, "overflow": "reject-publish"},
    )  # fmt: skip
    queue = declare(ch, f"{p}-q")
    ch.confirm_delivery()
    publish(ch, queue, b"1", b"2")
    with pytest.raises(NackError):
        publish(ch, queue, b"3")
    assert drain(ch, queue) == [b"1", b"2"]


# refused policies


def bad(
    definition: dict[str, Any], message: str, *, pattern: str = ".*",
    priority: Any = 0, apply_to: str = "all", id: str,
) -> Any:  # fmt: skip
    return pytest.param(pattern, definition, priority, apply_to, message, id=id)


BAD_POLICIES = [
    bad({"max-priority": 10}, "'max-priority' can only be set as a queue argument",
        id="max-priority"),
    bad({"federation-upstream": "up"}, "unknown policy key 'federation-upstream'",
        id="unknown-key"),
    bad({"ha-mode": "some"}, "'ha-mode' must be one of all, exactly, nodes",
        id="bad-ha-mode"),
    bad({"queue-mode": "lazier"}, "'queue-mode' must be one of default, lazy",
        id="bad-queue-mode"),
    bad({}, "a policy needs at least one key", id="empty"),
    bad({"max-length": 1}, "invalid pattern '('", pattern="(", id="bad-pattern"),
    bad({"max-length": 1}, "apply-to must be one of", apply_to="streams",
        id="bad-apply-to"),
    bad({"max-length": 1}, "priority must be an integer", priority="high",
        id="bad-priority"),
    bad({"message-ttl": "60"}, "'message-ttl' must be an integer", id="ttl-string"),
    bad({"expires": 0}, "'expires' must be an integer >= 1", id="expires-zero"),
    bad({"max-length": -1}, "'max-length' must be an integer >= 0",
        id="negative-length"),
    bad({"delivery-limit": True}, "'delivery-limit' must be an", id="bool-limit"),
    bad({"overflow": "drop-tail"}, "'overflow' must be one of", id="bad-overflow"),
    bad({"dead-letter-exchange": 5}, "'dead-letter-exchange' must be a string",
        id="dlx-not-string"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("pattern", "definition", "priority", "apply_to", "message"), BAD_POLICIES
)
def test_invalid_policy_raises_value_error_and_is_not_set(
    policies: Policies,
    pattern: str,
    definition: dict[str, Any],
    priority: Any,
    apply_to: str,
    message: str,
) -> None:
    name = f"{policies.prefix}-bad"
    with pytest.raises(ValueError, match=re.escape(message)):
        policies.set(name, pattern, definition, priority, apply_to)
    listed = policies.broker.call(lambda: policies.node.list_policies())
    assert name not in [x.name for x in listed]


def test_policy_for_missing_vhost_raises_value_error(policies: Policies) -> None:
    with pytest.raises(ValueError, match="vhost 'nowhere' not found"):
        policies.broker.call(
            lambda: policies.node.set_policy("nowhere", "p", ".*", {"max-length": 1})
        )


# policies from the configuration


def test_policies_from_broker_configuration_apply_at_start() -> None:
    configured = [
        {"name": "cap", "pattern": "^capped\\.", "definition": {"max-length": 1},
         "apply-to": "queues", "priority": 3},
        {"name": "ae", "pattern": "^routed$", "definition":
         {"alternate-exchange": "amq.fanout"}, "apply-to": "exchanges"},
    ]  # fmt: skip
    with BrokerThread(policies=configured) as broker:
        node = broker.broker.node  # type: ignore[union-attr]
        listed = broker.call(
            lambda: sorted(
                (p.name, p.priority, p.apply_to) for p in node.list_policies("/")
            )
        )
        assert listed == [("ae", 0, "exchanges"), ("cap", 3, "queues")]
        conn = pika.BlockingConnection(pika.URLParameters(broker.url))
        ch = conn.channel()
        ch.queue_declare("capped.jobs")
        ch.queue_declare("free")
        ch.queue_bind("free", "amq.fanout")
        ch.exchange_declare("routed", "direct")
        publish(ch, "capped.jobs", b"1", b"2")
        ch.basic_publish("routed", "no-binding", b"via ae")
        assert drain(ch, "capped.jobs") == [b"2"]
        assert drain(ch, "free") == [b"via ae"]
        conn.close()


def test_policy_set_at_run_time_is_kept_across_a_restart(tmp_path: Path) -> None:
    with BrokerThread(data_dir=tmp_path) as broker:
        node = broker.broker.node  # type: ignore[union-attr]
        broker.call(
            lambda: node.set_policy(
                "/", "kept", "^k$", {"max-length": 1}, priority=4, apply_to="queues"
            )
        )
    with BrokerThread(data_dir=tmp_path) as broker:
        node = broker.broker.node  # type: ignore[union-attr]
        listed = broker.call(lambda: node.list_policies("/"))
        shown = [(p.name, p.pattern, p.definition, p.priority, p.apply_to)
                 for p in listed]  # fmt: skip
        assert shown == [("kept", "^k$", {"max-length": 1}, 4, "queues")]
        conn = pika.BlockingConnection(pika.URLParameters(broker.url))
        ch = conn.channel()
        ch.queue_declare("k")
        publish(ch, "k", b"1", b"2")
        assert drain(ch, "k") == [b"2"]
        conn.close()


READY = re.compile(r"amqpd ready: listening on .*:(\d+)")


def run_broker(config: Path, data_dir: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "amqpd", "--config", str(config), "--port", "0",
         "--bind", "127.0.0.1", "--data-dir", str(data_dir)],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def test_policies_from_toml_config_file_apply_in_the_cli_broker(
    tmp_path: Path,
) -> None:
    config = tmp_path / "amqpd.toml"
    config.write_text(
        '[[policies]]\nname = "jobs"\npattern = "^jobs\\\\."\napply-to = "queues"\n'
        "priority = 1\n"
        'definition = { max-length = 2, dead-letter-exchange = "" , '
        'dead-letter-routing-key = "jobs-dead" }\n'
        '\n[[policies]]\nname = "ttl"\npattern = "^short$"\n'
        "definition = { message-ttl = 20 }\n"
    )
    proc = run_broker(config, tmp_path / "data")
    try:
        assert proc.stderr is not None
        port = 0
        deadline = time.monotonic() + 15
        while not port and time.monotonic() < deadline:
            line = proc.stderr.readline()
            if not line:
                pytest.fail("amqpd exited before it was ready")
            match = READY.search(line)
            if match:
                port = int(match.group(1))
        assert port, "no ready line"
        conn = pika.BlockingConnection(
            pika.URLParameters(f"amqp://guest:guest@127.0.0.1:{port}/")
        )
        ch = conn.channel()
        ch.queue_declare("jobs-dead")
        ch.queue_declare("jobs.mail")
        ch.queue_declare("short")
        publish(ch, "jobs.mail", b"1", b"2", b"3")
        publish(ch, "short", b"gone soon")
        assert drain(ch, "jobs.mail") == [b"2", b"3"]
        assert drain(ch, "jobs-dead") == [b"1"]
        wait_for(lambda: count(ch, "short") == 0)
        conn.close()
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        if proc.stderr is not None:
            proc.stderr.close()


def test_refused_policy_in_config_file_stops_the_start_with_exit_code_1(
    tmp_path: Path,
) -> None:
    config = tmp_path / "amqpd.toml"
    config.write_text(
        '[[policies]]\nname = "bad"\npattern = ".*"\n'
        "definition = { max-priority = 10 }\n"
    )
    proc = run_broker(config, tmp_path / "data")
    try:
        _, err = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    assert proc.returncode == 1
    assert (
        "amqpd: bad policy in configuration: 'max-priority' can only be set as a "
        "queue argument"
    ) in err
