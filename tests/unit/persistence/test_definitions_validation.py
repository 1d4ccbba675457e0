"""Definitions the broker would refuse are refused at import, whole, with
one problem per entry, and the store is left as it was."""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from amqpd.persistence.definitions import (
    Binding,
    Definitions,
    DefinitionsStore,
    Exchange,
    NotFound,
    Queue,
    VHost,
    parse_json,
    sqlite_url,
)
from amqpd.persistence.definitions.validation import (
    DefinitionsRefused,
    find_problems,
    import_checked,
)

pytestmark = pytest.mark.anyio

# Shaped like `rabbitmqctl export_definitions` of RabbitMQ 3.13, using
# every kind of entry amqpd restores.
GOOD_EXPORT: dict[str, Any] = {
    "rabbit_version": "3.13.2",
    "users": [{
        "name": "app",
        "password_hash": "kI3GCqW5JLMJa4iX1lo7X4D6XbYqlLgxIs30+P6tENUV2POR",
        "hashing_algorithm": "rabbit_password_hashing_sha256", "tags": [],
        "limits": {},
    }],
    "vhosts": [{"name": "/", "metadata": {"default_queue_type": "classic"}}],
    "permissions": [{
        "user": "app", "vhost": "/", "configure": ".*", "write": ".*", "read": ".*",
    }],
    "policies": [{
        "vhost": "/", "name": "limits", "pattern": "^work\\.", "apply-to": "queues",
        "definition": {"max-length": 1000, "overflow": "reject-publish",
                       "dead-letter-exchange": "dlx"},
        "priority": 2,
    }],
    "queues": [
        {"name": "work.orders", "vhost": "/", "durable": True, "auto_delete": False,
         "arguments": {"x-queue-type": "quorum", "x-delivery-limit": 5},
         "type": "quorum"},
        {"name": "work.urgent", "vhost": "/", "durable": True, "auto_delete": False,
         "arguments": {"x-max-priority": 10, "x-message-ttl": 60000,
                       "x-queue-type": "classic"}},
        {"name": "dead", "vhost": "/", "durable": True, "auto_delete": False,
         "arguments": {}},
    ],
    "exchanges": [
        {"name": "events", "vhost": "/", "type": "topic", "durable": True,
         "auto_delete": False, "internal": False,
         "arguments": {"alternate-exchange": "dlx"}},
        {"name": "dlx", "vhost": "/", "type": "fanout", "durable": True,
         "auto_delete": False, "internal": False, "arguments": {}},
        {"name": "by-header", "vhost": "/", "type": "headers", "durable": True,
         "auto_delete": False, "internal": False, "arguments": {}},
    ],
    "bindings": [
        {"source": "events", "vhost": "/", "destination": "work.orders",
         "destination_type": "queue", "routing_key": "order.*", "arguments": {}},
        {"source": "dlx", "vhost": "/", "destination": "dead",
         "destination_type": "queue", "routing_key": "", "arguments": {}},
        {"source": "by-header", "vhost": "/", "destination": "work.urgent",
         "destination_type": "queue", "routing_key": "",
         "arguments": {"x-match": "any", "urgent": True}},
        {"source": "amq.topic", "vhost": "/", "destination": "events",
         "destination_type": "exchange", "routing_key": "#", "arguments": {}},
    ],
}  # fmt: skip

Q = "queue 'q1' in vhost '/': "
B = "binding from exchange "

