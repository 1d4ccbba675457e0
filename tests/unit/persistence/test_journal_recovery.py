"""Recovery on damaged segment files: torn tails, flipped bytes, missing keys."""

from __future__ import annotations

import gc
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from amqpd.persistence.journal import (
    AckRecord,
    DamageKind,
    DeliveryCountRecord,
    DiskJournal,
    EnqueueRecord,
    FileLayer,
    FormatError,
    JournalKeyError,
    JournalOptions,
    Keyring,
    MessageRecord,
    MoveRecord,
    Placement,
    Record,
    RecordKind,
    RecoveredState,
    check,
)
from amqpd.persistence.journal import format as fmt
from amqpd.persistence.journal.codec import RecordCodec
from amqpd.persistence.journal.recovery import replay, scan_segment

KEY = bytes(range(32))


def published(first: int, last: int, queue: str = "q") -> list[Record]:
    records: list[Record] = []
    for mid in range(first, last + 1):
        body = f"body of message {mid}".encode()
        records.append(MessageRecord(mid, "ex", f"rk.{mid}", b"header", body))
        records.append(EnqueueRecord(queue, mid, mid))
    return records


def write(
    directory: Path,
    records: Sequence[Record],
    options: JournalOptions | None = None,
    keyring: Keyring | None = None,
) -> None:
    journal = DiskJournal(directory, options, keyring=keyring)
    journal.recover()
    journal.append_many(records)
    journal.close()


def recover(directory: Path, keyring: Keyring | None = None) -> RecoveredState:
    journal = DiskJournal(directory, keyring=keyring)
    state = journal.recover()
    journal.close()
    return state


def ids(state: RecoveredState, queue: str = "q") -> list[int]:
    return [item.message.message_id for item in state.queues.get(queue, ())]


def only_segment(directory: Path) -> Path:
    (path,) = sorted(directory.glob("*.seg"))
    return path


def frames_of(path: Path) -> list[fmt.Frame]:
    data = path.read_bytes()
    scan = scan_segment(path, int(path.stem), data, last=True)
    assert not scan.damage
    return scan.frames


def snapshot(directory: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(directory.iterdir())}


# torn tails


