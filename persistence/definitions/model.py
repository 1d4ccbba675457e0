"""The definitions: declared topology, users and settings, as frozen records.

Every record is an immutable dataclass. Tables (arguments, definitions,
limits) are frozen into FrozenTable and lists into tuples when a record is
built, so a Definitions snapshot can be handed to any reader and shared.
Each record's `key` is what makes it unique in the store; putting a record
with the key of an existing one replaces it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal, Protocol

from .passwords import DEFAULT_HASHING_ALGORITHM
from .values import EMPTY_TABLE, FieldValue, freeze, freeze_table, table_key

DestinationType = Literal["queue", "exchange"]


def _set(record: object, name: str, value: object) -> None:
    object.__setattr__(record, name, value)


def _freeze_tags(record: object, tags: object) -> None:
    if isinstance(tags, str) or not isinstance(tags, Iterable):
        raise TypeError(f"tags must be a sequence of str, not {tags!r}")
    frozen = tuple(tags)
    if not all(isinstance(tag, str) for tag in frozen):
        raise TypeError(f"tags must be a sequence of str, not {tags!r}")
    _set(record, "tags", frozen)


@dataclass(frozen=True, slots=True)
class VHost:
    name: str
    description: str = ""
    tags: tuple[str, ...] = ()
    default_queue_type: str | None = None

    def __post_init__(self) -> None:
        _freeze_tags(self, self.tags)

    @property
    def key(self) -> tuple[str]:
        return (self.name,)


@dataclass(frozen=True, slots=True)
class User:
    """A user; password_hash is RabbitMQ's salted form, "" for no password."""

    name: str
    password_hash: str = ""
    hashing_algorithm: str = DEFAULT_HASHING_ALGORITHM
    tags: tuple[str, ...] = ()
    limits: Mapping[str, FieldValue] = EMPTY_TABLE

    def __post_init__(self) -> None:
        _freeze_tags(self, self.tags)
        _set(self, "limits", freeze_table(self.limits))

    @property
    def key(self) -> tuple[str]:
        return (self.name,)


@dataclass(frozen=True, slots=True)
class Permission:
    """What a user may configure, write and read in a vhost (regexes)."""

    user: str
    vhost: str
    configure: str = ".*"
    write: str = ".*"
    read: str = ".*"

    @property
    def key(self) -> tuple[str, str]:
        return (self.user, self.vhost)


@dataclass(frozen=True, slots=True)
class TopicPermission:
    """Routing keys a user may publish (write) or bind (read) on an exchange."""

    user: str
    vhost: str
    exchange: str
    write: str = ".*"
    read: str = ".*"

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.user, self.vhost, self.exchange)


@dataclass(frozen=True, slots=True)
class Exchange:
    vhost: str
    name: str
    type: str = "direct"
    durable: bool = True
    auto_delete: bool = False
    internal: bool = False
    arguments: Mapping[str, FieldValue] = EMPTY_TABLE

    def __post_init__(self) -> None:
        _set(self, "arguments", freeze_table(self.arguments))

    @property
    def key(self) -> tuple[str, str]:
        return (self.vhost, self.name)


@dataclass(frozen=True, slots=True)
class Queue:
    vhost: str
    name: str
    durable: bool = True
    auto_delete: bool = False
    arguments: Mapping[str, FieldValue] = EMPTY_TABLE

    def __post_init__(self) -> None:
        _set(self, "arguments", freeze_table(self.arguments))

    @property
    def key(self) -> tuple[str, str]:
        return (self.vhost, self.name)


