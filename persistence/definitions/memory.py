"""The in-memory definitions store: for tests and brokers with no data dir.

Its records are frozen, so a snapshot shares them instead of copying.
Everything is lost when the object goes away.
"""

from __future__ import annotations

from collections.abc import Callable

from .model import (
    KIND_OF,
    KINDS,
    Binding,
    Definitions,
    Exchange,
    GlobalParameter,
    Parameter,
    Permission,
    Policy,
    Queue,
    Record,
    TopicPermission,
    User,
    VHost,
)
from .store import (
    SCHEMA_VERSION,
    DefinitionsStore,
    StoreClosed,
    missing,
    required_records,
)

_IN_VHOST = (
    "permissions",
    "topic_permissions",
    "exchanges",
    "queues",
    "bindings",
    "policies",
    "parameters",
)

_Tables = dict[str, dict[tuple[str, ...], Record]]


class MemoryDefinitionsStore(DefinitionsStore):
    """Definitions held in dicts, with the same rules as the SQL store."""

    def __init__(self) -> None:
        self._tables: _Tables = {kind: {} for kind in KINDS}
        self._closed = False

    async def aclose(self) -> None:
        self._closed = True

    def _open_tables(self) -> _Tables:
        if self._closed:
            raise StoreClosed("the definitions store is closed")
        return self._tables

    async def schema_version(self) -> int:
        self._open_tables()
        return SCHEMA_VERSION

    async def load(self) -> Definitions:
        tables = self._open_tables()
        return Definitions.of(r for kind in KINDS for r in tables[kind].values())

    async def merge(self, definitions: Definitions) -> None:
        tables = self._open_tables()
        staged = {kind: dict(records) for kind, records in tables.items()}
        for kind in KINDS:
            for record in getattr(definitions, kind):
                _put(staged, record)
        self._tables = staged

    # Single-record writes: each is one step with no await inside, so it
    # is atomic with respect to other tasks.

    def _put(self, record: Record) -> None:
        _put(self._open_tables(), record)

    def _delete(self, kind: str, key: tuple[str, ...]) -> bool:
        return self._open_tables()[kind].pop(key, None) is not None

    def _delete_where(self, kind: str, match: Callable[[Record], bool]) -> None:
        table = self._open_tables()[kind]
        for key in [key for key, record in table.items() if match(record)]:
            del table[key]

    async def put_vhost(self, vhost: VHost) -> None:
        self._put(vhost)

    async def delete_vhost(self, name: str) -> bool:
        for kind in _IN_VHOST:
            self._delete_where(kind, lambda r: getattr(r, "vhost", None) == name)
        return self._delete("vhosts", (name,))

    async def put_user(self, user: User) -> None:
        self._put(user)

    async def delete_user(self, name: str) -> bool:
        for kind in ("permissions", "topic_permissions"):
            self._delete_where(kind, lambda r: getattr(r, "user", None) == name)
        return self._delete("users", (name,))

    async def put_permission(self, permission: Permission) -> None:
        self._put(permission)

    async def delete_permission(self, user: str, vhost: str) -> bool:
        return self._delete("permissions", (user, vhost))

    async def put_topic_permission(self, permission: TopicPermission) -> None:
        self._put(permission)

    async def delete_topic_permission(
        self, user: str, vhost: str, exchange: str
    ) -> bool:
        return self._delete("topic_permissions", (user, vhost, exchange))

    async def put_exchange(self, exchange: Exchange) -> None:
        self._put(exchange)

    async def delete_exchange(self, vhost: str, name: str) -> bool:
        self._delete_where("bindings", lambda r: _touches_exchange(r, vhost, name))
        return self._delete("exchanges", (vhost, name))

    async def put_queue(self, queue: Queue) -> None:
        self._put(queue)

    async def delete_queue(self, vhost: str, name: str) -> bool:
        self._delete_where("bindings", lambda r: _binds_queue(r, vhost, name))
        return self._delete("queues", (vhost, name))

    async def put_binding(self, binding: Binding) -> None:
        self._put(binding)

    async def delete_binding(self, binding: Binding) -> bool:
        return self._delete("bindings", binding.key)

    async def put_policy(self, policy: Policy) -> None:
        self._put(policy)

    async def delete_policy(self, vhost: str, name: str) -> bool:
        return self._delete("policies", (vhost, name))

    async def put_parameter(self, parameter: Parameter) -> None:
        self._put(parameter)

    async def delete_parameter(self, vhost: str, component: str, name: str) -> bool:
        return self._delete("parameters", (vhost, component, name))

    async def put_global_parameter(self, parameter: GlobalParameter) -> None:
        self._put(parameter)

    async def delete_global_parameter(self, name: str) -> bool:
        return self._delete("global_parameters", (name,))


def _put(tables: _Tables, record: Record) -> None:
    for kind, name in required_records(record):
        if (name,) not in tables[kind]:
            raise missing(kind, name)
    tables[KIND_OF[type(record)]][record.key] = record


def _touches_exchange(record: Record, vhost: str, name: str) -> bool:
    assert isinstance(record, Binding)
    if record.vhost != vhost:
        return False
    is_destination = record.destination_type == "exchange"
    return record.source == name or (is_destination and record.destination == name)


def _binds_queue(record: Record, vhost: str, name: str) -> bool:
    assert isinstance(record, Binding)
    return (
        record.vhost == vhost
        and record.destination_type == "queue"
        and record.destination == name
    )
