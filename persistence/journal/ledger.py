"""The live state that records build up, applied one record at a time.

``Ledger.apply`` is deterministic: the same records in the same order give
the same state on any node. It is used three ways: by a running journal to
check and apply each appended record (strict), by recovery to replay the
segments (lenient), and by the in-memory journal on its own.

In strict mode a record that contradicts the state raises RecordRejected
and changes nothing. In lenient mode such a record is counted in
``ignored`` and skipped: after old segments are deleted, an ACK may name a
message whose ENQUEUE is gone, and that is normal.

With a SegmentTable, every applied record also takes and gives back holds
on the slots of the records it keeps alive (see segment.py).
"""

from __future__ import annotations

from collections.abc import Callable
from operator import attrgetter
from typing import Any

from .errors import RecordRejected
from .records import (
    AckRecord,
    DeliveryCountRecord,
    EnqueueRecord,
    MessageRecord,
    MoveRecord,
    PurgeRecord,
    Record,
)
from .segment import SegmentTable
from .state import QueuedMessage


class LiveMessage:
    """A message some queue holds, or that no queue has taken yet.

    ``record`` is None once the ledger no longer keeps records (see
    ``Ledger.forget_records``).
    """

    __slots__ = ("message_id", "record", "refs", "slot")

    def __init__(
        self, message_id: int, record: MessageRecord | None, slot: int | None
    ) -> None:
        self.message_id = message_id
        self.record = record
        self.refs = 0
        self.slot = slot


class LiveEntry:
    """A message's place in one queue."""

    __slots__ = (
        "count",
        "count_slot",
        "creator",
        "expires_at_ms",
        "message",
        "sequence",
    )

    def __init__(
        self, message: LiveMessage, sequence: int, expires: int, creator: int | None
    ) -> None:
        self.message = message
        self.sequence = sequence
        self.expires_at_ms = expires
        self.count = 0
        self.creator = creator
        self.count_slot: int | None = None


_by_sequence = attrgetter("sequence")


