"""Journal records: the changes a durable queue makes, as pure data.

A record names messages by the broker's message id and queues by a queue key
(any string; the broker picks the form, e.g. vhost and queue name joined).
It carries nothing local to one node (no offsets, no log positions), so the
same record can be shipped to a replica and applied there by
``Ledger.apply`` with the same result.

A message reaching several durable queues is written once: one MESSAGE
record followed by one ENQUEUE per queue, appended together
(``Journal.append_many``) so they land in the same batch.

Payload layouts (little-endian; str is u16 length + UTF-8, blob is u32
length + bytes):

    MESSAGE         u64 message_id, u64 expires_at_ms, u8 priority,
                    u16 len(exchange), u16 len(routing_key), u32 len(header),
                    u32 len(body), then exchange, routing_key, header, body
    ENQUEUE         u64 message_id, u64 sequence, u64 expires_at_ms, str queue
    ACK             u64 message_id, str queue
    DELIVERY_COUNT  u64 message_id, u32 count, str queue
    MOVE            u64 message_id, u8 has_message, u16 n_targets, str source,
                    n_targets x (u64 sequence, u64 expires_at_ms, str queue),
                    then, if has_message, a MESSAGE payload to the end
    PURGE           str queue
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Callable
from dataclasses import dataclass
from sys import intern
from typing import Any, ClassVar, TypeAlias

from .errors import FormatError, RecordRejected


class RecordKind(enum.IntEnum):
    """The type byte of a record on disk."""

    MESSAGE = 1
    ENQUEUE = 2
    ACK = 3
    DELIVERY_COUNT = 4
    MOVE = 5
    PURGE = 6


@dataclass(frozen=True, slots=True)
class MessageRecord:
    """A published message, written once whatever number of queues it reaches.

    ``header`` is the raw content header payload as the client sent it (class
    id, body size, property flags and properties); the journal never parses
    it. ``expires_at_ms`` is an absolute deadline in Unix milliseconds, 0 for
    none. The record is live while at least one queue holds the message.
    """

    kind: ClassVar[RecordKind] = RecordKind.MESSAGE
    message_id: int
    exchange: str
    routing_key: str
    header: bytes
    body: bytes
    expires_at_ms: int = 0
    priority: int = 0


@dataclass(frozen=True, slots=True)
class EnqueueRecord:
    """``message_id`` enters ``queue`` at position ``sequence``.

    Recovery orders each queue by ``sequence``, so a queue can hand out its
    own increasing counter and a requeued message keeps its place.
    ``expires_at_ms`` is a per-queue deadline (x-message-ttl), 0 for none;
    the message's own deadline applies as well.
    """

    kind: ClassVar[RecordKind] = RecordKind.ENQUEUE
    queue: str
    message_id: int
    sequence: int
    expires_at_ms: int = 0


@dataclass(frozen=True, slots=True)
class AckRecord:
    """``message_id`` leaves ``queue`` for good (acked, expired, dropped)."""

    kind: ClassVar[RecordKind] = RecordKind.ACK
    queue: str
    message_id: int


@dataclass(frozen=True, slots=True)
class DeliveryCountRecord:
    """The delivery count of ``message_id`` in ``queue`` is now ``count``.

    Absolute, not an increment: only the newest one per queue entry matters.
    """

    kind: ClassVar[RecordKind] = RecordKind.DELIVERY_COUNT
    queue: str
    message_id: int
    count: int


@dataclass(frozen=True, slots=True)
class Placement:
    """Where a MOVE puts the message: queue, its sequence there, its deadline."""

    queue: str
    sequence: int
    expires_at_ms: int = 0


@dataclass(frozen=True, slots=True)
class MoveRecord:
    """Dead-lettering as one atomic record.

    ``message_id`` leaves ``source`` and enters every queue in ``targets``.
    If ``message`` is given, the targets receive that new message (new id,
    new header bytes, e.g. with x-death added) and the old one is released
    from ``source`` only. The new message carries its own copy of the body,
    so the record does not depend on the old MESSAGE record staying on disk.
    With no targets and no message it is the same as an ACK.
    """

    kind: ClassVar[RecordKind] = RecordKind.MOVE
    source: str
    message_id: int
    targets: tuple[Placement, ...] = ()
    message: MessageRecord | None = None


@dataclass(frozen=True, slots=True)
class PurgeRecord:
    """Every message in ``queue`` leaves it (queue.purge, queue.delete)."""

    kind: ClassVar[RecordKind] = RecordKind.PURGE
    queue: str


Record: TypeAlias = (
    MessageRecord
    | EnqueueRecord
    | AckRecord
    | DeliveryCountRecord
    | MoveRecord
    | PurgeRecord
)

_MESSAGE = struct.Struct("<QQBHHII")
_ENQUEUE = struct.Struct("<QQQH")
_ACK = struct.Struct("<QH")
_COUNT = struct.Struct("<QIH")
_MOVE = struct.Struct("<QBHH")
_TARGET = struct.Struct("<QQH")
_PURGE = struct.Struct("<H")

assert _MESSAGE.size == 29
assert _ENQUEUE.size == 26
assert _ACK.size == 10
assert _COUNT.size == 14
assert _MOVE.size == 13
assert _TARGET.size == 18
assert _PURGE.size == 2


def encode_payload(record: Record) -> bytes:
    """Return the payload bytes of ``record`` (before compression/encryption).

    Raises RecordRejected when a field does not fit its slot (a priority
    above 255, a negative id, a queue key longer than 65535 bytes).
    """
    encoder = _ENCODERS.get(type(record))
    if encoder is None:
        raise TypeError(f"not a journal record: {record!r}")
    try:
        return encoder(record)
    except (struct.error, OverflowError) as exc:
        raise RecordRejected(f"{record.kind.name} does not fit: {exc}") from None


_U64 = 2**64
_U32 = 2**32


def check_fields(record: Record) -> None:
    """Raise RecordRejected if a field would not fit its slot on disk.

    The same rule ``encode_payload`` enforces, without encoding: for
    journals that keep records in memory.
    """
    numbers: list[tuple[int, int]] = []
    texts: list[str] = []
    _collect(record, numbers, texts)
    for value, bound in numbers:
        if not 0 <= value < bound:
            raise RecordRejected(f"{record.kind.name}: {value} is out of range")
    for text in texts:
        if len(text) > 16383 and len(text.encode()) > 65535:
            raise RecordRejected(f"{record.kind.name}: a name is over 65535 bytes")


def _collect(record: Record, numbers: list[tuple[int, int]], texts: list[str]) -> None:
    if isinstance(record, MessageRecord):
        numbers += [(record.message_id, _U64), (record.expires_at_ms, _U64)]
        numbers += [(record.priority, 256)]
        numbers += [(len(record.header), _U32), (len(record.body), _U32)]
        texts += [record.exchange, record.routing_key]
    elif isinstance(record, EnqueueRecord):
        numbers += [(record.message_id, _U64), (record.sequence, _U64)]
        numbers += [(record.expires_at_ms, _U64)]
        texts.append(record.queue)
    elif isinstance(record, AckRecord | PurgeRecord):
        if isinstance(record, AckRecord):
            numbers.append((record.message_id, _U64))
        texts.append(record.queue)
    elif isinstance(record, DeliveryCountRecord):
        numbers += [(record.message_id, _U64), (record.count, _U32)]
        texts.append(record.queue)
    elif isinstance(record, MoveRecord):
        numbers += [(record.message_id, _U64), (len(record.targets), 2**16)]
        texts.append(record.source)
        for target in record.targets:
            numbers += [(target.sequence, _U64), (target.expires_at_ms, _U64)]
            texts.append(target.queue)
        if record.message is not None:
            _collect(record.message, numbers, texts)
    else:
        raise TypeError(f"not a journal record: {record!r}")


def decode_payload(kind: int, payload: bytes) -> Record:
    """Return the record of type ``kind`` stored in ``payload``.

    Raises FormatError for an unknown kind or a payload of the wrong shape.
    """
    decoder = _DECODERS.get(kind)
    if decoder is None:
        raise FormatError(f"unknown record type {kind}")
    try:
        record, end = decoder(payload, 0)
    except (struct.error, UnicodeDecodeError, ValueError) as exc:
        raise FormatError(f"malformed {RecordKind(kind).name} payload: {exc}") from None
    if end != len(payload):
        name = RecordKind(kind).name
        raise FormatError(f"{len(payload) - end} stray bytes after {name} payload")
    return record


def _encode_message(record: MessageRecord) -> bytes:
    exchange = record.exchange.encode()
    routing_key = record.routing_key.encode()
    head = _MESSAGE.pack(
        record.message_id,
        record.expires_at_ms,
        record.priority,
        len(exchange),
        len(routing_key),
        len(record.header),
        len(record.body),
    )
    return b"".join((head, exchange, routing_key, record.header, record.body))


def _encode_enqueue(record: EnqueueRecord) -> bytes:
    queue = record.queue.encode()
    head = _ENQUEUE.pack(
        record.message_id, record.sequence, record.expires_at_ms, len(queue)
    )
    return head + queue


def _encode_ack(record: AckRecord) -> bytes:
    queue = record.queue.encode()
    return _ACK.pack(record.message_id, len(queue)) + queue


def _encode_count(record: DeliveryCountRecord) -> bytes:
    queue = record.queue.encode()
    return _COUNT.pack(record.message_id, record.count, len(queue)) + queue


def _encode_move(record: MoveRecord) -> bytes:
    source = record.source.encode()
    has_message = record.message is not None
    parts = [
        _MOVE.pack(record.message_id, has_message, len(record.targets), len(source)),
        source,
    ]
    for target in record.targets:
        queue = target.queue.encode()
        parts.append(_TARGET.pack(target.sequence, target.expires_at_ms, len(queue)))
        parts.append(queue)
    if record.message is not None:
        parts.append(_encode_message(record.message))
    return b"".join(parts)


def _encode_purge(record: PurgeRecord) -> bytes:
    queue = record.queue.encode()
    return _PURGE.pack(len(queue)) + queue


def _take(data: bytes, at: int, size: int) -> bytes:
    end = at + size
    if end > len(data):
        raise ValueError("field runs past the end of the payload")
    return data[at:end]


def _decode_message(data: bytes, at: int) -> tuple[MessageRecord, int]:
    # one bounds check for all four fields: recovery decodes one per message
    mid, expires, priority, n_ex, n_rk, n_hdr, n_body = _MESSAGE.unpack_from(data, at)
    at += _MESSAGE.size
    end = at + n_ex + n_rk + n_hdr + n_body
    if end > len(data):
        raise ValueError("field runs past the end of the payload")
    rk_at = at + n_ex
    header_at = rk_at + n_rk
    body_at = header_at + n_hdr
    # Names repeat from message to message: interned, a backlog holds each once.
    record = MessageRecord(
        mid,
        intern(data[at:rk_at].decode()),
        intern(data[rk_at:header_at].decode()),
        data[header_at:body_at],
        data[body_at:end],
        expires,
        priority,
    )
    return record, end


def _decode_enqueue(data: bytes, at: int) -> tuple[EnqueueRecord, int]:
    mid, sequence, expires, n_queue = _ENQUEUE.unpack_from(data, at)
    at += _ENQUEUE.size
    end = at + n_queue
    if end > len(data):
        raise ValueError("field runs past the end of the payload")
    return EnqueueRecord(data[at:end].decode(), mid, sequence, expires), end


def _decode_ack(data: bytes, at: int) -> tuple[AckRecord, int]:
    mid, n_queue = _ACK.unpack_from(data, at)
    at += _ACK.size
    queue = _take(data, at, n_queue).decode()
    return AckRecord(queue, mid), at + n_queue


def _decode_count(data: bytes, at: int) -> tuple[DeliveryCountRecord, int]:
    mid, count, n_queue = _COUNT.unpack_from(data, at)
    at += _COUNT.size
    queue = _take(data, at, n_queue).decode()
    return DeliveryCountRecord(queue, mid, count), at + n_queue


def _decode_move(data: bytes, at: int) -> tuple[MoveRecord, int]:
    mid, has_message, n_targets, n_source = _MOVE.unpack_from(data, at)
    at += _MOVE.size
    source = _take(data, at, n_source).decode()
    at += n_source
    targets = []
    for _ in range(n_targets):
        sequence, expires, n_queue = _TARGET.unpack_from(data, at)
        at += _TARGET.size
        queue = _take(data, at, n_queue).decode()
        at += n_queue
        targets.append(Placement(queue, sequence, expires))
    message = None
    if has_message:
        message, at = _decode_message(data, at)
    return MoveRecord(source, mid, tuple(targets), message), at


def _decode_purge(data: bytes, at: int) -> tuple[PurgeRecord, int]:
    (n_queue,) = _PURGE.unpack_from(data, at)
    at += _PURGE.size
    return PurgeRecord(_take(data, at, n_queue).decode()), at + n_queue


_ENCODERS: dict[type[Any], Callable[[Any], bytes]] = {
    MessageRecord: _encode_message,
    EnqueueRecord: _encode_enqueue,
    AckRecord: _encode_ack,
    DeliveryCountRecord: _encode_count,
    MoveRecord: _encode_move,
    PurgeRecord: _encode_purge,
}
_DECODERS: dict[int, Callable[[bytes, int], tuple[Record, int]]] = {
    RecordKind.MESSAGE: _decode_message,
    RecordKind.ENQUEUE: _decode_enqueue,
    RecordKind.ACK: _decode_ack,
    RecordKind.DELIVERY_COUNT: _decode_count,
    RecordKind.MOVE: _decode_move,
    RecordKind.PURGE: _decode_purge,
}
