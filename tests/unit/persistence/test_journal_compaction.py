"""Segment deletion and compaction keep replay giving the same live state."""

from __future__ import annotations

import random
import threading
from pathlib import Path

import anyio
import pytest

from amqpd.persistence.journal import (
    AckRecord,
    DiskJournal,
    EnqueueRecord,
    FileLayer,
    JournalFailed,
    JournalOptions,
    MessageRecord,
    MoveRecord,
    Placement,
    Record,
    check,
)
from amqpd.persistence.journal.codec import RecordCodec
from amqpd.persistence.journal.recovery import scan_segment

OPTIONS = JournalOptions(segment_size=4096)


def message(mid: int) -> list[Record]:
    body = f"message {mid} ".encode() * 4
    return [
        MessageRecord(mid, "ex", "rk", b"header", body),
        EnqueueRecord("q", mid, mid),
    ]


def records_in(path: Path) -> list[Record]:
    scan = scan_segment(path, int(path.stem), path.read_bytes(), last=False)
    assert not scan.damage
    codec = RecordCodec()
    return [codec.decode(frame, "test") for frame in scan.frames]


def messages_in(path: Path) -> list[int]:
    return [r.message_id for r in records_in(path) if isinstance(r, MessageRecord)]


def live_ids(directory: Path) -> list[int]:
    journal = DiskJournal(directory, OPTIONS)
    state = journal.recover()
    journal.close()
    return [m.message.message_id for m in state.queues.get("q", ())]


def opened(directory: Path, layer: FileLayer | None = None) -> DiskJournal:
    journal = DiskJournal(directory, OPTIONS, file_layer=layer)
    journal.recover()
    return journal


def seg(directory: Path, segment_id: int) -> Path:
    return directory / f"{segment_id:08d}.seg"


