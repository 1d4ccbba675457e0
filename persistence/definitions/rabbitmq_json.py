"""RabbitMQ's definitions file: what `rabbitmqctl export_definitions` writes.

export_json turns a snapshot into that document; import_json reads one
(from RabbitMQ or from us) into a store, adding to and replacing what is
there and deleting nothing, as RabbitMQ's import does.

The file is plain JSON, so arguments of AMQP types JSON lacks are written
lossily: binary strings and byte arrays as text when they are UTF-8 and
as base64 text otherwise, decimals as numbers, timestamps as Unix seconds,
NaN and infinities as strings. Everything else round-trips.

Exchanges named "" or "amq.*" are the broker's own; like RabbitMQ, export
leaves them out and import skips them.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, TypeVar

from .model import (
    Binding,
    Definitions,
    Exchange,
    GlobalParameter,
    Parameter,
    Permission,
    Policy,
    Queue,
    TopicPermission,
    User,
    VHost,
)
from .passwords import (
    DEFAULT_HASHING_ALGORITHM,
    HASHING_ALGORITHMS,
    guess_hashing_algorithm,
    hash_password,
)
from .store import DefinitionsError, DefinitionsStore
from .values import FieldValue, JsonValue

RABBIT_VERSION = "3.13.7"
"""The RabbitMQ version whose file format export_json writes."""

_T = TypeVar("_T")


class InvalidDefinitions(DefinitionsError, ValueError):
    """A definitions document that cannot be read; says where and why."""


@dataclass(frozen=True, slots=True)
class ImportSummary:
    """What import_json put into the store, and what it left out and why."""

    definitions: Definitions
    skipped: tuple[str, ...]


def is_builtin_exchange(name: str) -> bool:
    """The default exchange and the amq.* ones belong to the broker."""
    return name == "" or name.startswith("amq.")


# Export ---------------------------------------------------------------------


def to_plain_json(value: FieldValue) -> JsonValue:
    """A field value as plain JSON, lossy for types JSON lacks (see above)."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, bytes | bytearray):
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            return base64.b64encode(value).decode("ascii")
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, datetime):
        return int(value.timestamp())
    if isinstance(value, Mapping):
        return {key: to_plain_json(item) for key, item in value.items()}
    return [to_plain_json(item) for item in value]


def _table(value: Mapping[str, FieldValue]) -> dict[str, JsonValue]:
    return {key: to_plain_json(item) for key, item in value.items()}


def _vhost(vhost: VHost) -> dict[str, JsonValue]:
    metadata: dict[str, JsonValue] = {
        "description": vhost.description,
        "tags": list(vhost.tags),
    }
    if vhost.default_queue_type is not None:
        metadata["default_queue_type"] = vhost.default_queue_type
    return {"name": vhost.name, **metadata, "metadata": dict(metadata)}


def export_json(definitions: Definitions) -> dict[str, JsonValue]:
    """The definitions as a RabbitMQ definitions document."""
    return {
        "rabbit_version": RABBIT_VERSION,
        "rabbitmq_version": RABBIT_VERSION,
        "product_name": "amqpd",
        "product_version": _amqpd_version(),
        "users": [
            {
                "name": user.name,
                "password_hash": user.password_hash,
                "hashing_algorithm": user.hashing_algorithm,
                "tags": list(user.tags),
                "limits": _table(user.limits),
            }
            for user in definitions.users
        ],
        "vhosts": [_vhost(vhost) for vhost in definitions.vhosts],
        "permissions": [
            {
                "user": p.user,
                "vhost": p.vhost,
                "configure": p.configure,
                "write": p.write,
                "read": p.read,
            }
            for p in definitions.permissions
        ],
        "topic_permissions": [
            {
                "user": p.user,
                "vhost": p.vhost,
                "exchange": p.exchange,
                "write": p.write,
                "read": p.read,
            }
            for p in definitions.topic_permissions
        ],
        "parameters": [
            {
                "value": to_plain_json(p.value),
                "vhost": p.vhost,
                "component": p.component,
                "name": p.name,
            }
            for p in definitions.parameters
        ],
        "global_parameters": [
            {"name": p.name, "value": to_plain_json(p.value)}
            for p in definitions.global_parameters
        ],
        "policies": [
            {
                "vhost": p.vhost,
                "name": p.name,
                "pattern": p.pattern,
                "apply-to": p.apply_to,
                "definition": _table(p.definition),
                "priority": p.priority,
            }
            for p in definitions.policies
        ],
        "queues": [
            {
                "name": q.name,
                "vhost": q.vhost,
                "durable": q.durable,
                "auto_delete": q.auto_delete,
                "arguments": _table(q.arguments),
            }
            for q in definitions.queues
        ],
        "exchanges": [
            {
                "name": e.name,
                "vhost": e.vhost,
                "type": e.type,
                "durable": e.durable,
                "auto_delete": e.auto_delete,
                "internal": e.internal,
                "arguments": _table(e.arguments),
            }
            for e in definitions.exchanges
            if not is_builtin_exchange(e.name)
        ],
        "bindings": [
            {
                "source": b.source,
                "vhost": b.vhost,
                "destination": b.destination,
                "destination_type": b.destination_type,
                "routing_key": b.routing_key,
                "arguments": _table(b.arguments),
            }
            for b in definitions.bindings
        ],
    }


