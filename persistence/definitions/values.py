"""AMQP field values: frozen copies for snapshots, and a tagged JSON form.

Queue and exchange arguments are AMQP field tables. Their values may be of
types JSON has no word for, so the store writes them in a tagged JSON form:

    None, bool, int, str, finite float   as themselves
    list / tuple                         as a JSON array
    table (mapping)                      as a JSON object, except below
    bytes (long string, not UTF-8)       {"$bytes": "<base64>"}
    byte array (field type 'x')          {"$bytearray": "<base64>"}
    Decimal                              {"$decimal": "<str(value)>"}
    datetime                             {"$datetime": "<isoformat>"}
    float NaN / +inf / -inf              {"$float": "nan" | "inf" | "-inf"}
    a table whose only key starts "$"    {"$table": {...}}

An object with exactly one key that starts with "$" is always a tag; an AMQP
table of that shape (field names may start with "$") is wrapped in "$table"
so that it is never read back as a tag. Everything else reads as it looks,
so policy definitions and plain arguments stay readable in the database.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any, TypeAlias

FieldValue: TypeAlias = (
    bool
    | int
    | float
    | str
    | bytes
    | bytearray
    | Decimal
    | datetime
    | Sequence["FieldValue"]
    | Mapping[str, "FieldValue"]
    | None
)
"""A value an AMQP field table may hold, as given or as frozen."""

JsonValue: TypeAlias = (
    bool | int | float | str | list["JsonValue"] | dict[str, "JsonValue"] | None
)


class ByteArray(bytes):
    """An AMQP byte array (field type 'x'), kept apart from binary strings."""

    __slots__ = ()

    def __repr__(self) -> str:
        return f"ByteArray({bytes(self)!r})"


class FrozenTable(Mapping[str, FieldValue]):
    """A read-only, hashable field table; compares equal to a dict."""

    __slots__ = ("_hash", "_items")

    def __init__(self, items: Mapping[str, object] | None = None) -> None:
        frozen: dict[str, FieldValue] = {}
        for key, value in (items or {}).items():
            if not isinstance(key, str):
                raise TypeError(f"field table key must be str, not {key!r}")
            frozen[key] = freeze(value)
        self._items = frozen
        self._hash: int | None = None

    def __getitem__(self, key: str) -> FieldValue:
        return self._items[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __hash__(self) -> int:
        if self._hash is None:
            self._hash = hash(frozenset(self._items.items()))
        return self._hash

    def __repr__(self) -> str:
        return f"FrozenTable({self._items!r})"


EMPTY_TABLE = FrozenTable()


def freeze(value: object) -> FieldValue:
    """Return an immutable, hashable copy of a field value.

    Tables become FrozenTable, arrays become tuples, bytearray becomes
    ByteArray. Raises TypeError for a value AMQP cannot carry.
    """
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, FrozenTable | ByteArray):
        return value
    if isinstance(value, bytes | Decimal | datetime):
        return value
    if isinstance(value, bytearray):
        return ByteArray(value)
    if isinstance(value, Mapping):
        return FrozenTable(value)
    if isinstance(value, list | tuple):
        return tuple(freeze(item) for item in value)
    raise TypeError(f"not an AMQP field value: {value!r}")


def freeze_table(table: Mapping[str, object] | None) -> FrozenTable:
    """Freeze a field table (None reads as empty)."""
    if table is None:
        return EMPTY_TABLE
    if isinstance(table, FrozenTable):
        return table
    if not isinstance(table, Mapping):
        raise TypeError(f"not an AMQP field table: {table!r}")
    return FrozenTable(table)


def thaw(value: FieldValue) -> Any:
    """Return a mutable copy with dict, list and bytearray, as pamqp encodes."""
    if isinstance(value, ByteArray):
        return bytearray(value)
    if isinstance(value, str | bytes):
        return value
    if isinstance(value, Mapping):
        return {key: thaw(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [thaw(item) for item in value]
    return value


def thaw_table(table: Mapping[str, FieldValue]) -> dict[str, Any]:
    """A mutable dict copy of a field table, ready for pamqp's encoder."""
    return {key: thaw(value) for key, value in table.items()}


