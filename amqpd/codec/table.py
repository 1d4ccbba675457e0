"""Field tables kept as raw entries, so that rewriting one key leaves every
other value byte for byte, type tag included.

Type tags follow RabbitMQ's errata for 0-9-1 (``s`` is a signed 16-bit
integer, ``l`` a signed 64-bit one, ``x`` a byte array, and so on).
"""

from __future__ import annotations

import datetime
import struct
from collections.abc import Iterable, Mapping, Sequence
from decimal import Decimal
from typing import Any

from pamqp import decode as pamqp_decode

_FIXED = {
    b"t"[0]: 1, b"b"[0]: 1, b"B"[0]: 1, b"s"[0]: 2, b"u"[0]: 2, b"I"[0]: 4,
    b"i"[0]: 4, b"l"[0]: 8, b"L"[0]: 8, b"f"[0]: 4, b"d"[0]: 8, b"D"[0]: 5,
    b"T"[0]: 8, b"V"[0]: 0,
}  # fmt: skip
_SIZED = frozenset(b"SAFx")
_U32 = struct.Struct(">I")

Entry = tuple[str, bytes]


def value_length(data: bytes | memoryview, pos: int) -> int:
    """Length of the tagged value starting at ``pos`` (tag included)."""
    tag = data[pos]
    fixed = _FIXED.get(tag)
    if fixed is not None:
        return 1 + fixed
    if tag in _SIZED:
        if pos + 5 > len(data):
            raise ValueError(f"field value {chr(tag)!r} cut short")
        return 5 + int(_U32.unpack_from(data, pos + 1)[0])
    raise ValueError(f"unknown field type {chr(tag)!r}")


def split_table(table: bytes) -> list[Entry]:
    """Cut an encoded table (with its length prefix) into (key, raw value).

    Raises ValueError when the table is malformed.
    """
    if len(table) < 4:
        raise ValueError("field table truncated")
    (size,) = _U32.unpack_from(table, 0)
    end = 4 + size
    if end > len(table):
        raise ValueError("field table truncated")
    entries: list[Entry] = []
    pos = 4
    while pos < end:
        klen = table[pos]
        key = table[pos + 1 : pos + 1 + klen].decode()
        pos += 1 + klen
        if pos >= end:
            raise ValueError("field table overruns its length")
        vlen = value_length(table, pos)
        entries.append((key, table[pos : pos + vlen]))
        pos += vlen
    if pos != end:
        raise ValueError("field table overruns its length")
    return entries


def join_table(entries: Iterable[Entry]) -> bytes:
    """Encode raw entries back into a table with its length prefix."""
    parts: list[bytes] = []
    for key, raw in entries:
        kb = key.encode()
        parts += (bytes((len(kb),)), kb, raw)
    body = b"".join(parts)
    return _U32.pack(len(body)) + body


def decode_value(raw: bytes) -> Any:
    """Decode one tagged value into a Python value (pamqp's types)."""
    return pamqp_decode.embedded_value(raw)[1]


def decode_table(table: bytes) -> dict[str, Any]:
    """Decode a whole table (with its length prefix) into a dict."""
    return dict(pamqp_decode.field_table(table)[1])


# Typed encoders for values the broker writes itself (x-death and friends),
# where the type tag is part of the contract with clients.


def longstr(value: str | bytes) -> bytes:
    raw = value.encode() if isinstance(value, str) else value
    return b"S" + _U32.pack(len(raw)) + raw


def long_long(value: int) -> bytes:
    return b"l" + struct.pack(">q", value)


def timestamp(value: datetime.datetime | int) -> bytes:
    if isinstance(value, datetime.datetime):
        if value.tzinfo is None:  # naive means UTC, as pamqp reads it
            value = value.replace(tzinfo=datetime.UTC)
        value = int(value.timestamp())
    return b"T" + struct.pack(">Q", value)


def array(values: Sequence[bytes]) -> bytes:
    body = b"".join(values)
    return b"A" + _U32.pack(len(body)) + body


def table(entries: Iterable[Entry]) -> bytes:
    return b"F" + join_table(entries)


def encode_value(value: Any) -> bytes:
    """Encode a Python value with the tag RabbitMQ would choose for it."""
    if isinstance(value, bool):
        return b"t" + (b"\x01" if value else b"\x00")
    if isinstance(value, int):
        if -(2**31) <= value < 2**31:
            return b"I" + struct.pack(">i", value)
        return long_long(value)
    if isinstance(value, float):
        return b"d" + struct.pack(">d", value)
    if isinstance(value, Decimal):
        exp = value.as_tuple().exponent
        scale = max(0, -int(exp))  # 1E+2 is 100 with no decimals
        unscaled = int(value.scaleb(scale))
        return b"D" + struct.pack(">Bi", scale, unscaled)
    if isinstance(value, str | bytes):
        return longstr(value)
    if isinstance(value, datetime.datetime):
        return timestamp(value)
    if isinstance(value, Mapping):
        return table((str(k), encode_value(v)) for k, v in value.items())
    if isinstance(value, list | tuple):
        return array([encode_value(v) for v in value])
    if isinstance(value, bytearray):
        return b"x" + _U32.pack(len(value)) + bytes(value)
    if value is None:
        return b"V"
    raise TypeError(f"cannot encode {type(value).__name__} in a field table")
