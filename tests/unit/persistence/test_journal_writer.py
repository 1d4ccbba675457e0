"""Group commit: confirms only after the fsync that covers them, one per batch."""

from __future__ import annotations

import errno
import functools
import threading
import time
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest

from amqpd.persistence.journal import (
    AckRecord,
    DiskJournal,
    EnqueueRecord,
    FileLayer,
    JournalClosed,
    JournalError,
    JournalFailed,
    JournalLocked,
    JournalOptions,
    MessageRecord,
    Record,
)
from amqpd.persistence.journal.recovery import scan_segment

pytestmark = pytest.mark.anyio


class WatchedLayer(FileLayer):
    """Counts bytes written and bytes covered by fsync, per file."""

    def __init__(self, fsync_delay: float = 0.0) -> None:
        self.fsync_delay = fsync_delay
        self.paths: dict[int, Path] = {}
        self.written: dict[Path, int] = {}
        self.synced: dict[Path, int] = {}
        self.events: list[tuple[str, Path]] = []
        self.fail_fsync = False
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)

    def create(self, path: Path) -> int:
        fd = super().create(path)
        with self._lock:
            self.paths[fd] = path
            self.written[path] = self.synced[path] = 0
        return fd

    def write(self, fd: int, data: bytes | bytearray | memoryview) -> None:
        super().write(fd, data)
        with self._lock:
            path = self.paths[fd]
            self.written[path] += len(data)
            self.events.append(("write", path))

    def fsync(self, fd: int) -> None:
        if self.fail_fsync:
            raise OSError(errno.EIO, "injected fsync failure")
        time.sleep(self.fsync_delay)
        with self._lock:
            path = self.paths[fd]
            covered = self.written[path]
        super().fsync(fd)
        with self._lock:
            self.synced[path] = covered
            self.events.append(("fsync", path))
            self._changed.notify_all()

    def remove(self, path: Path) -> None:
        with self._lock:
            self.events.append(("remove", path))
            unsynced = {p: n - self.synced[p] for p, n in self.written.items()}
            self.unsynced_at_remove = [n for p, n in unsynced.items() if p != path]
            self._changed.notify_all()
        super().remove(path)

    async def wait_for(self, condition: Callable[[], bool], seconds: float) -> None:
        """Wait (in a worker thread) until ``condition()`` holds after a change."""

        def wait() -> bool:
            with self._changed:
                return self._changed.wait_for(condition, seconds)

        assert await anyio.to_thread.run_sync(wait), "timed out"

    def removes(self) -> int:
        return sum(1 for kind, _ in self.events if kind == "remove")

    def synced_bytes(self, path: Path) -> int:
        with self._lock:
            return self.synced.get(path, 0)


def message(mid: int, body: bytes = b"0123456789abcdef") -> list[Record]:
    return [
        MessageRecord(mid, "ex", "rk", b"header", body),
        EnqueueRecord("q", mid, mid),
    ]


def record_ends(path: Path) -> dict[int, int]:
    """lsn -> end offset of that record, for a journal's first segment."""
    scan = scan_segment(path, 1, path.read_bytes(), last=True)
    return {lsn: f.offset + f.size for lsn, f in enumerate(scan.frames, start=1)}


async def publish_concurrently(
    journal: DiskJournal, layer: WatchedLayer, segment: Path, tasks: int, each: int
) -> list[tuple[int, int]]:
    """Publishers await their own confirms; returns (lsn, synced bytes) seen."""
    confirms: list[tuple[int, int]] = []

    def confirmed(lsn: int, error: JournalError | None) -> None:
        assert error is None
        confirms.append((lsn, layer.synced_bytes(segment)))

    async def publisher(start: int) -> None:
        for mid in range(start, start + each):
            lsn = journal.append_many(message(mid))
            journal.on_durable(lsn, functools.partial(confirmed, lsn))
            await journal.commit(lsn)

    async with anyio.create_task_group() as group:
        for task in range(tasks):
            group.start_soon(publisher, 1 + task * each)
    return confirms


async def test_confirm_is_sent_only_after_the_fsync_covering_the_record(
    tmp_path: Path,
) -> None:
    layer = WatchedLayer(fsync_delay=0.002)
    journal = DiskJournal(tmp_path, file_layer=layer)
    journal.recover()
    segment = tmp_path / "00000001.seg"

    async with journal:
        confirms = await publish_concurrently(journal, layer, segment, 8, 25)
        batches = journal.statistics().batches

    ends = record_ends(segment)
    assert len(confirms) == 200
    for lsn, synced in confirms:
        assert synced >= ends[lsn], f"lsn {lsn} confirmed before its fsync"
    assert batches < 100, "appends were not grouped into batches"
    assert sum(1 for kind, _ in layer.events if kind == "fsync") <= batches + 1


