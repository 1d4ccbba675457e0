"""The ledger's packed shape (after forget_records) keeps the same holds,
live messages and queue sizes as its object shape, record for record."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from amqpd.persistence.journal import (
    AckRecord,
    DeliveryCountRecord,
    EnqueueRecord,
    MessageRecord,
    MoveRecord,
    Placement,
    PurgeRecord,
    Record,
)
from amqpd.persistence.journal.ledger import Ledger
from amqpd.persistence.journal.segment import SegmentTable


def message(mid: int) -> MessageRecord:
    return MessageRecord(mid, "", "q", b"\x00\x3c" + bytes(12), b"body")


def fan_out(mid: int, queues: int) -> list[Record]:
    records: list[Record] = [message(mid)]
    records += [EnqueueRecord(f"q{n}", mid, mid) for n in range(queues)]
    return records


def replay(records: Sequence[Record], packed: bool, tmp_path: Path) -> tuple:
    """Apply ``records`` strictly, one slot each; return what is observable."""
    table = SegmentTable(tmp_path)
    ledger = Ledger(table)
    if packed:
        ledger.forget_records()
    segment = table.add(1)
    for offset, record in enumerate(records):
        ledger.apply(record, segment.slot(offset * 100, 100))
    return (
        list(segment.holds),
        segment.live_bytes,
        {mid: ledger.messages[mid].slot for mid in ledger.messages},
        {queue: len(entries) for queue, entries in ledger.queues.items()},
    )


def same_in_both_shapes(records: Sequence[Record], tmp_path: Path) -> tuple:
    objects = replay(records, False, tmp_path)
    assert replay(records, True, tmp_path) == objects
    return objects


def test_a_message_in_300_queues_is_forgotten_after_the_last_ack(
    tmp_path: Path,
) -> None:
    records = fan_out(1, 300)
    records += [AckRecord(f"q{n}", 1) for n in range(300)]
    holds, live_bytes, messages, queues = same_in_both_shapes(records, tmp_path)
    assert messages == {} and queues == {}
    assert live_bytes == sum(100 for held in holds if held)


def test_a_message_in_300_queues_stays_while_one_holds_it(tmp_path: Path) -> None:
    records = fan_out(1, 300)
    records += [AckRecord(f"q{n}", 1) for n in range(299)]
    _, _, messages, queues = same_in_both_shapes(records, tmp_path)
    assert list(messages) == [1] and queues == {"q299": 1}


def test_delivery_counts_moves_and_purges_keep_the_same_holds(
    tmp_path: Path,
) -> None:
    records = fan_out(1, 2) + fan_out(2, 1) + fan_out(3, 1)
    records += [
        DeliveryCountRecord("q0", 1, 1),
        DeliveryCountRecord("q0", 1, 2),
        DeliveryCountRecord("q1", 1, 1),
        MoveRecord("q0", 2, (Placement("q5", 7, 0),)),
        MoveRecord("q5", 2, (Placement("q6", 8, 0),), message(4)),
        AckRecord("q1", 1),
        PurgeRecord("q0"),
    ]
    _, _, messages, queues = same_in_both_shapes(records, tmp_path)
    # 1 and 3 purged or acked, 2 moved on as 4
    assert list(messages) == [4] and queues == {"q6": 1}