@dataclass(frozen=True, slots=True)
class Binding:
    """A binding; two bindings that differ only in arguments are distinct."""

    vhost: str
    source: str
    destination: str
    destination_type: DestinationType = "queue"
    routing_key: str = ""
    arguments: Mapping[str, FieldValue] = EMPTY_TABLE
    # The arguments' typed digest: unlike the Python values, it tells
    # {"a": 1} from {"a": True}, so equal bindings are the same binding.
    arguments_key: str = field(default="", init=False, repr=False)

    def __post_init__(self) -> None:
        if self.destination_type not in ("queue", "exchange"):
            raise ValueError(f"bad destination_type {self.destination_type!r}")
        arguments = freeze_table(self.arguments)
        _set(self, "arguments", arguments)
        _set(self, "arguments_key", table_key(arguments))

    @property
    def key(self) -> tuple[str, str, str, str, str, str]:
        return (
            self.vhost,
            self.source,
            self.destination_type,
            self.destination,
            self.routing_key,
            self.arguments_key,
        )


@dataclass(frozen=True, slots=True)
class Policy:
    vhost: str
    name: str
    pattern: str
    definition: Mapping[str, FieldValue] = EMPTY_TABLE
    priority: int = 0
    apply_to: str = "all"

    def __post_init__(self) -> None:
        _set(self, "definition", freeze_table(self.definition))

    @property
    def key(self) -> tuple[str, str]:
        return (self.vhost, self.name)


@dataclass(frozen=True, slots=True)
class Parameter:
    """A runtime parameter of a vhost (shovel, federation-upstream, ...)."""

    vhost: str
    component: str
    name: str
    value: FieldValue = None

    def __post_init__(self) -> None:
        _set(self, "value", freeze(self.value))

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.vhost, self.component, self.name)


@dataclass(frozen=True, slots=True)
class GlobalParameter:
    name: str
    value: FieldValue = None

    def __post_init__(self) -> None:
        _set(self, "value", freeze(self.value))

    @property
    def key(self) -> tuple[str]:
        return (self.name,)


@dataclass(frozen=True, slots=True)
class Definitions:
    """An immutable snapshot of everything in a store, each kind sorted by key."""

    vhosts: tuple[VHost, ...] = ()
    users: tuple[User, ...] = ()
    permissions: tuple[Permission, ...] = ()
    topic_permissions: tuple[TopicPermission, ...] = ()
    exchanges: tuple[Exchange, ...] = ()
    queues: tuple[Queue, ...] = ()
    bindings: tuple[Binding, ...] = ()
    policies: tuple[Policy, ...] = ()
    parameters: tuple[Parameter, ...] = ()
    global_parameters: tuple[GlobalParameter, ...] = ()

    def __post_init__(self) -> None:
        for name in KINDS:
            records = getattr(self, name)
            _set(self, name, tuple(sorted(records, key=_record_key)))

    @classmethod
    def of(cls, records: Iterable[Record]) -> Definitions:
        """The snapshot holding `records`, of any kinds, in any order."""
        grouped: dict[str, list[Record]] = {kind: [] for kind in KINDS}
        for record in records:
            grouped[KIND_OF[type(record)]].append(record)
        snapshot = cls()
        for kind, members in grouped.items():
            _set(snapshot, kind, tuple(sorted(members, key=_record_key)))
        return snapshot


Record = (
    VHost
    | User
    | Permission
    | TopicPermission
    | Exchange
    | Queue
    | Binding
    | Policy
    | Parameter
    | GlobalParameter
)

KINDS = (
    "vhosts",
    "users",
    "permissions",
    "topic_permissions",
    "exchanges",
    "queues",
    "bindings",
    "policies",
    "parameters",
    "global_parameters",
)
"""Definitions' fields, in the order that a merge applies them."""

KIND_OF: dict[type, str] = {
    VHost: "vhosts",
    User: "users",
    Permission: "permissions",
    TopicPermission: "topic_permissions",
    Exchange: "exchanges",
    Queue: "queues",
    Binding: "bindings",
    Policy: "policies",
    Parameter: "parameters",
    GlobalParameter: "global_parameters",
}
"""The Definitions field that holds each record type."""


class _Keyed(Protocol):
    @property
    def key(self) -> tuple[str, ...]: ...


def _record_key(record: _Keyed) -> tuple[str, ...]:
    return record.key