# (entry added to a good file, the line it is refused with)
BAD = [
    pytest.param(
        "queues", {"arguments": {"x-max-priority": 0}},
        Q + "invalid arg 'x-max-priority': {value_zero,0}",
        id="priority-0",
    ),
    pytest.param(
        "queues", {"arguments": {"x-max-priority": 300}},
        Q + "invalid arg 'x-max-priority': {max_value_exceeded,300}",
        id="priority-300",
    ),
    pytest.param(
        "queues", {"arguments": {"x-queue-type": "stream"}},
        Q + "invalid arg 'x-queue-type': stream queues are not supported by this "
        "broker yet; declare a classic or quorum queue",
        id="stream",
    ),
    pytest.param(
        "queues", {"arguments": {"x-queue-type": "lazy"}},
        Q + "invalid arg 'x-queue-type': unknown queue type 'lazy'",
        id="unknown-queue-type",
    ),
    pytest.param(
        "queues", {"auto_delete": True, "arguments": {"x-queue-type": "quorum"}},
        Q + "invalid property 'auto-delete'",
        id="quorum-auto-delete",
    ),
    pytest.param(
        "queues", {"durable": False, "arguments": {"x-queue-type": "quorum"}},
        Q + "invalid property 'non-durable'",
        id="quorum-transient",
    ),
    pytest.param(
        "queues", {"arguments": {"x-queue-type": "quorum", "x-max-priority": 5}},
        Q + "invalid arg 'x-max-priority': not supported by quorum queues",
        id="quorum-priority",
    ),
    pytest.param(
        "queues", {"arguments": {"x-message-ttl": -1}},
        Q + "invalid arg 'x-message-ttl': {value_negative,-1}",
        id="ttl-negative",
    ),
    pytest.param(
        "queues", {"arguments": {"x-message-ttl": "60000"}},
        Q + 'invalid arg \'x-message-ttl\': "expected integer, got longstr"',
        id="ttl-string",
    ),
    pytest.param(
        "queues", {"arguments": {"x-overflow": "bogus"}},
        Q + "invalid arg 'x-overflow': invalid_overflow",
        id="overflow-bogus",
    ),
    pytest.param(
        "queues", {"name": "amq.mine"},
        "queue 'amq.mine' in vhost '/': queue name 'amq.mine' contains reserved "
        "prefix 'amq.*'",
        id="amq-queue-name",
    ),
    pytest.param(
        "queues", {"name": ""}, "queue '' in vhost '/': a queue needs a name",
        id="empty-queue-name",
    ),
    pytest.param(
        "exchanges", {"name": "delayed", "type": "x-delayed-message"},
        "exchange 'delayed' in vhost '/': unknown exchange type 'x-delayed-message'",
        id="unknown-exchange-type",
    ),
    pytest.param(
        "bindings", {"source": "events", "destination": "gone"},
        B + "'events' to queue 'gone' in vhost '/': no queue 'gone' in the file or "
        "the store",
        id="missing-queue",
    ),
    pytest.param(
        "bindings", {"source": "gone", "destination": "dead", "routing_key": "k"},
        B + "'gone' to queue 'dead' with routing key 'k' in vhost '/': no exchange "
        "'gone' in the file or the store",
        id="missing-source",
    ),
    pytest.param(
        "bindings", {"source": "events", "destination": "gone",
                     "destination_type": "exchange"},
        B + "'events' to exchange 'gone' in vhost '/': no exchange 'gone' in the file "
        "or the store",
        id="missing-destination-exchange",
    ),
    pytest.param(
        "bindings", {"source": "", "destination": "dead"},
        B + "'' to queue 'dead' in vhost '/': operation not permitted on the default "
        "exchange",
        id="default-exchange",
    ),
    pytest.param(
        "bindings", {"source": "by-header", "destination": "dead",
                     "arguments": {"x-match": "some"}},
        B + "'by-header' to queue 'dead' in vhost '/': x-match must be all, any, "
        "all-with-x or any-with-x, not 'some'",
        id="bad-x-match",
    ),
    pytest.param(
        "policies", {"pattern": "(unclosed"},
        "policy 'p1' in vhost '/': invalid pattern '(unclosed': missing ), "
        "unterminated subpattern at position 0",
        id="bad-pattern",
    ),
    pytest.param(
        "policies", {"definition": {"federation-upstream": "up"}},
        "policy 'p1' in vhost '/': unknown policy key 'federation-upstream'",
        id="unknown-policy-key",
    ),
    pytest.param(
        "policies", {"definition": {"message-ttl": "1000"}},
        "policy 'p1' in vhost '/': 'message-ttl' must be an integer >= 0",
        id="policy-value-type",
    ),
    pytest.param(
        "policies", {"definition": {"max-priority": 5}},
        "policy 'p1' in vhost '/': 'max-priority' can only be set as a queue argument",
        id="policy-max-priority",
    ),
    pytest.param(
        "policies", {"apply-to": "streams"},
        "policy 'p1' in vhost '/': apply-to must be one of queues, exchanges, all",
        id="bad-apply-to",
    ),
]  # fmt: skip

