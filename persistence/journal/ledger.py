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
from .segment import SegmentTable, Slot
from .state import QueuedMessage


class LiveMessage:
    """A message some queue holds, or that no queue has taken yet."""

    __slots__ = ("record", "refs", "slot")

    def __init__(self, record: MessageRecord, slot: Slot | None) -> None:
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
        self, message: LiveMessage, sequence: int, expires: int, creator: Slot | None
    ) -> None:
        self.message = message
        self.sequence = sequence
        self.expires_at_ms = expires
        self.count = 0
        self.creator = creator
        self.count_slot: Slot | None = None


_by_sequence = attrgetter("sequence")


class Ledger:
    """Live messages and the queue entries that hold them."""

    def __init__(self, table: SegmentTable | None = None) -> None:
        self.messages: dict[int, LiveMessage] = {}
        self.queues: dict[str, dict[int, LiveEntry]] = {}
        self.max_message_id = 0
        self.ignored = 0
        self._table = table
        self._appliers: dict[type[Any], Callable[[Any, Slot | None, bool], None]] = {
            MessageRecord: self._apply_message,
            EnqueueRecord: self._apply_enqueue,
            AckRecord: self._apply_ack,
            DeliveryCountRecord: self._apply_count,
            MoveRecord: self._apply_move,
            PurgeRecord: self._apply_purge,
        }

    def apply(
        self, record: Record, slot: Slot | None = None, strict: bool = True
    ) -> None:
        """Apply ``record``, stored at ``slot`` (None when not on disk)."""
        self._appliers[type(record)](record, slot, strict)

    def drop_unreferenced(self) -> int:
        """Forget messages no queue took (end of recovery); return how many."""
        lonely = [msg for msg in self.messages.values() if msg.refs == 0]
        for msg in lonely:
            self._forget(msg)
        return len(lonely)

    def snapshot(self) -> dict[str, tuple[QueuedMessage, ...]]:
        """Every queue's live messages, ordered by sequence."""
        return {
            queue: tuple(
                QueuedMessage(e.message.record, e.sequence, e.count, e.expires_at_ms)
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
        self, record: MessageRecord, slot: Slot | None, strict: bool
    ) -> None:
        if record.message_id in self.messages:
            self._reject(strict, f"message {record.message_id} is already live")
            return
        self._add_message(record, slot)

    def _add_message(self, record: MessageRecord, slot: Slot | None) -> LiveMessage:
        msg = LiveMessage(record, slot)
        self.messages[record.message_id] = msg
        if record.message_id > self.max_message_id:
            self.max_message_id = record.message_id
        if slot is not None and self._table is not None:
            self._table.hold(slot)
        return msg

    def _unref(self, msg: LiveMessage) -> None:
        msg.refs -= 1
        if msg.refs == 0:
            self._forget(msg)

    def _forget(self, msg: LiveMessage) -> None:
        del self.messages[msg.record.message_id]
        if msg.slot is not None and self._table is not None:
            self._table.release(msg.slot)

    # queue entries

    def _add_entry(
        self,
        queue: str,
        msg: LiveMessage,
        sequence: int,
        expires: int,
        slot: Slot | None,
    ) -> None:
        entries = self.queues.get(queue)
        if entries is None:
            entries = self.queues[queue] = {}
        entries[msg.record.message_id] = LiveEntry(msg, sequence, expires, slot)
        msg.refs += 1
        if slot is not None and self._table is not None:
            self._table.hold(slot)

    def _remove_entry(self, queue: str, message_id: int, tomb: Slot | None) -> None:
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
        self._unref(entry.message)

    # ENQUEUE, ACK, DELIVERY_COUNT, PURGE

    def _apply_enqueue(
        self, record: EnqueueRecord, slot: Slot | None, strict: bool
    ) -> None:
        msg = self.messages.get(record.message_id)
        if msg is None:
            self._reject(strict, f"ENQUEUE of unknown message {record.message_id}")
            return
        if self._entry(record.queue, record.message_id) is not None:
            reason = f"message {record.message_id} is already in {record.queue!r}"
            self._reject(strict, reason)
            return
        self._add_entry(record.queue, msg, record.sequence, record.expires_at_ms, slot)

    def _apply_ack(self, record: AckRecord, slot: Slot | None, strict: bool) -> None:
        if self._entry(record.queue, record.message_id) is None:
            reason = f"ACK: message {record.message_id} is not in {record.queue!r}"
            self._reject(strict, reason)
            return
        self._remove_entry(record.queue, record.message_id, slot)

    def _apply_count(
        self, record: DeliveryCountRecord, slot: Slot | None, strict: bool
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

    def _apply_purge(
        self, record: PurgeRecord, slot: Slot | None, strict: bool
    ) -> None:
        entries = self.queues.get(record.queue)
        for message_id in list(entries or ()):
            self._remove_entry(record.queue, message_id, slot)

    # MOVE

    def _apply_move(self, record: MoveRecord, slot: Slot | None, strict: bool) -> None:
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
            self._remove_entry(record.source, record.message_id, slot)
        else:
            self.ignored += 1
        if msg is None:
            return
        message_id = msg.record.message_id
        for target in record.targets:
            if self._entry(target.queue, message_id) is not None:
                self.ignored += 1
                continue
            self._add_entry(
                target.queue, msg, target.sequence, target.expires_at_ms, slot
            )
        self._unref(msg)

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
