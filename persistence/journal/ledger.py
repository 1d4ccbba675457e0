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

The state is ints in dicts and tuples of ints, no object per message: the
cyclic garbage collector untracks such tuples and dicts, so a backlog of a
million messages adds nothing to the collections of a process that keeps
allocating (measured on appends while a backlog grows: a fifth of their
cost went to collections walking per-message objects).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeAlias

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

LiveEntry: TypeAlias = tuple[int, int, int, int | None, int | None]
"""A message's place in one queue: sequence, expires_at_ms, delivery count,
the slot of the record that put it there (creator) and the slot of its
newest DELIVERY_COUNT record (None without a table or such a record).

A plain tuple on purpose: the collector untracks exact tuples of ints, not
named tuples."""


class Entries(dict[int, LiveEntry]):
    """A queue's entries by message id.

    A subclass, because the collector untracks a plain dict whose values it
    untracked, and every new entry (a new tuple, tracked until the next
    collection) would track it again as a young object: collections would
    walk all of a long queue's entries over and over. A subclass stays
    tracked and old, walked once per full collection.
    """

    __slots__ = ()


def _by_sequence(item: tuple[int, LiveEntry]) -> int:
    return item[1][0]


class Ledger:
    """Live messages and the queue entries that hold them.

    ``messages`` maps each live message id to the number of queue entries
    that hold it; ``queues`` maps a queue to its entries by message id.
    Slots are those of ``table`` (segment.py); without a table, records are
    applied with no slot.
    """

    def __init__(self, table: SegmentTable | None = None) -> None:
        self.messages: dict[int, int] = {}
        self.queues: dict[str, dict[int, LiveEntry]] = {}
        self.max_message_id = 0
        self.ignored = 0
        self.keeps_records = True
        self._records: dict[int, MessageRecord] = {}
        self._slots: dict[int, int] = {}
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
        lonely = [mid for mid, refs in self.messages.items() if refs == 0]
        for message_id in lonely:
            self._forget(message_id)
        return len(lonely)

    def forget_records(self) -> None:
        """Stop keeping message records (``snapshot`` no longer works).

        A disk journal needs them only until recovery has handed them over;
        after that the broker holds the messages and the ledger only ids.
        """
        self.keeps_records = False
        self._records = {}

    def snapshot(self) -> dict[str, tuple[QueuedMessage, ...]]:
        """Every queue's live messages, ordered by sequence."""
        if not self.keeps_records:
            raise RuntimeError("this ledger no longer keeps message records")
        records = self._records
        return {
            queue: tuple(
                QueuedMessage(records[mid], sequence, count, expires)
                for mid, (sequence, expires, count, _, _) in sorted(
                    entries.items(), key=_by_sequence
                )
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

    def _add_message(self, record: MessageRecord, slot: int | None) -> int:
        message_id = record.message_id
        self.messages[message_id] = 0
        if self.keeps_records:
            self._records[message_id] = record
        if message_id > self.max_message_id:
            self.max_message_id = message_id
        if slot is not None and self._table is not None:
            self._slots[message_id] = slot
            self._table.hold(slot)
        return message_id

    def _unref(self, message_id: int, strict: bool) -> None:
        refs = self.messages[message_id] - 1
        self.messages[message_id] = refs
        # Replay keeps a message no queue holds until drop_unreferenced at
        # the end: a later MOVE may still place it in a queue, when the
        # record that put it in the MOVE's source queue was compacted away.
        if refs == 0 and strict:
            self._forget(message_id)

    def _forget(self, message_id: int) -> None:
        del self.messages[message_id]
        self._records.pop(message_id, None)
        slot = self._slots.pop(message_id, None)
        if slot is not None and self._table is not None:
            self._table.release(slot)

    # queue entries

    def _add_entry(
        self,
        queue: str,
        message_id: int,
        sequence: int,
        expires: int,
        slot: int | None,
    ) -> None:
        entries = self.queues.get(queue)
        if entries is None:
            entries = self.queues[queue] = Entries()
        entries[message_id] = (sequence, expires, 0, slot, None)
        self.messages[message_id] += 1
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
            _, _, _, creator, count_slot = entry
            if count_slot is not None:
                table.release(count_slot)
            if creator is not None:
                table.release(creator)
                if tomb is not None:
                    table.depend(creator, tomb)
        self._unref(message_id, strict)

    # ENQUEUE, ACK, DELIVERY_COUNT, PURGE

    def _apply_enqueue(
        self, record: EnqueueRecord, slot: int | None, strict: bool
    ) -> None:
        # _add_entry inlined: one ENQUEUE per published message and queue
        message_id, queue = record.message_id, record.queue
        refs = self.messages.get(message_id)
        if refs is None:
            self._reject(strict, f"ENQUEUE of unknown message {message_id}")
            return
        entries = self.queues.get(queue)
        if entries is None:
            entries = self.queues[queue] = Entries()
        elif message_id in entries:
            self._reject(strict, f"message {message_id} is already in {queue!r}")
            return
        entries[message_id] = (record.sequence, record.expires_at_ms, 0, slot, None)
        self.messages[message_id] = refs + 1
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
        message_id = record.message_id
        entry = self._entry(record.queue, message_id)
        if entry is None:
            reason = f"DELIVERY_COUNT: {message_id} is not in {record.queue!r}"
            self._reject(strict, reason)
            return
        sequence, expires, _, creator, count_slot = entry
        table = self._table
        if table is not None and slot is not None:
            if count_slot is not None:
                table.release(count_slot)
            table.hold(slot)
            count_slot = slot
        self.queues[record.queue][message_id] = (
            sequence,
            expires,
            record.count,
            creator,
            count_slot,
        )

    def _apply_purge(self, record: PurgeRecord, slot: int | None, strict: bool) -> None:
        entries = self.queues.get(record.queue)
        for message_id in list(entries or ()):
            self._remove_entry(record.queue, message_id, slot, strict)

    # MOVE

    def _apply_move(self, record: MoveRecord, slot: int | None, strict: bool) -> None:
        if strict:
            self._check_move(record)
        new = record.message
        moving: int | None = None
        if new is None:
            if record.message_id in self.messages:
                moving = record.message_id
        elif new.message_id in self.messages:
            self.ignored += 1
        else:
            moving = self._add_message(new, slot)
        if moving is not None:
            self.messages[moving] += 1  # pinned, so leaving the source cannot forget it
        if self._entry(record.source, record.message_id) is not None:
            self._remove_entry(record.source, record.message_id, slot, strict)
        else:
            self.ignored += 1
        if moving is None:
            return
        for target in record.targets:
            if self._entry(target.queue, moving) is not None:
                self.ignored += 1
                continue
            self._add_entry(
                target.queue, moving, target.sequence, target.expires_at_ms, slot
            )
        self._unref(moving, strict)

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
