"""RabbitMQ's definitions file: export, import, and the shapes older
RabbitMQ versions wrote."""

from __future__ import annotations

import copy
import dataclasses
import json
import re
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from amqpd.persistence.definitions import (
    Binding,
    Definitions,
    DefinitionsStore,
    Exchange,
    GlobalParameter,
    MemoryDefinitionsStore,
    NotFound,
    Parameter,
    Permission,
    Policy,
    Queue,
    TopicPermission,
    User,
    VHost,
)
from amqpd.persistence.definitions.passwords import MD5, SHA512, check_password
from amqpd.persistence.definitions.rabbitmq_json import (
    InvalidDefinitions,
    export_json,
    import_json,
    parse_json,
    to_plain_json,
)

pytestmark = pytest.mark.anyio

GUEST_HASH = "kI3GCqW5JLMJa4iX1lo7X4D6XbYqlLgxIs30+P6tENUV2POR"

# Shaped like `rabbitmqctl export_definitions` output of RabbitMQ 3.13.
RABBITMQ_EXPORT: dict[str, Any] = {
    "rabbit_version": "3.13.2",
    "rabbitmq_version": "3.13.2",
    "product_name": "RabbitMQ",
    "product_version": "3.13.2",
    "users": [
        {
            "name": "guest",
            "password_hash": GUEST_HASH,
            "hashing_algorithm": "rabbit_password_hashing_sha256",
            "tags": ["administrator"],
            "limits": {},
        }
    ],
    "vhosts": [
        {
            "name": "/",
            "description": "Default virtual host",
            "tags": [],
            "default_queue_type": "classic",
            "metadata": {
                "description": "Default virtual host",
                "tags": [],
                "default_queue_type": "classic",
            },
        }
    ],
    "permissions": [
        {"user": "guest", "vhost": "/", "configure": ".*", "write": ".*", "read": ".*"}
    ],
    "topic_permissions": [
        {
            "user": "guest",
            "vhost": "/",
            "exchange": "amq.topic",
            "write": "^a",
            "read": ".*",
        }
    ],
    "parameters": [
        {
            "value": {"max-connections": 10},
            "vhost": "/",
            "component": "vhost-limits",
            "name": "limits",
        }
    ],
    "global_parameters": [
        {"name": "cluster_name", "value": "rabbit@host"},
        {"name": "internal_cluster_id", "value": "rabbitmq-cluster-id-abc"},
    ],
    "policies": [
        {
            "vhost": "/",
            "name": "dlx",
            "pattern": "^orders$",
            "apply-to": "queues",
            "definition": {"dead-letter-exchange": "dlx", "max-length": 1000},
            "priority": 1,
        }
    ],
    "queues": [
        {
            "name": "orders",
            "vhost": "/",
            "durable": True,
            "auto_delete": False,
            "arguments": {"x-queue-type": "quorum"},
            "type": "quorum",
        }
    ],
    "exchanges": [
        {
            "name": "events",
            "vhost": "/",
            "type": "topic",
            "durable": True,
            "auto_delete": False,
            "internal": False,
            "arguments": {},
        },
        {
            "name": "amq.custom",
            "vhost": "/",
            "type": "direct",
            "durable": True,
            "auto_delete": False,
            "internal": False,
            "arguments": {},
        },
    ],
    "bindings": [
        {
            "source": "events",
            "vhost": "/",
            "destination": "orders",
            "destination_type": "queue",
            "routing_key": "order.*",
            "arguments": {},
        }
    ],
}

EXPECTED = Definitions(
    vhosts=(VHost("/", "Default virtual host", (), "classic"),),
    users=(User("guest", GUEST_HASH, tags=("administrator",)),),
    permissions=(Permission("guest", "/", ".*", ".*", ".*"),),
    topic_permissions=(TopicPermission("guest", "/", "amq.topic", "^a", ".*"),),
    exchanges=(Exchange("/", "events", "topic"),),
    queues=(Queue("/", "orders", arguments={"x-queue-type": "quorum"}),),
    bindings=(Binding("/", "events", "orders", "queue", "order.*"),),
    policies=(
        Policy(
            "/",
            "dlx",
            "^orders$",
            {"dead-letter-exchange": "dlx", "max-length": 1000},
            1,
            "queues",
        ),
    ),
    parameters=(Parameter("/", "vhost-limits", "limits", {"max-connections": 10}),),
    global_parameters=(
        GlobalParameter("cluster_name", "rabbit@host"),
        GlobalParameter("internal_cluster_id", "rabbitmq-cluster-id-abc"),
    ),
)


def test_a_rabbitmq_export_reads_as_expected() -> None:
    summary = parse_json(RABBITMQ_EXPORT)

    assert summary.definitions == EXPECTED
    assert len(summary.skipped) == 1 and "amq.custom" in summary.skipped[0]


def test_export_then_import_gives_the_same_definitions() -> None:
    document: Any = json.loads(json.dumps(export_json(EXPECTED)))

    assert parse_json(document).definitions == EXPECTED
    assert document["rabbit_version"] and document["product_name"] == "amqpd"
    for section in RABBITMQ_EXPORT:
        assert section in document