def _amqpd_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("amqpd")
    except PackageNotFoundError:
        return "unknown"


# Import ---------------------------------------------------------------------


class _Item:
    """One object of the document, read with errors that say where."""

    def __init__(self, where: str, data: object) -> None:
        if not isinstance(data, dict):
            raise InvalidDefinitions(f"{where}: expected an object, got {data!r}")
        self.where = where
        self.data: dict[str, Any] = data

    def _get(self, key: str, kind: type[_T], default: _T | None) -> _T:
        value = self.data.get(key, default)
        if value is None:
            raise InvalidDefinitions(f"{self.where}: missing {key!r}")
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise InvalidDefinitions(
                f"{self.where}: {key!r} must be {kind.__name__}, got {value!r}"
            )
        return value

    def text(self, key: str, default: str | None = None) -> str:
        return self._get(key, str, default)

    def flag(self, key: str, default: bool) -> bool:
        return self._get(key, bool, default)

    def number(self, key: str, default: int) -> int:
        return self._get(key, int, default)

    def table(self, key: str) -> dict[str, Any]:
        return self._get(key, dict, {})

    def tags(self, key: str, fallback: object = None) -> tuple[str, ...]:
        value = self.data.get(key, fallback)
        if value is None or value == "":
            return ()
        if isinstance(value, str):  # RabbitMQ before 3.9: "a,b"
            return tuple(tag.strip() for tag in value.split(",") if tag.strip())
        if isinstance(value, list) and all(isinstance(t, str) for t in value):
            return tuple(value)
        raise InvalidDefinitions(f"{self.where}: bad {key!r}: {value!r}")


def _items(
    document: Mapping[str, object],
    section: str,
    read: Callable[[_Item], _T],
) -> list[_T]:
    entries = document.get(section) or []
    if not isinstance(entries, list):
        raise InvalidDefinitions(f"{section}: expected a list, got {entries!r}")
    return [read(_Item(f"{section}[{i}]", entry)) for i, entry in enumerate(entries)]


def _user(item: _Item) -> User:
    algorithm = item.data.get("hashing_algorithm")
    if algorithm is not None and algorithm not in HASHING_ALGORITHMS:
        raise InvalidDefinitions(
            f"{item.where}: unknown hashing_algorithm {algorithm!r}"
        )
    password_hash = item.text("password_hash", "")
    if not password_hash and "password" in item.data:
        # RabbitMQ also imports users given with a clear-text password.
        algorithm = algorithm or DEFAULT_HASHING_ALGORITHM
        password_hash = hash_password(item.text("password"), algorithm)
    if algorithm is None:
        algorithm = guess_hashing_algorithm(password_hash) or DEFAULT_HASHING_ALGORITHM
    limits = item.table("limits")
    return User(item.text("name"), password_hash, algorithm, item.tags("tags"), limits)