DEFAULTS: dict[str, dict[str, Any]] = {
    "queues": {"name": "q1", "vhost": "/", "durable": True, "arguments": {}},
    "exchanges": {"name": "x1", "vhost": "/", "type": "direct"},
    "bindings": {"vhost": "/", "destination_type": "queue", "routing_key": ""},
    "policies": {"name": "p1", "vhost": "/", "pattern": ".*",
                 "definition": {"max-length": 1}},
}  # fmt: skip


def with_entry(section: str, fields: dict[str, Any]) -> dict[str, Any]:
    document = copy.deepcopy(GOOD_EXPORT)
    document[section].append({**DEFAULTS[section], **fields})
    return document


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[DefinitionsStore]:
    """A SQLite store already holding a vhost, a queue and an exchange."""
    async with DefinitionsStore.open(sqlite_url(tmp_path)) as opened:
        await opened.merge(
            Definitions(
                vhosts=(VHost("/"),),
                queues=(Queue("/", "stored.q"),),
                exchanges=(Exchange("/", "stored.x", "headers"),),
            )
        )
        yield opened


def test_a_rabbitmq_export_has_no_problems() -> None:
    assert find_problems(parse_json(GOOD_EXPORT).definitions) == []


@pytest.mark.parametrize(("section", "fields", "line"), BAD)
def test_each_bad_entry_is_named_with_the_brokers_reason(
    section: str, fields: dict[str, Any], line: str
) -> None:
    definitions = parse_json(with_entry(section, fields)).definitions

    assert [str(problem) for problem in find_problems(definitions)] == [line]


@pytest.mark.parametrize(("section", "fields", "line"), BAD)
async def test_a_bad_entry_refuses_the_whole_import_and_stores_nothing(
    store: DefinitionsStore, section: str, fields: dict[str, Any], line: str
) -> None:
    before = await store.load()

    with pytest.raises(DefinitionsRefused) as refused:
        await import_checked(store, with_entry(section, fields))

    assert [str(problem) for problem in refused.value.problems] == [line]
    assert str(refused.value) == line
    assert await store.load() == before


async def test_every_problem_is_reported_at_once(store: DefinitionsStore) -> None:
    document = with_entry("queues", {"arguments": {"x-max-priority": 0}})
    document["policies"].append({**DEFAULTS["policies"], "pattern": "["})
    document["bindings"].append({**DEFAULTS["bindings"], "source": "nope",
                                 "destination": "dead"})  # fmt: skip

    with pytest.raises(DefinitionsRefused) as refused:
        await import_checked(store, document)

    kinds = [problem.what.split()[0] for problem in refused.value.problems]
    assert kinds == ["policy", "queue", "binding"]
    assert str(refused.value).count("; ") == 2


async def test_a_good_export_imports_and_bindings_may_name_stored_entities(
    store: DefinitionsStore,
) -> None:
    document = copy.deepcopy(GOOD_EXPORT)
    document["bindings"].append({
        "source": "stored.x", "vhost": "/", "destination": "stored.q",
        "destination_type": "queue", "routing_key": "",
        "arguments": {"x-match": "all", "kind": "audit"},
    })  # fmt: skip

    summary = await import_checked(store, document)

    loaded = await store.load()
    assert {q.name for q in loaded.queues} == {
        "stored.q", "work.orders", "work.urgent", "dead",
    }  # fmt: skip
    assert Binding("/", "stored.x", "stored.q", "queue", "", {
        "x-match": "all", "kind": "audit",
    }) in loaded.bindings  # fmt: skip
    assert summary.definitions.policies[0].name == "limits"


async def test_a_binding_is_checked_against_the_stored_exchange_type(
    store: DefinitionsStore,
) -> None:
    document = with_entry("bindings", {
        "source": "stored.x", "destination": "stored.q",
        "arguments": {"x-match": 1},
    })  # fmt: skip

    with pytest.raises(DefinitionsRefused) as refused:
        await import_checked(store, document)

    assert refused.value.problems[0].reason == "x-match must be a string, not int (1)"


async def test_a_missing_vhost_is_still_the_stores_not_found(
    store: DefinitionsStore,
) -> None:
    before = await store.load()
    document = with_entry("queues", {"vhost": "elsewhere"})

    with pytest.raises(NotFound, match="no vhost 'elsewhere'"):
        await import_checked(store, document)

    assert await store.load() == before