def test_export_matches_rabbitmqs_field_names() -> None:
    document: Any = export_json(EXPECTED)

    for section in ("users", "vhosts", "permissions", "queues", "bindings"):
        assert document[section] == [
            {key: item[key] for key in produced}
            for item, produced in zip(
                RABBITMQ_EXPORT[section], document[section], strict=True
            )
        ]
    assert document["policies"][0]["apply-to"] == "queues"


def test_export_leaves_out_built_in_exchanges() -> None:
    definitions = Definitions(
        exchanges=(
            Exchange("/", ""),
            Exchange("/", "amq.topic", "topic"),
            Exchange("/", "mine"),
        )
    )

    document: Any = export_json(definitions)
    assert [e["name"] for e in document["exchanges"]] == ["mine"]


def test_json_has_no_word_for_some_amqp_types_so_they_are_written_plainly() -> None:
    value: dict[str, Any] = {
        "utf8": b"text",
        "binary": b"\xff",
        "array": bytearray(b"ok"),
        "int-decimal": Decimal("5"),
        "decimal": Decimal("1.5"),
        "time": datetime(2024, 1, 1, tzinfo=UTC),
        "inf": float("inf"),
        "list": (1, 2),
    }
    assert to_plain_json(value) == {
        "utf8": "text",
        "binary": "/w==",
        "array": "ok",
        "int-decimal": 5,
        "decimal": 1.5,
        "time": 1704067200,
        "inf": "inf",
        "list": [1, 2],
    }


def test_older_rabbitmq_user_shapes_are_understood() -> None:
    md5_hash = "ytUIm8s3AnKsXQjptplKFytfVxI="
    document = {
        "users": [
            {"name": "old", "password_hash": md5_hash, "tags": "administrator,mgmt"},
            {"name": "plain", "password": "s3cret", "tags": ""},
            {
                "name": "strong",
                "password": "s3cret",
                "hashing_algorithm": "rabbit_password_hashing_sha512",
            },
            {"name": "nopass", "password_hash": ""},
        ],
        "vhosts": [{"name": "legacy", "metadata": {"description": "d", "tags": ["t"]}}],
    }

    users = {u.name: u for u in parse_json(document).definitions.users}
    assert users["old"].hashing_algorithm == MD5
    assert users["old"].tags == ("administrator", "mgmt")
    assert check_password("simon", md5_hash, MD5)
    assert check_password("s3cret", users["plain"].password_hash)
    assert users["strong"].hashing_algorithm == SHA512
    assert check_password("s3cret", users["strong"].password_hash, SHA512)
    assert users["nopass"].password_hash == ""
    (vhost,) = parse_json(document).definitions.vhosts
    assert vhost == VHost("legacy", "d", ("t",))


@pytest.mark.parametrize(
    ("section", "entry", "where"),
    [
        ("queues", {"vhost": "/"}, "queues[0]: missing 'name'"),
        ("queues", {"vhost": "/", "name": 5}, "queues[0]: 'name' must be str"),
        ("queues", "orders", "queues[0]: expected an object"),
        (
            "exchanges",
            {"vhost": "/", "name": "x", "durable": "yes", "type": "t"},
            "'durable'",
        ),
        (
            "bindings",
            {
                "vhost": "/",
                "source": "x",
                "destination": "q",
                "destination_type": "topic",
            },
            "destination_type",
        ),
        (
            "policies",
            {"vhost": "/", "name": "p", "pattern": ".*", "priority": True},
            "'priority'",
        ),
        (
            "users",
            {"name": "u", "hashing_algorithm": "bcrypt"},
            "unknown hashing_algorithm",
        ),
        ("users", {"name": "u", "tags": [1]}, "bad 'tags'"),
        (
            "queues",
            {"vhost": "/", "name": "q", "arguments": {"a": [{1, 2}]}},
            "not an AMQP field value",
        ),
    ],
)
def test_malformed_documents_say_where(section: str, entry: object, where: str) -> None:
    with pytest.raises(InvalidDefinitions, match=re.escape(where)):
        parse_json({section: [entry]})


def test_a_section_that_is_not_a_list_is_refused() -> None:
    with pytest.raises(InvalidDefinitions, match="queues: expected a list"):
        parse_json({"queues": {"name": "q"}})


async def test_import_merges_into_a_store_and_deletes_nothing() -> None:
    store: DefinitionsStore = MemoryDefinitionsStore()
    await store.put_vhost(VHost("kept"))

    summary = await import_json(store, RABBITMQ_EXPORT)

    loaded = await store.load()
    assert summary.definitions == EXPECTED
    kept = (*EXPECTED.vhosts, VHost("kept"))
    assert loaded == dataclasses.replace(EXPECTED, vhosts=kept)


async def test_an_import_that_refers_to_a_missing_vhost_changes_nothing() -> None:
    store = MemoryDefinitionsStore()
    document = copy.deepcopy(RABBITMQ_EXPORT)
    document["queues"].append({"name": "lost", "vhost": "nowhere"})

    with pytest.raises(NotFound, match="nowhere"):
        await import_json(store, document)

    assert await store.load() == Definitions()