def to_tagged(value: FieldValue) -> JsonValue:
    """Encode a field value in the tagged JSON form described above."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        if math.isfinite(value):
            return value
        return {"$float": "nan" if math.isnan(value) else str(value)}
    if isinstance(value, ByteArray | bytearray):
        return {"$bytearray": base64.b64encode(value).decode("ascii")}
    if isinstance(value, bytes):
        return {"$bytes": base64.b64encode(value).decode("ascii")}
    if isinstance(value, Decimal):
        return {"$decimal": str(value)}
    if isinstance(value, datetime):
        return {"$datetime": value.isoformat()}
    if isinstance(value, Mapping):
        return _table_to_tagged(value)
    if isinstance(value, list | tuple):
        return [to_tagged(item) for item in value]
    raise TypeError(f"not an AMQP field value: {value!r}")


def _table_to_tagged(table: Mapping[str, FieldValue]) -> JsonValue:
    encoded: dict[str, JsonValue] = {}
    for key, item in table.items():
        if not isinstance(key, str):
            raise TypeError(f"field table key must be str, not {key!r}")
        encoded[key] = to_tagged(item)
    if len(encoded) == 1 and next(iter(encoded)).startswith("$"):
        return {"$table": encoded}
    return encoded


def from_tagged(data: object) -> FieldValue:
    """Decode the tagged JSON form into frozen field values.

    Raises ValueError on an unknown tag or a malformed tagged value.
    """
    if data is None or isinstance(data, bool | int | float | str):
        return data
    if isinstance(data, list):
        return tuple(from_tagged(item) for item in data)
    if not isinstance(data, dict):
        raise ValueError(f"not a tagged JSON value: {data!r}")
    if len(data) == 1:
        tag, payload = next(iter(data.items()))
        if isinstance(tag, str) and tag.startswith("$"):
            return _from_tag(tag, payload)
    return FrozenTable({key: from_tagged(item) for key, item in data.items()})


def _from_tag(tag: str, payload: object) -> FieldValue:
    if tag == "$table":
        if not isinstance(payload, dict):
            raise ValueError(f"$table needs an object, got {payload!r}")
        return FrozenTable({k: from_tagged(v) for k, v in payload.items()})
    if not isinstance(payload, str):
        raise ValueError(f"{tag} needs a string, got {payload!r}")
    if tag == "$bytes":
        return base64.b64decode(payload, validate=True)
    if tag == "$bytearray":
        return ByteArray(base64.b64decode(payload, validate=True))
    if tag == "$decimal":
        try:
            return Decimal(payload)
        except ArithmeticError:
            raise ValueError(f"bad $decimal {payload!r}") from None
    if tag == "$datetime":
        return datetime.fromisoformat(payload)
    if tag == "$float" and payload in ("nan", "inf", "-inf"):
        return float(payload)
    raise ValueError(f"unknown tag {tag!r} with {payload!r}")


def table_from_tagged(data: object) -> FrozenTable:
    """Decode a tagged JSON object that must hold a field table."""
    value = from_tagged(data)
    if not isinstance(value, FrozenTable):
        raise ValueError(f"expected a tagged table, got {data!r}")
    return value


def dumps(data: object) -> str:
    """Serialise tagged JSON for a database column: strict, no NaN."""
    return json.dumps(data, ensure_ascii=False, allow_nan=False)


def table_key(table: Mapping[str, FieldValue]) -> str:
    """A stable digest of a table's typed content, independent of key order.

    Two tables get the same key only if their values have the same AMQP
    types, so {"a": 1} and {"a": True} or {"a": 1.0} differ. Used to tell
    bindings that differ only in their arguments apart.
    """
    text = json.dumps(
        to_tagged(table),
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
        allow_nan=False,
    )
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
