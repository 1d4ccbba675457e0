"""The behaviour every definitions store shares: in memory, SQLite, PostgreSQL.

The PostgreSQL leg connects to AMQPD_TEST_POSTGRES_URL, which .ci/run sets
from `.ci/postgres.sh start PORT`. With the variable unset the leg fails
under CI=true; elsewhere it starts a private server with the same script
(PostgreSQL must be installed: `bash .ci/postgres.sh install`).
"""

from __future__ import annotations

import dataclasses
import math
import os
import socket
import subprocess
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import create_async_engine

from amqpd.persistence.definitions import (
    MEMORY_URL,
    SCHEMA_VERSION,
    Binding,
    ByteArray,
    Definitions,
    DefinitionsStore,
    Exchange,
    FrozenTable,
    GlobalParameter,
    NotFound,
    Parameter,
    Permission,
    Policy,
    Queue,
    StoreClosed,
    TopicPermission,
    User,
    VHost,
    schema,
    sqlite_url,
)
from amqpd.persistence.definitions.model import KIND_OF, Record
from amqpd.persistence.definitions.passwords import hash_password

# Marked here, not only by the conftest hook: the anyio plugin must see the
# mark while collecting, or it drops this module's fixture parameters.
pytestmark = pytest.mark.anyio

POSTGRES_URL_ENV = "AMQPD_TEST_POSTGRES_URL"
POSTGRES_SCRIPT = Path(__file__).resolve().parents[2] / ".ci" / "postgres.sh"


