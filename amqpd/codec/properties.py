"""Content header properties, read lazily from the raw header payload.

The content header payload is: class id (short), weight (short), body size
(long long), property flags (short, bit 15 first), then the present
properties in flag order. Messages keep this payload as received; the broker
reads single properties from it when routing or a queue feature needs them,
and rebuilds it only when it must change a property.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from amqpd.codec.table import decode_table

FIELDS = (
    "content_type", "content_encoding", "headers", "delivery_mode", "priority",
    "correlation_id", "reply_to", "expiration", "message_id", "timestamp",
    "type", "user_id", "app_id", "cluster_id",
)  # fmt: skip
_KINDS = "ssFoossssTssss"  # s: short string, F: table, o: octet, T: timestamp
_BIT = {name: 1 << (15 - i) for i, name in enumerate(FIELDS)}
_HEAD = struct.Struct(">HHQH")
_U32 = struct.Struct(">I")
assert _HEAD.size == 14

Spans = dict[str, tuple[int, int]]


def scan(header: bytes) -> Spans:
    """Byte spans of every present property; ValueError if malformed."""
    if len(header) < 14:
        raise ValueError("content header shorter than 14 bytes")
    flags = (header[12] << 8) | header[13]
    pos = 14
    while flags & 1 and header[pos - 1] & 1:
        pos += 2  # continuation flag words carry no 0-9-1 properties
        if pos > len(header):
            raise ValueError("content header property flags cut short")
    spans: Spans = {}
    if not flags & 0xFFFE:
        return spans
    size = len(header)
    for i, kind in enumerate(_KINDS):
        if not flags & (1 << (15 - i)):
            continue
        if pos + (4 if kind == "F" else 1) > size:
            raise ValueError(f"property {FIELDS[i]} overruns the content header")
        if kind == "s":
            n = 1 + header[pos]
        elif kind == "o":
            n = 1
        elif kind == "T":
            n = 8
        else:
            n = 4 + _U32.unpack_from(header, pos)[0]
        end = pos + n
        if end > size:
            raise ValueError(f"property {FIELDS[i]} overruns the content header")
        spans[FIELDS[i]] = (pos, end)
        pos = end
    return spans


@lru_cache(maxsize=4096)
def scan_shared(header: bytes) -> tuple[bytes, Spans]:
    """``scan``, remembered for the last few thousand distinct headers.

    Most publishers send the same properties again and again; their queued
    messages then share one header bytes object (when the body size is the
    same too). Spans are shared by content as well: messages whose
    properties differ only in value, not in length (a message id per
    message, a timestamp), share one spans dict (about 400 bytes per queued
    message). Returns the header to keep (an equal one seen before) and its
    spans, which nobody may change. ValueError if malformed (not
    remembered).
    """
    spans = scan(header)
    key = tuple(spans.items())
    shared = _SPANS.get(key)
    if shared is None:
        if len(_SPANS) >= _SPANS_KEPT:
            _SPANS.clear()
        shared = _SPANS[key] = spans
    return header, shared


_SPANS: dict[tuple[tuple[str, tuple[int, int]], ...], Spans] = {}
_SPANS_KEPT = 4096


def body_size(header: bytes) -> int:
    """The body size a content header announces."""
    return int(_HEAD.unpack_from(header)[2])


def get(header: bytes, spans: Spans, name: str) -> Any:
    """Decode one property, or None when absent."""
    span = spans.get(name)
    if span is None:
        return None
    start, end = span
    kind = _KINDS[FIELDS.index(name)]
    if kind == "s":
        return header[start + 1 : end].decode(errors="replace")
    if kind == "o":
        return header[start]
    if kind == "T":
        return int.from_bytes(header[start:end], "big")
    return decode_table(header[start:end])


def raw(header: bytes, spans: Spans, name: str) -> bytes | None:
    """The encoded bytes of one property, or None when absent."""
    span = spans.get(name)
    return None if span is None else header[span[0] : span[1]]


def rebuild(header: bytes, spans: Spans, changes: Mapping[str, bytes | None]) -> bytes:
    """A new header payload with some properties replaced (encoded bytes) or
    removed (None); every other property is kept byte for byte."""
    class_id, weight, size, _ = _HEAD.unpack_from(header)
    flags = 0
    parts = []
    for name in FIELDS:
        if name in changes:
            value = changes[name]
        else:
            span = spans.get(name)
            value = None if span is None else header[span[0] : span[1]]
        if value is not None:
            flags |= _BIT[name]
            parts.append(value)
    return _HEAD.pack(class_id, weight, size, flags) + b"".join(parts)


def encode_shortstr(value: str) -> bytes:
    data = value.encode()
    return bytes((len(data),)) + data