def test_sparse_segment_is_rewritten_in_place_with_only_live_records(
    tmp_path: Path,
) -> None:
    journal = opened(tmp_path)
    for mid in range(1, 121):
        journal.append_many(message(mid))
    journal.flush()
    first = messages_in(seg(tmp_path, 1))
    size_before = seg(tmp_path, 1).stat().st_size
    acked = first[: len(first) * 7 // 10]
    for mid in acked:
        journal.append(AckRecord("q", mid))
    journal.flush()

    assert journal.statistics().compactions == 1
    assert seg(tmp_path, 1).stat().st_size < size_before * 0.4
    assert messages_in(seg(tmp_path, 1)) == first[len(acked) :]
    journal.close()
    assert live_ids(tmp_path) == [m for m in range(1, 121) if m not in acked]
    assert check(tmp_path).clean


def test_segment_with_nothing_live_is_deleted(tmp_path: Path) -> None:
    journal = opened(tmp_path)
    for mid in range(1, 121):
        journal.append_many(message(mid))
    journal.flush()
    first = messages_in(seg(tmp_path, 1))
    for mid in first:
        journal.append(AckRecord("q", mid))
    journal.flush()

    assert not seg(tmp_path, 1).exists()
    assert journal.statistics().deleted_segments == 1
    journal.close()
    assert live_ids(tmp_path) == list(range(first[-1] + 1, 121))


def test_ack_stays_while_the_enqueue_it_cancels_is_on_disk(tmp_path: Path) -> None:
    journal = opened(tmp_path)
    mid = 0
    while not seg(tmp_path, 2).exists():  # segment 1: messages that stay live
        mid += 1
        journal.append_many(message(mid))
        journal.flush()
    in_first = messages_in(seg(tmp_path, 1))
    victim = in_first[0]
    journal.append(AckRecord("q", victim))  # lands in segment 2
    fillers = []
    while not seg(tmp_path, 3).exists():
        mid += 1
        fillers.append(mid)
        journal.append_many(message(mid))
        journal.flush()
    for filler in fillers:
        journal.append(AckRecord("q", filler))
    journal.flush()
    journal.close()

    # Segment 2 was compacted down to the ACK: segment 1 still has the
    # ENQUEUE it cancels, and replay must not bring the victim back.
    second = records_in(seg(tmp_path, 2))
    assert AckRecord("q", victim) in second
    assert not [r for r in second if getattr(r, "message_id", 0) in fillers]
    gone = {victim, *fillers}
    assert live_ids(tmp_path) == [m for m in range(1, mid + 1) if m not in gone]

    # Once segment 1 is compacted the ENQUEUE is gone, and with it the ACK
    # (tracked again after recovery, not only in the journal that wrote it).
    journal = opened(tmp_path)
    # The last message of segment 1 may have its ENQUEUE in segment 2.
    later = [*in_first[1 : len(in_first) * 7 // 10], in_first[-1]]
    for other in later:
        journal.append(AckRecord("q", other))
    journal.flush()
    journal.flush()
    assert victim not in messages_in(seg(tmp_path, 1))
    assert not seg(tmp_path, 2).exists()
    journal.close()
    gone.update(later)
    assert live_ids(tmp_path) == [m for m in range(1, mid + 1) if m not in gone]


class FailingReplace(FileLayer):
    def replace(self, source: Path, target: Path) -> None:
        raise OSError("power cut before the rename")


def test_interrupted_compaction_keeps_the_old_segment(tmp_path: Path) -> None:
    journal = opened(tmp_path, FailingReplace())
    for mid in range(1, 121):
        journal.append_many(message(mid))
    journal.flush()
    first = messages_in(seg(tmp_path, 1))
    original = seg(tmp_path, 1).read_bytes()
    for mid in first[:-2]:
        journal.append(AckRecord("q", mid))
    with pytest.raises(JournalFailed, match="power cut"):
        journal.flush()
    journal.close()

    assert seg(tmp_path, 1).read_bytes() == original
    temp = tmp_path / "00000001.seg.tmp"
    assert temp.exists()
    assert check(tmp_path).leftovers == (temp,)

    assert live_ids(tmp_path) == [m for m in range(1, 121) if m not in first[:-2]]
    assert not temp.exists()


class NoLock(FileLayer):
    """Lets a second journal open the directory of one that 'crashed'."""

    def lock(self, directory: Path) -> int:
        return -1

    def unlock(self, fd: int) -> None:
        pass


def test_crash_keeps_what_was_flushed(tmp_path: Path) -> None:
    crashed = opened(tmp_path, NoLock())
    for mid in range(1, 11):
        crashed.append_many(message(mid))
    crashed.flush()
    for mid in range(11, 21):
        crashed.append_many(message(mid))  # never flushed: lost in the crash

    survivor = DiskJournal(tmp_path, OPTIONS, file_layer=NoLock())
    state = survivor.recover()

    assert [m.message.message_id for m in state.queues["q"]] == list(range(1, 11))
    assert state.report.clean


def test_record_larger_than_a_segment_gets_a_segment_of_its_own(
    tmp_path: Path,
) -> None:
    journal = opened(tmp_path)
    journal.append_many(message(1))
    noise = random.Random(1).randbytes(16384)  # incompressible
    big = MessageRecord(2, "ex", "rk", b"header", noise)
    journal.append_many([big, EnqueueRecord("q", 2, 2)])
    journal.append_many(message(3))
    journal.close()

    assert messages_in(seg(tmp_path, 2)) == [2]
    assert seg(tmp_path, 2).stat().st_size > OPTIONS.segment_size
    assert live_ids(tmp_path) == [1, 2, 3]


def test_message_moved_back_into_its_queue_outlives_its_compacted_enqueues(
    tmp_path: Path,
) -> None:
    # Dead-lettering a message back into the queue it came from kills its
    # ENQUEUE records; once compaction drops them, replay meets the MESSAGE,
    # then MOVEs whose source entries it cannot find (the first has no
    # target). The message must still reach the second MOVE's target.
    journal = opened(tmp_path)
    journal.append_many(
        [
            MessageRecord(1, "ex", "rk", b"h", b"kept"),
            EnqueueRecord("a", 1, 1),
            EnqueueRecord("d", 1, 2),
        ]
    )
    for mid in range(2, 40):
        journal.append_many(message(mid))
    journal.flush()
    journal.append(MoveRecord("d", 1))
    journal.append(MoveRecord("a", 1, (Placement("a", 3),)))
    for mid in messages_in(seg(tmp_path, 1))[1:]:
        journal.append(AckRecord("q", mid))
    journal.flush()
    assert journal.statistics().compactions == 1
    journal.close()
    assert [type(record) for record in records_in(seg(tmp_path, 1))] == [MessageRecord]
    tail = records_in(seg(tmp_path, 2))
    assert sum(isinstance(record, MoveRecord) for record in tail) == 2

    reopened = DiskJournal(tmp_path, OPTIONS)
    state = reopened.recover()
    reopened.close()

    (queued,) = state.queues["a"]
    assert (queued.message.message_id, queued.sequence) == (1, 3)
    assert queued.message.body == b"kept"
    assert "d" not in state.queues


class PausedReplace(FileLayer):
    """Stops the writer's thread right after a compaction's rename."""

    def __init__(self) -> None:
        self.renamed = threading.Event()
        self.go = threading.Event()

    def replace(self, source: Path, target: Path) -> None:
        super().replace(source, target)
        self.renamed.set()
        self.go.wait(10)


def body_of(mid: int) -> bytes:
    record = message(mid)[0]
    assert isinstance(record, MessageRecord)
    return record.body


@pytest.mark.anyio
async def test_bodies_read_while_a_segment_is_compacted_come_out_whole(
    tmp_path: Path,
) -> None:
    layer = PausedReplace()
    journal = DiskJournal(tmp_path, OPTIONS, file_layer=layer)
    journal.recover()
    async with journal:
        for mid in range(1, 121):
            journal.append_many(message(mid))
        await journal.commit()
        first = messages_in(seg(tmp_path, 1))
        acked = first[: len(first) * 7 // 10]
        kept = first[len(acked) :]
        for mid in acked:
            journal.append(AckRecord("q", mid))

        # the new file is in place; the loop still has the old offsets
        assert await anyio.to_thread.run_sync(layer.renamed.wait, 10)
        assert messages_in(seg(tmp_path, 1)) == kept
        assert journal.statistics().compactions == 0
        for mid in kept:
            handle = journal.locate(mid)
            assert handle is not None and journal.read_body(handle) == body_of(mid)

        layer.go.set()
        # cycles run one after the other: this one ends after the compaction
        journal.append_many(message(999))
        await journal.commit()
        assert journal.statistics().compactions == 1
        for mid in kept:
            handle = journal.locate(mid)
            assert handle is not None and journal.read_body(handle) == body_of(mid)
        assert journal.locate(acked[0]) is None


def test_a_segment_sparse_before_its_first_write_is_compacted_after_it(
    tmp_path: Path,
) -> None:
    # records appended and mostly acked within one batch: the segment is
    # sealed and sparse while its file does not exist yet
    journal = opened(tmp_path)
    for mid in range(1, 121):
        journal.append_many(message(mid))
    assert not seg(tmp_path, 1).exists()
    first = [mid for mid in range(1, 121) if mid % 10]
    for mid in first:
        journal.append(AckRecord("q", mid))
    journal.flush()

    assert journal.statistics().compactions >= 1
    for mid in range(10, 121, 10):
        handle = journal.locate(mid)
        assert handle is not None and journal.read_body(handle) == body_of(mid)
    journal.close()
    assert live_ids(tmp_path) == list(range(10, 121, 10))