class Ledger:
    """Live messages and the queue entries that hold them.

    Slots are those of ``table`` (segment.py); without a table, records are
    applied with no slot.
    """

    def __init__(self, table: SegmentTable | None = None) -> None:
        self.messages: dict[int, LiveMessage] = {}
        self.queues: dict[str, dict[int, LiveEntry]] = {}
        self.max_message_id = 0
        self.ignored = 0
        self.keeps_records = True
        self._table = table
        self._appliers: dict[type[Any], Callable[[Any, int | None, bool], None]] = {
            MessageRecord: self._apply_message,
            EnqueueRecord: self._apply_enqueue,
            AckRecord: self._apply_ack,
            DeliveryCountRecord: self._apply_count,
            MoveRecord: self._apply_move,
            PurgeRecord: self._apply_purge,
        }

    def apply(
        self, record: Record, slot: int | None = None, strict: bool = True
    ) -> None:
        """Apply ``record``, stored at ``slot`` (None when not on disk)."""
        self._appliers[type(record)](record, slot, strict)

    def drop_unreferenced(self) -> int:
        """Forget messages no queue took (end of recovery); return how many."""
        lonely = [msg for msg in self.messages.values() if msg.refs == 0]
        for msg in lonely:
            self._forget(msg)
        return len(lonely)

    def forget_records(self) -> None:
        """Stop keeping message records (``snapshot`` no longer works).

        A disk journal needs them only until recovery has handed them over;
        after that the broker holds the messages and the ledger only ids.
        """
        self.keeps_records = False
        for msg in self.messages.values():
            msg.record = None

    def snapshot(self) -> dict[str, tuple[QueuedMessage, ...]]:
        """Every queue's live messages, ordered by sequence."""
        if not self.keeps_records:
            raise RuntimeError("this ledger no longer keeps message records")
        return {
            queue: tuple(
                QueuedMessage(
                    e.message.record,  # type: ignore[arg-type]
                    e.sequence,
                    e.count,
                    e.expires_at_ms,
                )
                for e in sorted(entries.values(), key=_by_sequence)
            )
            for queue, entries in self.queues.items()
        }

    def _reject(self, strict: bool, reason: str) -> None:
        if strict:
            raise RecordRejected(reason)
        self.ignored += 1

    def _entry(self, queue: str, message_id: int) -> LiveEntry | None:
        entries = self.queues.get(queue)
        return None if entries is None else entries.get(message_id)

    # MESSAGE

    def _apply_message(
        self, record: MessageRecord, slot: int | None, strict: bool
    ) -> None:
        if record.message_id in self.messages:
            self._reject(strict, f"message {record.message_id} is already live")
            return
        self._add_message(record, slot)

    def _add_message(self, record: MessageRecord, slot: int | None) -> LiveMessage:
        message_id = record.message_id
        msg = LiveMessage(message_id, record if self.keeps_records else None, slot)
        self.messages[message_id] = msg
        if message_id > self.max_message_id:
            self.max_message_id = message_id
        if slot is not None and self._table is not None:
            self._table.hold(slot)
        return msg

    def _unref(self, msg: LiveMessage, strict: bool) -> None:
        msg.refs -= 1
        # Replay keeps a message no queue holds until drop_unreferenced at
        # the end: a later MOVE may still place it in a queue, when the
        # record that put it in the MOVE's source queue was compacted away.
        if msg.refs == 0 and strict:
            self._forget(msg)

    def _forget(self, msg: LiveMessage) -> None:
        del self.messages[msg.message_id]
        if msg.slot is not None and self._table is not None:
            self._table.release(msg.slot)

    # queue entries

    def _add_entry(
        self,
        queue: str,
        msg: LiveMessage,
        sequence: int,
        expires: int,
        slot: int | None,
    ) -> None:
        entries = self.queues.get(queue)
        if entries is None:
            entries = self.queues[queue] = {}
        entries[msg.message_id] = LiveEntry(msg, sequence, expires, slot)
        msg.refs += 1
        if slot is not None and self._table is not None:
            self._table.hold(slot)

    def _remove_entry(
        self, queue: str, message_id: int, tomb: int | None, strict: bool
    ) -> None:
        entries = self.queues[queue]
        entry = entries.pop(message_id)
        if not entries:
            del self.queues[queue]
        table = self._table
        if table is not None:
            if entry.count_slot is not None:
                table.release(entry.count_slot)
            creator = entry.creator
            if creator is not None:
                table.release(creator)
                if tomb is not None:
                    table.depend(creator, tomb)
        self._unref(entry.message, strict)

    # ENQUEUE, ACK, DELIVERY_COUNT, PURGE

    def _apply_enqueue(
        self, record: EnqueueRecord, slot: int | None, strict: bool
    ) -> None:
        # _add_entry inlined: one ENQUEUE per published message and queue
        message_id, queue = record.message_id, record.queue
        msg = self.messages.get(message_id)
        if msg is None:
            self._reject(strict, f"ENQUEUE of unknown message {message_id}")
            return
        entries = self.queues.get(queue)
        if entries is None:
            entries = self.queues[queue] = {}
        elif message_id in entries:
            self._reject(strict, f"message {message_id} is already in {queue!r}")
            return
        entries[message_id] = LiveEntry(
            msg, record.sequence, record.expires_at_ms, slot
        )
        msg.refs += 1
        if slot is not None and self._table is not None:
            self._table.hold(slot)

    def _apply_ack(self, record: AckRecord, slot: int | None, strict: bool) -> None:
        if self._entry(record.queue, record.message_id) is None:
            reason = f"ACK: message {record.message_id} is not in {record.queue!r}"
            self._reject(strict, reason)
            return
        self._remove_entry(record.queue, record.message_id, slot, strict)

    def _apply_count(
        self, record: DeliveryCountRecord, slot: int | None, strict: bool
    ) -> None:
        entry = self._entry(record.queue, record.message_id)
        if entry is None:
            reason = f"DELIVERY_COUNT: {record.message_id} is not in {record.queue!r}"
            self._reject(strict, reason)
            return
        entry.count = record.count
        table = self._table
        if table is None or slot is None:
            return
        if entry.count_slot is not None:
            table.release(entry.count_slot)
        table.hold(slot)
        entry.count_slot = slot

    def _apply_purge(self, record: PurgeRecord, slot: int | None, strict: bool) -> None:
        entries = self.queues.get(record.queue)
        for message_id in list(entries or ()):
            self._remove_entry(record.queue, message_id, slot, strict)

    # MOVE

    def _apply_move(self, record: MoveRecord, slot: int | None, strict: bool) -> None:
        if strict:
            self._check_move(record)
        new = record.message
        msg: LiveMessage | None
        if new is None:
            msg = self.messages.get(record.message_id)
        elif new.message_id in self.messages:
            self.ignored += 1
            msg = None
        else:
            msg = self._add_message(new, slot)
        if msg is not None:
            msg.refs += 1  # pinned, so leaving the source cannot forget it
        if self._entry(record.source, record.message_id) is not None:
            self._remove_entry(record.source, record.message_id, slot, strict)
        else:
            self.ignored += 1
        if msg is None:
            return
        message_id = msg.message_id
        for target in record.targets:
            if self._entry(target.queue, message_id) is not None:
                self.ignored += 1
                continue
            self._add_entry(
                target.queue, msg, target.sequence, target.expires_at_ms, slot
            )
        self._unref(msg, strict)

    def _check_move(self, record: MoveRecord) -> None:
        if self._entry(record.source, record.message_id) is None:
            reason = f"MOVE: message {record.message_id} is not in {record.source!r}"
            raise RecordRejected(reason)
        new = record.message
        if new is not None:
            if new.message_id in self.messages:
                raise RecordRejected(f"MOVE: message {new.message_id} is already live")
            if not record.targets:
                raise RecordRejected("MOVE with a new message needs a target queue")
        message_id = record.message_id if new is None else new.message_id
        queues = [target.queue for target in record.targets]
        if len(set(queues)) != len(queues):
            raise RecordRejected("MOVE names a target queue twice")
        for queue in queues:
            if queue == record.source and new is None:
                continue
            if self._entry(queue, message_id) is not None:
                raise RecordRejected(
                    f"MOVE: message {message_id} is already in {queue!r}"
                )