async def test_interval_policy_confirms_before_fsync_as_documented(
    tmp_path: Path,
) -> None:
    # The same check as above catches early confirms: in interval mode they
    # are expected, which shows the check has teeth.
    layer = WatchedLayer()
    options = JournalOptions(fsync="interval", fsync_interval_ms=60_000)
    journal = DiskJournal(tmp_path, options, file_layer=layer)
    journal.recover()
    segment = tmp_path / "00000001.seg"

    async with journal:
        confirms = await publish_concurrently(journal, layer, segment, 2, 5)

    ends = record_ends(segment)
    assert any(synced < ends[lsn] for lsn, synced in confirms)
    assert layer.synced_bytes(segment) == segment.stat().st_size


async def test_interval_policy_fsyncs_within_the_interval_when_idle(
    tmp_path: Path,
) -> None:
    layer = WatchedLayer()
    options = JournalOptions(fsync="interval", fsync_interval_ms=300)
    journal = DiskJournal(tmp_path, options, file_layer=layer)
    journal.recover()
    segment = tmp_path / "00000001.seg"

    async with journal:
        lsn = journal.append_many(message(1))
        await journal.commit(lsn)
        size = segment.stat().st_size
        assert layer.synced_bytes(segment) < size
        await layer.wait_for(lambda: layer.synced.get(segment, 0) == size, 3)


async def test_segments_are_deleted_only_after_the_acks_are_synced(
    tmp_path: Path,
) -> None:
    layer = WatchedLayer()
    options = JournalOptions(
        fsync="interval", fsync_interval_ms=60_000, segment_size=4096
    )
    journal = DiskJournal(tmp_path, options, file_layer=layer)
    journal.recover()

    async with journal:
        for mid in range(1, 121):
            journal.append_many(message(mid))
        await journal.commit()
        for mid in range(1, 121):
            journal.append(AckRecord("q", mid))
        await journal.commit()
        await layer.wait_for(lambda: layer.removes() >= 3, 3)

    assert layer.unsynced_at_remove == [0] * len(layer.unsynced_at_remove)


async def test_failed_fsync_fails_waiters_and_later_appends(tmp_path: Path) -> None:
    layer = WatchedLayer()
    journal = DiskJournal(tmp_path, file_layer=layer)
    journal.recover()
    errors: list[JournalError | None] = []

    async with journal:
        await journal.commit(journal.append_many(message(1)))
        layer.fail_fsync = True
        lsn = journal.append_many(message(2))
        journal.on_durable(lsn, errors.append)
        with pytest.raises(JournalFailed, match="injected"):
            await journal.commit(lsn)
        with pytest.raises(JournalFailed):
            journal.append_many(message(3))

    assert len(errors) == 1 and isinstance(errors[0], JournalFailed)
    assert journal.durable_lsn == 2


async def test_closing_writes_what_was_appended_even_when_cancelled(
    tmp_path: Path,
) -> None:
    journal = DiskJournal(tmp_path)
    journal.recover()
    with anyio.CancelScope() as scope:
        async with journal:
            journal.append_many(message(1))
            journal.append_many(message(2))
            scope.cancel()
            await anyio.sleep(5)
    assert journal.durable_lsn == 4

    reopened = DiskJournal(tmp_path)
    assert [m.message.message_id for m in reopened.recover().queues["q"]] == [1, 2]
    reopened.close()


async def test_misuse_is_refused_clearly(tmp_path: Path) -> None:
    journal = DiskJournal(tmp_path)
    with pytest.raises(JournalClosed, match="recover"):
        journal.append_many(message(1))
    journal.recover()
    journal.append_many(message(1))
    with pytest.raises(JournalClosed, match="async with"):
        await journal.commit()
    async with journal:
        with pytest.raises(JournalError, match="running"):
            journal.flush()
        with pytest.raises(ValueError, match="not been appended"):
            journal.on_durable(99, lambda error: None)
    with pytest.raises(JournalClosed):
        journal.append_many(message(2))


def test_a_directory_is_used_by_one_journal_at_a_time(tmp_path: Path) -> None:
    first = DiskJournal(tmp_path)
    first.recover()
    with pytest.raises(JournalLocked):
        DiskJournal(tmp_path).recover()
    first.close()
    second = DiskJournal(tmp_path)
    second.recover()
    second.close()


def test_flush_without_an_event_loop_makes_records_durable(tmp_path: Path) -> None:
    layer = WatchedLayer()
    journal = DiskJournal(tmp_path, file_layer=layer)
    journal.recover()
    seen: list[JournalError | None] = []
    lsn = journal.append_many(message(1))
    journal.on_durable(lsn, seen.append)
    assert seen == []

    journal.flush()

    assert seen == [None] and journal.durable_lsn == lsn
    segment = tmp_path / "00000001.seg"
    assert layer.synced_bytes(segment) == segment.stat().st_size
    journal.close()