# Backends -------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    url = os.environ.get(POSTGRES_URL_ENV)
    if url:
        yield url
        return
    if os.environ.get("CI") == "true":
        pytest.fail(
            f"{POSTGRES_URL_ENV} is not set: .ci/run must start PostgreSQL "
            "with `.ci/postgres.sh start PORT` and export the URL it prints"
        )
    port = str(_free_port())
    started = subprocess.run(
        [
            *("bash", str(POSTGRES_SCRIPT), "start", port, "--no-install"),
            *("--stop-with", str(os.getpid())),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if started.returncode != 0:
        pytest.fail(
            f"could not start PostgreSQL for the contract tests:\n{started.stderr}"
            f"\nset {POSTGRES_URL_ENV}, or run `bash .ci/postgres.sh install`"
        )
    try:
        yield started.stdout.strip().splitlines()[-1]
    finally:
        subprocess.run(
            ["bash", str(POSTGRES_SCRIPT), "stop", port],
            capture_output=True,
            timeout=120,
            check=False,
        )


async def _empty_tables(url: str) -> None:
    # DELETE rather than DROP or TRUNCATE: PostgreSQL DDL and TRUNCATE cost
    # far more than emptying a few small tables. Schema creation is covered
    # by the first test and by the SQLite leg.
    engine = create_async_engine(url)
    try:
        async with engine.begin() as connection:
            if await connection.run_sync(schema.current_version) != SCHEMA_VERSION:
                await connection.run_sync(schema.metadata.drop_all)
                return
            for table in schema.metadata.sorted_tables:
                if table is not schema.schema_version:
                    await connection.execute(table.delete())
    finally:
        await engine.dispose()


async def _fresh_url(kind: str, request: pytest.FixtureRequest, tmp: Path) -> str:
    if kind == "memory":
        return MEMORY_URL
    if kind == "sqlite":
        return sqlite_url(tmp)
    url: str = request.getfixturevalue("postgres_url")
    await _empty_tables(url)
    return url


@pytest.fixture(params=["memory", "sqlite", "postgresql"])
async def store(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[DefinitionsStore]:
    url = await _fresh_url(request.param, request, tmp_path)
    async with DefinitionsStore.open(url) as opened:
        yield opened


@pytest.fixture(params=["sqlite", "postgresql"])
async def durable_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return await _fresh_url(request.param, request, tmp_path)


# Sample records -------------------------------------------------------------

EVERY_TYPE: dict[str, Any] = {
    "bool": True,
    "false": False,
    "short-short": -128,
    "long-long": -(2**63),
    "long-long-uint": 2**64 - 1,
    "float": 1.0,
    "double": -2.5e-300,
    "infinity": math.inf,
    "decimal": Decimal("12.340"),
    "decimal-exp": Decimal("-1E+5"),
    "long-string": "ünïcödé \u0000 '\"",
    "binary-string": b"\xff\x00\xfe",
    "byte-array": bytearray(b"\x00\x01"),
    "timestamp": datetime(2024, 2, 29, 12, 30, 1, tzinfo=UTC),
    "local-time": datetime(2024, 1, 1, 0, 0, tzinfo=timezone(timedelta(hours=5))),
    "void": None,
    "array": [1, "two", [3.0, None], {"four": b"4"}],
    "empty-array": [],
    "table": {"nested": {"deeper": [True]}},
    "empty-table": {},
    "tag-lookalike": {"$bytes": "not base64 at all"},
    "$": "dollar key",
}


def _typed(value: object) -> object:
    """A structure equal only for values of the same AMQP types."""
    if isinstance(value, dict | FrozenTable):
        return ("table", {key: _typed(item) for key, item in value.items()})
    if isinstance(value, list | tuple):
        return ("array", [_typed(item) for item in value])
    if isinstance(value, bytearray | ByteArray):
        return ("byte-array", bytes(value))
    if isinstance(value, Decimal):
        return ("decimal", str(value))
    if isinstance(value, datetime):
        return ("timestamp", value.isoformat())
    return (type(value).__name__, value)


def one_of_each() -> Definitions:
    return Definitions(
        vhosts=(
            VHost("/", "Default virtual host", ("default",), "classic"),
            VHost("ünï/ vhost"),
        ),
        users=(
            User("guest", hash_password("guest"), tags=("administrator",)),
            User("nopass", "", limits={"max-connections": 10}),
        ),
        permissions=(Permission("guest", "/", ".*", "^amq\\.gen.*", ""),),
        topic_permissions=(TopicPermission("guest", "/", "amq.topic", "^a\\.", ".*"),),
        exchanges=(
            Exchange("/", "events", "topic", arguments={"alternate-exchange": "ae"}),
            Exchange("ünï/ vhost", "x", "headers", True, True, True),
        ),
        queues=(
            Queue("/", "jobs", arguments={"x-queue-type": "quorum"}),
            Queue("ünï/ vhost", "q", auto_delete=True),
        ),
        bindings=(
            Binding("/", "events", "jobs", "queue", "jobs.#"),
            Binding("/", "events", "x", "exchange", "", {"x-match": "any"}),
            Binding("/", "amq.direct", "jobs", routing_key="jobs"),
        ),
        policies=(Policy("/", "ttl", "^jobs$", {"message-ttl": 60000}, 5, "queues"),),
        parameters=(
            Parameter("/", "shovel", "move", {"src-uri": "amqp://", "n": [1, 2]}),
            Parameter("/", "vhost-limits", "limits", {"max-queues": 100}),
        ),
        global_parameters=(
            GlobalParameter("cluster_name", "amqpd@test"),
            GlobalParameter("flags", [True, 2, None]),
        ),
    )


async def put_one(store: DefinitionsStore, record: Record) -> None:
    kind = KIND_OF[type(record)]
    singular = kind[:-3] + "y" if kind.endswith("ies") else kind[:-1]
    put = getattr(store, "put_" + singular)
    await put(record)


async def put_all(store: DefinitionsStore, definitions: Definitions) -> None:
    for vhost in definitions.vhosts:
        await store.put_vhost(vhost)
    for user in definitions.users:
        await store.put_user(user)
    for permission in definitions.permissions:
        await store.put_permission(permission)
    for topic_permission in definitions.topic_permissions:
        await store.put_topic_permission(topic_permission)
    for exchange in definitions.exchanges:
        await store.put_exchange(exchange)
    for queue in definitions.queues:
        await store.put_queue(queue)
    for binding in definitions.bindings:
        await store.put_binding(binding)
    for policy in definitions.policies:
        await store.put_policy(policy)
    for parameter in definitions.parameters:
        await store.put_parameter(parameter)
    for global_parameter in definitions.global_parameters:
        await store.put_global_parameter(global_parameter)


# Round trips ----------------------------------------------------------------


async def test_new_store_is_empty_at_the_current_schema_version(
    store: DefinitionsStore,
) -> None:
    assert await store.load() == Definitions()
    assert await store.schema_version() == SCHEMA_VERSION


async def test_every_kind_put_comes_back_from_load(store: DefinitionsStore) -> None:
    expected = one_of_each()
    await put_all(store, expected)

    assert await store.load() == expected


async def test_put_replaces_the_record_with_the_same_key(
    store: DefinitionsStore,
) -> None:
    await store.put_vhost(VHost("/"))
    await store.put_vhost(VHost("/", "changed", ("t",)))
    await store.put_user(User("u", "h1"))
    await store.put_user(User("u", "h2", tags=("management",)))
    await store.put_permission(Permission("u", "/", "a", "b", "c"))
    await store.put_permission(Permission("u", "/", "", "", ""))
    await store.put_exchange(Exchange("/", "x", "direct"))
    await store.put_exchange(Exchange("/", "x", "fanout", arguments={"k": 1}))
    await store.put_queue(Queue("/", "q"))
    await store.put_queue(Queue("/", "q", arguments={"x-max-length": 5}))
    await store.put_policy(Policy("/", "p", "a"))
    await store.put_policy(Policy("/", "p", "b", {"max-length": 1}, 2, "queues"))
    await store.put_parameter(Parameter("/", "c", "n", 1))
    await store.put_parameter(Parameter("/", "c", "n", {"v": 2}))
    await store.put_global_parameter(GlobalParameter("g", 1))
    await store.put_global_parameter(GlobalParameter("g", "two"))
    binding = Binding("/", "x", "q", routing_key="k")
    await store.put_binding(binding)
    await store.put_binding(binding)

    assert await store.load() == Definitions(
        vhosts=(VHost("/", "changed", ("t",)),),
        users=(User("u", "h2", tags=("management",)),),
        permissions=(Permission("u", "/", "", "", ""),),
        exchanges=(Exchange("/", "x", "fanout", arguments={"k": 1}),),
        queues=(Queue("/", "q", arguments={"x-max-length": 5}),),
        bindings=(binding,),
        policies=(Policy("/", "p", "b", {"max-length": 1}, 2, "queues"),),
        parameters=(Parameter("/", "c", "n", {"v": 2}),),
        global_parameters=(GlobalParameter("g", "two"),),
    )


async def test_delete_removes_a_record_and_says_whether_it_was_there(
    store: DefinitionsStore,
) -> None:
    d = one_of_each()
    await put_all(store, d)

    topic = d.topic_permissions[0]
    assert await store.delete_topic_permission(topic.user, topic.vhost, "amq.topic")
    assert await store.delete_permission("guest", "/")
    assert await store.delete_binding(d.bindings[0])
    assert await store.delete_policy("/", "ttl")
    assert await store.delete_parameter("/", "shovel", "move")
    assert await store.delete_global_parameter("flags")
    assert await store.delete_queue("ünï/ vhost", "q")
    assert await store.delete_exchange("ünï/ vhost", "x")
    assert await store.delete_user("nopass")
    assert await store.delete_vhost("ünï/ vhost")

    assert not await store.delete_topic_permission("guest", "/", "amq.topic")
    assert not await store.delete_permission("guest", "/")
    assert not await store.delete_binding(d.bindings[0])
    assert not await store.delete_policy("/", "ttl")
    assert not await store.delete_parameter("/", "shovel", "move")
    assert not await store.delete_global_parameter("flags")
    assert not await store.delete_queue("ünï/ vhost", "q")
    assert not await store.delete_exchange("ünï/ vhost", "x")
    assert not await store.delete_user("nopass")
    assert not await store.delete_vhost("ünï/ vhost")
    assert await store.load() == Definitions(
        vhosts=d.vhosts[:1],
        users=d.users[:1],
        exchanges=d.exchanges[:1],
        queues=d.queues[:1],
        bindings=d.bindings[1:],
        parameters=d.parameters[1:],
        global_parameters=d.global_parameters[:1],
    )


async def test_arguments_of_every_amqp_type_come_back_with_their_types(
    store: DefinitionsStore,
) -> None:
    await store.put_vhost(VHost("/"))
    await store.put_user(User("u", limits=EVERY_TYPE))
    await store.put_exchange(Exchange("/", "x", arguments=EVERY_TYPE))
    await store.put_queue(Queue("/", "q", arguments=EVERY_TYPE))
    await store.put_binding(Binding("/", "x", "q", arguments=EVERY_TYPE))
    await store.put_policy(Policy("/", "p", ".*", EVERY_TYPE))
    await store.put_parameter(Parameter("/", "c", "n", EVERY_TYPE))
    await store.put_global_parameter(GlobalParameter("g", [EVERY_TYPE]))

    d = await store.load()

    expected = _typed(EVERY_TYPE)
    assert _typed(d.users[0].limits) == expected
    assert _typed(d.exchanges[0].arguments) == expected
    assert _typed(d.queues[0].arguments) == expected
    assert _typed(d.bindings[0].arguments) == expected
    assert _typed(d.policies[0].definition) == expected
    assert _typed(d.parameters[0].value) == expected
    assert _typed(d.global_parameters[0].value) == ("array", [expected])
    nan = await _round_trip_argument(store, math.nan)
    assert isinstance(nan, float) and math.isnan(nan)


async def _round_trip_argument(store: DefinitionsStore, value: float) -> object:
    await store.put_queue(Queue("/", "one", arguments={"v": value}))
    queues = {q.name: q for q in (await store.load()).queues}
    return queues["one"].arguments["v"]


async def test_bindings_that_differ_only_in_arguments_are_distinct(
    store: DefinitionsStore,
) -> None:
    await store.put_vhost(VHost("/"))
    variants: list[dict[str, Any]] = [
        {},
        {"a": 1},
        {"a": True},
        {"a": 1.0},
        {"a": Decimal(1)},
    ]
    bindings = [Binding("/", "x", "q", arguments=args) for args in variants]
    for binding in bindings:
        await store.put_binding(binding)
    await store.put_binding(Binding("/", "x", "q", arguments={"a": 1}))

    assert len((await store.load()).bindings) == len(variants)
    assert await store.delete_binding(Binding("/", "x", "q", arguments={"a": True}))
    left = {repr(_typed(b.arguments)) for b in (await store.load()).bindings}
    gone = _typed({"a": True})
    assert left == {repr(_typed(a)) for a in variants if _typed(a) != gone}


# Integrity ------------------------------------------------------------------


async def test_records_need_their_vhost_and_user(store: DefinitionsStore) -> None:
    await store.put_vhost(VHost("/"))
    await store.put_user(User("u"))
    orphans: list[Record] = [
        Permission("nobody", "/"),
        Permission("u", "nowhere"),
        TopicPermission("nobody", "/", "amq.topic"),
        TopicPermission("u", "nowhere", "amq.topic"),
        Exchange("nowhere", "x"),
        Queue("nowhere", "q"),
        Binding("nowhere", "x", "q"),
        Policy("nowhere", "p", ".*"),
        Parameter("nowhere", "c", "n", 1),
    ]
    for orphan in orphans:
        with pytest.raises(NotFound):
            await put_one(store, orphan)
        with pytest.raises(NotFound):
            await store.merge(Definitions.of([orphan]))

    assert await store.load() == Definitions(vhosts=(VHost("/"),), users=(User("u"),))


async def test_deleting_a_vhost_deletes_everything_in_it(
    store: DefinitionsStore,
) -> None:
    d = one_of_each()
    await put_all(store, d)

    await store.delete_vhost("/")

    def elsewhere(records: tuple[Any, ...]) -> tuple[Any, ...]:
        return tuple(r for r in records if r.vhost != "/")

    assert await store.load() == Definitions(
        vhosts=(d.vhosts[1],),
        users=d.users,
        exchanges=elsewhere(d.exchanges),
        queues=elsewhere(d.queues),
        global_parameters=d.global_parameters,
    )


async def test_deleting_a_user_deletes_its_permissions(
    store: DefinitionsStore,
) -> None:
    d = one_of_each()
    await put_all(store, d)
    await store.put_permission(Permission("nopass", "/"))

    await store.delete_user("guest")

    after = await store.load()
    assert after.permissions == (Permission("nopass", "/"),)
    assert after.topic_permissions == ()
    assert [u.name for u in after.users] == ["nopass"]


async def test_deleting_a_queue_deletes_the_bindings_to_it(
    store: DefinitionsStore,
) -> None:
    await store.put_vhost(VHost("/"))
    await store.put_vhost(VHost("other"))
    kept = [
        Binding("/", "x", "q", "exchange"),
        Binding("/", "q", "other-queue"),
        Binding("other", "x", "q"),
    ]
    for binding in [Binding("/", "x", "q"), Binding("/", "y", "q", "queue", "k")]:
        await store.put_binding(binding)
    for binding in kept:
        await store.put_binding(binding)
    await store.put_queue(Queue("/", "q"))

    assert await store.delete_queue("/", "q")

    assert (await store.load()).bindings == Definitions(bindings=tuple(kept)).bindings


async def test_deleting_an_exchange_deletes_bindings_from_and_to_it(
    store: DefinitionsStore,
) -> None:
    await store.put_vhost(VHost("/"))
    await store.put_vhost(VHost("other"))
    kept = [Binding("/", "y", "x"), Binding("other", "x", "q")]
    doomed = [Binding("/", "x", "q"), Binding("/", "y", "x", "exchange")]
    for binding in kept + doomed:
        await store.put_binding(binding)
    await store.put_exchange(Exchange("/", "x"))

    assert await store.delete_exchange("/", "x")

    assert (await store.load()).bindings == Definitions(bindings=tuple(kept)).bindings


async def test_merge_applies_everything_or_nothing(store: DefinitionsStore) -> None:
    await store.put_vhost(VHost("/"))
    bad = Definitions(
        vhosts=(VHost("new"),),
        queues=(Queue("new", "q"), Queue("missing", "q")),
    )
    with pytest.raises(NotFound):
        await store.merge(bad)
    assert await store.load() == Definitions(vhosts=(VHost("/"),))

    d = one_of_each()
    await store.merge(d)
    assert await store.load() == d


async def test_merge_replaces_records_with_the_same_key(
    store: DefinitionsStore,
) -> None:
    await store.merge(one_of_each())
    changed = Definitions(
        vhosts=(VHost("/", "changed"),),
        queues=(Queue("/", "jobs", auto_delete=True), Queue("/", "new")),
        bindings=(Binding("/", "events", "jobs", "queue", "jobs.#"),),
        global_parameters=(
            GlobalParameter("flags", "first"),
            GlobalParameter("flags", "last wins"),
        ),
    )

    await store.merge(changed)

    after = await store.load()
    assert after.vhosts[0] == VHost("/", "changed")
    assert [q for q in after.queues if q.vhost == "/"] == list(changed.queues)
    assert after.bindings == one_of_each().bindings
    assert GlobalParameter("flags", "last wins") in after.global_parameters
    assert len(after.global_parameters) == 2


# Snapshots and lifetime -----------------------------------------------------


async def test_a_snapshot_is_immutable_and_detached(store: DefinitionsStore) -> None:
    arguments: dict[str, Any] = {"x-list": [1], "x-table": {"a": 1}}
    await store.put_vhost(VHost("/"))
    await store.put_queue(Queue("/", "q", arguments=arguments))
    snapshot = await store.load()
    arguments["x-list"].append(2)
    arguments["added"] = True

    queue = snapshot.queues[0]
    with pytest.raises(dataclasses.FrozenInstanceError):
        queue.name = "other"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        snapshot.queues = ()  # type: ignore[misc]
    with pytest.raises(TypeError):
        queue.arguments["added"] = True  # type: ignore[index]
    with pytest.raises(AttributeError):
        queue.arguments["x-list"].append(2)  # type: ignore[union-attr]
    assert queue.arguments == {"x-list": (1,), "x-table": {"a": 1}}
    hash(snapshot)

    await store.put_queue(Queue("/", "q2"))
    await store.delete_queue("/", "q")
    assert snapshot.queues == (
        Queue("/", "q", arguments={"x-list": [1], "x-table": {"a": 1}}),
    )
    assert await store.load() == Definitions(
        vhosts=(VHost("/"),), queues=(Queue("/", "q2"),)
    )


async def test_a_closed_store_refuses_work(store: DefinitionsStore) -> None:
    await store.aclose()

    with pytest.raises(StoreClosed):
        await store.load()
    with pytest.raises(StoreClosed):
        await store.put_vhost(VHost("/"))
    await store.aclose()


async def test_reopening_keeps_the_data(durable_url: str) -> None:
    d = one_of_each()
    async with DefinitionsStore.open(durable_url) as first:
        await put_all(first, d)
        await first.put_queue(Queue("/", "args", arguments=EVERY_TYPE))

    store = await DefinitionsStore.connect(durable_url)
    try:
        reloaded = await store.load()
        assert await store.schema_version() == SCHEMA_VERSION
    finally:
        await store.aclose()

    queues = {q.name: q for q in reloaded.queues}
    assert _typed(queues.pop("args").arguments) == _typed(EVERY_TYPE)
    assert dataclasses.replace(reloaded, queues=tuple(queues.values())) == d