def test_cut_at_every_byte_of_the_last_record_loses_only_that_record(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    source = tmp_path / "source"
    dead_letter = MessageRecord(100, "dlx", "rk", b"x-death", b"body of message 5")
    move = MoveRecord("q", 5, (Placement("dlq", 1),), dead_letter)
    write(source, [*published(1, 9), move])
    segment = only_segment(source)
    data = segment.read_bytes()
    last = frames_of(segment)[-1]
    assert last.kind == RecordKind.MOVE and last.offset + last.size == len(data)

    caplog.set_level(logging.WARNING, logger="amqpd.journal")
    for cut in range(last.offset, len(data)):
        directory = tmp_path / f"cut{cut}"
        directory.mkdir()
        (directory / segment.name).write_bytes(data[:cut])
        caplog.clear()

        state = recover(directory)

        assert ids(state) == list(range(1, 10)), cut
        assert "dlq" not in state.queues
        assert (directory / segment.name).stat().st_size == last.offset
        if cut == last.offset:
            assert state.report.clean and not caplog.records
            continue
        (damage,) = state.report.damage
        assert damage.kind is DamageKind.TORN_TAIL
        assert (damage.offset, damage.length) == (last.offset, cut - last.offset)
        (warning,) = caplog.records
        assert str(directory / segment.name) in warning.getMessage()
        assert f"offset {last.offset}" in warning.getMessage()
        assert check(directory).clean

    intact = recover(source)
    assert ids(intact) == [1, 2, 3, 4, 6, 7, 8, 9]
    assert ids(intact, "dlq") == [100]


@pytest.mark.parametrize("size", [0, 9])
def test_unfinished_newest_segment_is_removed_and_is_no_damage(
    tmp_path: Path, size: int
) -> None:
    # a crash between creating a segment and writing its header: nothing in
    # it was ever durable, so `journal check` must not call it damage
    write(tmp_path, published(1, 3), JournalOptions(segment_size=4096))
    (tmp_path / "00000002.seg").write_bytes(fmt.segment_header(2)[:size])
    assert check(tmp_path).clean

    state = recover(tmp_path)

    assert ids(state) == [1, 2, 3]
    assert state.report.clean
    assert not (tmp_path / "00000002.seg").exists()


def test_segment_shorter_than_its_header_before_the_newest_is_damage(
    tmp_path: Path,
) -> None:
    path = tmp_path / "00000002.seg"
    scan = scan_segment(path, 2, fmt.segment_header(2)[:9], last=False)

    (damage,) = scan.damage
    assert damage.kind is DamageKind.CORRUPT and damage.offset == 0
    assert scan.cut_at is None


# flipped bytes in the middle


def test_every_flipped_byte_of_a_middle_record_loses_only_that_record(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    source = tmp_path / "source"
    write(source, published(1, 20))
    segment = only_segment(source)
    data = segment.read_bytes()
    victim = frames_of(segment)[20]  # MESSAGE 11
    assert victim.kind == RecordKind.MESSAGE

    caplog.set_level(logging.WARNING, logger="amqpd.journal")
    for index in range(victim.offset, victim.offset + victim.size):
        directory = tmp_path / f"flip{index}"
        directory.mkdir()
        broken = bytearray(data)
        broken[index] ^= 0x5A
        (directory / segment.name).write_bytes(broken)
        caplog.clear()

        state = recover(directory)

        assert ids(state) == [*range(1, 11), *range(12, 21)], index
        (damage,) = state.report.damage
        assert damage.kind is DamageKind.CORRUPT
        assert (damage.offset, damage.length) == (victim.offset, victim.size)
        assert (directory / segment.name).read_bytes() == broken
        (warning,) = caplog.records
        assert f"offset {victim.offset}" in warning.getMessage()
        assert segment.name in warning.getMessage()


def test_damage_in_several_segments_is_counted_and_the_rest_recovered(
    tmp_path: Path,
) -> None:
    write(tmp_path, published(1, 120), JournalOptions(segment_size=4096))
    segments = sorted(tmp_path.glob("*.seg"))
    assert len(segments) >= 3
    damaged = []
    for path in segments[:2]:
        frame = frames_of(path)[4]
        data = bytearray(path.read_bytes())
        data[frame.offset + 5] ^= 0xFF  # the length field
        path.write_bytes(data)
        damaged.append((path, frame.offset))

    state = recover(tmp_path)

    assert len(state.report.damage) == 2
    assert [(d.path, d.offset) for d in state.report.damage] == damaged
    assert len(ids(state)) == 118
    assert ids(state) == sorted(ids(state))


def test_corrupt_end_of_an_older_segment_is_skipped_not_cut(tmp_path: Path) -> None:
    write(tmp_path, published(1, 60), JournalOptions(segment_size=4096))
    first = sorted(tmp_path.glob("*.seg"))[0]
    last_frame = frames_of(first)[-1]
    data = bytearray(first.read_bytes())
    data[last_frame.offset + fmt.HEADER_SIZE] ^= 0x01
    first.write_bytes(data)

    state = recover(tmp_path)

    (damage,) = state.report.damage
    assert damage.kind is DamageKind.CORRUPT and damage.offset == last_frame.offset
    assert first.read_bytes() == data


def test_bad_segment_header_is_reported_and_records_still_read(tmp_path: Path) -> None:
    write(tmp_path, published(1, 5))
    segment = only_segment(tmp_path)
    data = bytearray(segment.read_bytes())
    data[0] ^= 0xFF
    segment.write_bytes(data)

    state = recover(tmp_path)

    assert ids(state) == [1, 2, 3, 4, 5]
    assert [d.kind for d in state.report.damage] == [DamageKind.BAD_SEGMENT_HEADER]


# check() changes nothing


def test_check_reports_like_recovery_and_changes_nothing(tmp_path: Path) -> None:
    write(tmp_path, [*published(1, 10), DeliveryCountRecord("q", 3, 2)])
    segment = only_segment(tmp_path)
    data = bytearray(segment.read_bytes())
    data[fmt.SEGMENT_HEADER_SIZE + 20] ^= 0x10
    segment.write_bytes(bytes(data) + b"\xa5torn")
    (tmp_path / (segment.name + ".tmp")).write_bytes(b"half a compaction")
    before = snapshot(tmp_path)

    report = check(tmp_path)

    assert snapshot(tmp_path) == before
    kinds = [d.kind for d in report.damage]
    assert kinds == [DamageKind.CORRUPT, DamageKind.TORN_TAIL]
    assert report.leftovers == (tmp_path / (segment.name + ".tmp"),)
    assert not report.clean
    assert report.messages == 9 and report.queues == 1
    assert any("torn tail" in line for line in report.describe())

    state = recover(tmp_path)
    assert state.report.damage == report.damage
    assert not (tmp_path / (segment.name + ".tmp")).exists()
    assert check(tmp_path).damage == report.damage[:1]
    assert [m.delivery_count for m in state.queues["q"] if m.sequence == 3] == [2]


def test_check_of_a_missing_directory_raises(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        check(tmp_path / "nothing")


# keys and formats: refuse before changing anything


def test_missing_or_wrong_key_raises_before_anything_changes(tmp_path: Path) -> None:
    keyring = Keyring({"k1": KEY}, active="k1")
    write(tmp_path, published(1, 5), keyring=keyring)
    segment = only_segment(tmp_path)
    segment.write_bytes(segment.read_bytes() + b"\xa5\x02torn tail")
    (tmp_path / "00000001.seg.tmp").write_bytes(b"leftover")
    before = snapshot(tmp_path)

    with pytest.raises(JournalKeyError, match="no keyring"):
        recover(tmp_path)
    with pytest.raises(JournalKeyError, match="k1"):
        recover(tmp_path, Keyring({"k2": KEY}))
    with pytest.raises(JournalKeyError, match="does not decrypt"):
        recover(tmp_path, Keyring({"k1": bytes(32)}))
    assert snapshot(tmp_path) == before

    state = recover(tmp_path, Keyring({"k1": KEY}))
    assert ids(state) == [1, 2, 3, 4, 5]
    assert [d.kind for d in state.report.damage] == [DamageKind.TORN_TAIL]


def test_rotated_key_reads_old_and_new_segments(tmp_path: Path) -> None:
    write(tmp_path, published(1, 3), keyring=Keyring({"old": KEY}, active="old"))
    both = Keyring({"old": KEY, "new": bytes(32)}, active="new")
    journal = DiskJournal(tmp_path, keyring=both)
    journal.recover()
    journal.append_many(published(4, 6))
    journal.close()

    assert ids(recover(tmp_path, both)) == [1, 2, 3, 4, 5, 6]
    with pytest.raises(JournalKeyError, match="new"):
        recover(tmp_path, Keyring({"old": KEY}))


def test_undecodable_record_with_a_good_checksum_is_a_format_error(
    tmp_path: Path,
) -> None:
    write(tmp_path, published(1, 2))
    segment = only_segment(tmp_path)
    bogus = fmt.build_frame(RecordKind.ACK, 0, b"\x01\x00")
    segment.write_bytes(segment.read_bytes() + bogus)
    before = snapshot(tmp_path)

    with pytest.raises(FormatError, match="ACK"):
        recover(tmp_path)
    assert snapshot(tmp_path) == before


def test_segment_of_a_newer_format_version_is_refused(tmp_path: Path) -> None:
    write(tmp_path, published(1, 2))
    segment = only_segment(tmp_path)
    data = bytearray(segment.read_bytes())
    data[8] = fmt.FORMAT_VERSION + 1
    segment.write_bytes(data)

    with pytest.raises(FormatError, match="version"):
        recover(tmp_path)


class CollectorWatch(FileLayer):
    """Notes whether the cyclic garbage collector runs while segments are read."""

    def __init__(self) -> None:
        self.enabled_while_reading: list[bool] = []

    def read(self, path: Path) -> bytes:
        self.enabled_while_reading.append(gc.isenabled())
        return super().read(path)


@pytest.fixture
def collector_on() -> Iterator[None]:
    was = gc.isenabled()
    gc.enable()
    yield
    if not was:
        gc.disable()


@pytest.mark.usefixtures("collector_on")
def test_recovery_pauses_the_collector_and_turns_it_back_on(tmp_path: Path) -> None:
    options = JournalOptions(segment_size=4096)
    write(tmp_path, published(1, 100), options)
    watch = CollectorWatch()

    journal = DiskJournal(tmp_path, options, file_layer=watch)
    state = journal.recover()
    journal.close()
    check(tmp_path, file_layer=watch)

    assert len(watch.enabled_while_reading) > 4
    assert not any(watch.enabled_while_reading)
    assert gc.isenabled()
    assert ids(state) == list(range(1, 101))


@pytest.mark.usefixtures("collector_on")
def test_recovery_failure_turns_the_collector_back_on(tmp_path: Path) -> None:
    write(tmp_path, published(1, 2))
    segment = only_segment(tmp_path)
    segment.write_bytes(segment.read_bytes() + fmt.build_frame(RecordKind.ACK, 0, b"?"))

    with pytest.raises(FormatError):
        recover(tmp_path)
    assert gc.isenabled()


def test_recovery_leaves_a_disabled_collector_disabled(tmp_path: Path) -> None:
    write(tmp_path, published(1, 2))
    was = gc.isenabled()
    gc.disable()
    try:
        assert ids(recover(tmp_path)) == [1, 2]
        assert not gc.isenabled()
    finally:
        if was:
            gc.enable()


def test_recovered_journal_goes_on_without_keeping_message_records(
    tmp_path: Path,
) -> None:
    write(tmp_path, published(1, 3))
    journal = DiskJournal(tmp_path)
    journal.recover()
    journal.append_many(published(4, 5))
    journal.append(AckRecord("q", 2))
    journal.close()

    state = recover(tmp_path)

    assert ids(state) == [1, 3, 4, 5]
    assert [m.message.body for m in state.queues["q"]][-1] == b"body of message 5"


@pytest.mark.usefixtures("collector_on")
def test_recovery_leaves_objects_frozen_by_others_frozen(tmp_path: Path) -> None:
    write(tmp_path, published(1, 2))
    gc.freeze()
    try:
        assert ids(recover(tmp_path)) == [1, 2]
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
    assert gc.isenabled()


# bodies left on disk past a budget


def test_bodies_past_the_budget_are_left_on_disk_and_read_back(
    tmp_path: Path,
) -> None:
    records = published(1, 10)
    records.append(AckRecord("q", 1))  # its body was counted, then acked
    dead = MessageRecord(11, "dlx", "rk", b"header", b"dead-lettered " * 10)
    records.append(MoveRecord("q", 10, (Placement("dlq", 1),), dead))
    write(tmp_path, records)
    bodies = {r.message_id: r.body for r in records if isinstance(r, MessageRecord)}
    bodies[11] = dead.body
    budget = len(bodies[1]) + len(bodies[2]) + len(bodies[3])

    journal = DiskJournal(tmp_path)
    state = journal.recover(keep_bodies=budget)

    queued = {item.message.message_id: item.message for item in state.queues["q"]}
    # the oldest three fit (one of them acked since); the others are on disk
    assert [queued[m].body for m in (2, 3)] == [bodies[2], bodies[3]]
    assert dict(state.unloaded) == {
        mid: len(bodies[mid]) for mid in (4, 5, 6, 7, 8, 9, 11)
    }
    assert state.queues["dlq"][0].message.body == b""
    for mid, size in state.unloaded.items():
        handle = journal.locate(mid)
        assert handle is not None
        assert journal.read_body(handle) == bodies[mid] and len(bodies[mid]) == size
    journal.close()


def test_replay_with_no_body_budget_keeps_no_body_and_reports_the_same(
    tmp_path: Path,
) -> None:
    # what `journal check` runs (keep_bodies=0): every body left on disk,
    # the same live state and report as a replay that keeps them
    write(tmp_path, published(1, 50))
    lean = replay(tmp_path, RecordCodec(), FileLayer(), keep_bodies=0)
    full = replay(tmp_path, RecordCodec(), FileLayer())
    state = lean.state()
    assert sorted(state.unloaded) == list(range(1, 51))
    assert all(item.message.body == b"" for item in state.queues["q"])
    assert ids(state) == ids(full.state()) == list(range(1, 51))
    assert lean.report == full.report == check(tmp_path)
    assert check(tmp_path).clean and check(tmp_path).messages == 50