def _vhost_from(item: _Item) -> VHost:
    metadata = _Item(item.where + ".metadata", item.data.get("metadata") or {})
    description = item.data.get("description", metadata.data.get("description"))
    queue_type = item.data.get(
        "default_queue_type", metadata.data.get("default_queue_type")
    )
    if not isinstance(description, str | None) or not isinstance(
        queue_type, str | None
    ):
        raise InvalidDefinitions(f"{item.where}: bad description or queue type")
    tags = item.tags("tags", metadata.data.get("tags"))
    return VHost(item.text("name"), description or "", tags, queue_type)


def _binding(item: _Item) -> Binding:
    destination_type = item.text("destination_type", "queue")
    if destination_type not in ("queue", "exchange"):
        raise InvalidDefinitions(
            f"{item.where}: destination_type must be queue or exchange"
        )
    return Binding(
        item.text("vhost"),
        item.text("source"),
        item.text("destination"),
        "queue" if destination_type == "queue" else "exchange",
        item.text("routing_key", ""),
        item.table("arguments"),
    )


def parse_json(document: Mapping[str, object]) -> ImportSummary:
    """Read a definitions document; raises InvalidDefinitions, naming where."""
    if not isinstance(document, Mapping):
        raise InvalidDefinitions("a definitions document is a JSON object")
    skipped: list[str] = []
    exchanges = []
    for exchange in _items(document, "exchanges", _exchange):
        if is_builtin_exchange(exchange.name):
            skipped.append(
                f"exchange {exchange.name!r} in vhost {exchange.vhost!r}: "
                "built-in exchanges are not imported"
            )
        else:
            exchanges.append(exchange)
    try:
        definitions = Definitions(
            vhosts=tuple(_items(document, "vhosts", _vhost_from)),
            users=tuple(_items(document, "users", _user)),
            permissions=tuple(_items(document, "permissions", _permission)),
            topic_permissions=tuple(
                _items(document, "topic_permissions", _topic_permission)
            ),
            exchanges=tuple(exchanges),
            queues=tuple(_items(document, "queues", _queue)),
            bindings=tuple(_items(document, "bindings", _binding)),
            policies=tuple(_items(document, "policies", _policy)),
            parameters=tuple(_items(document, "parameters", _parameter)),
            global_parameters=tuple(
                _items(document, "global_parameters", _global_parameter)
            ),
        )
    except TypeError as error:  # a value AMQP cannot carry
        raise InvalidDefinitions(str(error)) from error
    return ImportSummary(definitions, tuple(skipped))


async def import_json(
    store: DefinitionsStore, document: Mapping[str, object]
) -> ImportSummary:
    """Put a definitions document into `store` in one transaction.

    Raises InvalidDefinitions for a malformed document and NotFound for a
    record whose vhost or user is neither in the document nor the store;
    either way the store is left as it was.
    """
    summary = parse_json(document)
    await store.merge(summary.definitions)
    return summary


def _permission(item: _Item) -> Permission:
    return Permission(
        item.text("user"),
        item.text("vhost"),
        item.text("configure", ""),
        item.text("write", ""),
        item.text("read", ""),
    )


def _topic_permission(item: _Item) -> TopicPermission:
    return TopicPermission(
        item.text("user"),
        item.text("vhost"),
        item.text("exchange"),
        item.text("write", ""),
        item.text("read", ""),
    )


def _exchange(item: _Item) -> Exchange:
    return Exchange(
        item.text("vhost"),
        item.text("name"),
        item.text("type"),
        item.flag("durable", True),
        item.flag("auto_delete", False),
        item.flag("internal", False),
        item.table("arguments"),
    )


def _queue(item: _Item) -> Queue:
    return Queue(
        item.text("vhost"),
        item.text("name"),
        item.flag("durable", True),
        item.flag("auto_delete", False),
        item.table("arguments"),
    )


def _policy(item: _Item) -> Policy:
    return Policy(
        item.text("vhost"),
        item.text("name"),
        item.text("pattern"),
        item.table("definition"),
        item.number("priority", 0),
        item.text("apply-to", "all"),
    )


def _parameter(item: _Item) -> Parameter:
    value = item.data.get("value")
    return Parameter(
        item.text("vhost"), item.text("component"), item.text("name"), value
    )


def _global_parameter(item: _Item) -> GlobalParameter:
    return GlobalParameter(item.text("name"), item.data.get("value"))
