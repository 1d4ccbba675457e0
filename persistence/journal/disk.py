"""The journal on disk: group commit over append-only segment files.

``append`` runs in the event loop and does the cheap part only: it checks
the record against the live state (Ledger), encodes it, decides which
segment and offset it will occupy, and adds its bytes to the pending batch.
One writer task then takes the whole batch, writes it and fsyncs it on a
worker thread, and completes every durability callback up to the batch's
last lsn in one pass: one write and one fsync per batch however many
callers appended to it. While a batch is being written the next one fills.

Each writer cycle also deletes segments with nothing live and compacts at
most one sparse segment. The plan is made before the batch is taken, and
carried out after that batch is durable, so a segment is never deleted or
rewritten before the records that made its contents dead are on disk.

``read_body`` reads a live message's body back (the broker's pager uses it
past its memory budget). It runs on the event loop thread while a worker
thread may be renaming a compacted file over the segment it reads; so a
reader is opened on the segment (once its batch is written, right before
the compaction's thread starts), reads go on through that descriptor to
the old file at the old offsets, and the reader is closed only when the
loop thread takes the new offsets (``_finish``).
"""

from __future__ import annotations

import logging
import os
import time
from bisect import bisect_right
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from operator import itemgetter
from pathlib import Path
from types import TracebackType

import anyio
from anyio.abc import TaskGroup

from .codec import RecordCodec
from .compaction import CompactionPlan, plan_compaction, rewrite_segment
from .errors import JournalClosed, JournalError, JournalFailed, RecordRejected
from .filelayer import FileLayer
from .format import OVERHEAD, SEGMENT_HEADER_SIZE, read_frame
from .interface import DurableCallback, JournalOptions, JournalStatistics
from .keyring import Keyring
from .ledger import Ledger
from .records import MessageRecord, MoveRecord, Record
from .recovery import RecordPlace, collector_paused, repair, replay
from .segment import Segment, SegmentTable
from .state import RecoveredState
from .writer import Batch, SegmentWriter

log = logging.getLogger("amqpd.journal")

_lsn_of = itemgetter(0)


@dataclass(slots=True)
class _Maintenance:
    delete: list[Segment]
    compaction: CompactionPlan | None


class DiskJournal:
    """A journal stored in ``directory`` (created if missing).

    ``keyring`` decrypts encrypted records and, if it has an active key,
    encrypts new ones. ``file_layer`` replaces the file operations (tests).
    Call ``recover()`` once, then either ``async with journal:`` (group
    commit by a writer task, the normal case) or, with no event loop,
    ``flush()`` and ``close()``.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        options: JournalOptions | None = None,
        *,
        keyring: Keyring | None = None,
        file_layer: FileLayer | None = None,
    ) -> None:
        self.directory = Path(directory)
        self.options = options or JournalOptions()
        self._layer = file_layer or FileLayer()
        self._segment_size = self.options.segment_size
        self._codec = RecordCodec(
            compress_threshold=self.options.compress_threshold,
            compress_level=self.options.compress_level,
            compression=self.options.compression,
            keyring=keyring,
            max_record_size=self.options.max_record_size,
        )
        self._table = SegmentTable(self.directory, self.options.compact_ratio)
        self._ledger = Ledger(self._table)
        self._writer = SegmentWriter(self.directory, self._layer)
        self._tail = self._table.add(0)
        self._tail_offset = SEGMENT_HEADER_SIZE
        self._pending = Batch()
        self._lsn = 0
        self._durable = 0
        self._callbacks: deque[tuple[int, DurableCallback]] = deque()
        self._opened = False
        self._closed = False
        self._failure: JournalError | None = None
        self._lock_fd: int | None = None
        self._task_group: TaskGroup | None = None
        self._running = False
        self._stopped = anyio.Event()
        self._wakeup = anyio.Event()
        self._wake_pending = False
        self._last_sync = time.monotonic()
        self._batches = self._compactions = self._deleted = 0
        # segment id -> fd open for read_body (see the module's docstring)
        self._readers: dict[int, int] = {}

    # lifecycle

    def recover(self, keep_bodies: int | None = None) -> RecoveredState:
        """Take the directory's lock, read it, repair it, return what is live.

        With ``keep_bodies``, message bodies past that many bytes are left
        on disk (``RecoveredState.unloaded``; read them with ``read_body``),
        so that recovering a deep queue does not need its bodies in memory.

        Blocking; a broker with a large journal may run it in a worker
        thread. The cyclic garbage collector is paused meanwhile, for the
        whole process (``recovery.collector_paused``). Raises JournalLocked
        if another journal holds the directory, JournalKeyError or
        FormatError (before changing anything) if a key or the zstandard
        package is missing.
        """
        if self._opened or self._closed:
            raise JournalError("recover() runs once, first")
        if not self.directory.is_dir():
            self.directory.mkdir(parents=True)
            self._layer.fsync_directory(self.directory.parent)
        self._lock_fd = self._layer.lock(self.directory)
        try:
            with collector_paused():
                result = replay(
                    self.directory, self._codec, self._layer,
                    self.options.compact_ratio, keep_bodies,
                )  # fmt: skip
                repair(result, self._layer)
                state = result.state()
        except BaseException:
            self._unlock()
            raise
        self._table, self._ledger = result.table, result.ledger
        # The broker holds the messages from here on; the ledger needs ids.
        self._ledger.forget_records()
        self._tail = self._table.add(result.next_segment_id)
        self._opened = True
        report = result.report
        log.info(
            "journal %s: recovered %d records in %d segments: "
            "%d messages in %d queues, %d damaged places",
            self.directory,
            report.records,
            report.segments,
            report.messages,
            report.queues,
            len(report.damage),
        )
        return state

    async def __aenter__(self) -> DiskJournal:
        if not self._opened or self._closed:
            raise JournalClosed("call recover() before 'async with journal'")
        if self._task_group is not None:
            raise JournalError("the journal's writer is already running")
        task_group = anyio.create_task_group()
        await task_group.__aenter__()
        self._task_group = task_group
        self._running = True
        self._stopped = anyio.Event()
        self._wakeup = anyio.Event()
        self._wake_pending = False
        task_group.start_soon(self._run_writer)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        await self.aclose()
        task_group, self._task_group = self._task_group, None
        if task_group is not None:
            return await task_group.__aexit__(exc_type, exc, tb)
        return None

    async def aclose(self) -> None:
        """Write and fsync everything appended, close the files, unlock.

        Safe to call more than once; shielded from cancellation so that a
        broker shutting down still writes what it appended.
        """
        if self._closed:
            return
        self._closed = True
        with anyio.CancelScope(shield=True):
            if self._running:
                self._wake()
                await self._stopped.wait()
            if self._opened and self._failure is None:
                batch = self._take()
                try:
                    await anyio.to_thread.run_sync(self._write_final, batch)
                except Exception as exc:
                    self._fail(exc)
                else:
                    if batch:
                        self._complete(batch.last_lsn)
            self._shut()

    def close(self) -> None:
        """``aclose`` for use without an event loop."""
        if self._closed:
            return
        if self._running:
            raise JournalError("the writer task is running: use aclose()")
        self._closed = True
        if self._opened and self._failure is None:
            batch = self._take()
            try:
                self._write_final(batch)
            except Exception as exc:
                self._fail(exc)
            else:
                if batch:
                    self._complete(batch.last_lsn)
        self._shut()

    # appending

    @property
    def appended_lsn(self) -> int:
        """The lsn of the newest appended record (0 before the first)."""
        return self._lsn

    @property
    def durable_lsn(self) -> int:
        """Every record up to this lsn is durable."""
        return self._durable

    def append(self, record: Record) -> int:
        """Check ``record`` against the live state, queue it, return its lsn.

        Raises RecordRejected (nothing changed) if it contradicts the state,
        JournalClosed or JournalFailed if the journal takes no appends.
        """
        if self._closed or not self._opened or self._failure is not None:
            self._refuse()
        return self._append(record)

    def _append(self, record: Record) -> int:
        flags, payload = self._codec.seal(record)
        size = len(payload) + OVERHEAD
        tail, offset = self._tail, self._tail_offset
        previous = None
        if offset + size > self._segment_size and offset > SEGMENT_HEADER_SIZE:
            previous, tail = tail, self._rotate()
            offset = SEGMENT_HEADER_SIZE
        slot = tail.slot(offset, size)
        try:
            self._ledger.apply(record, slot)
        except RecordRejected:
            tail.drop_slot(slot)
            if previous is not None:
                self._unrotate(previous)
            raise
        tail.total_bytes += size
        self._tail_offset = offset + size
        self._lsn += 1
        self._pending.add(tail.segment_id, record.kind, flags, payload, self._lsn)
        if not self._wake_pending:
            self._wake()
        return self._lsn

    def append_many(self, records: Sequence[Record]) -> int:
        """Append several records in order; return the lsn of the last.

        Records before a rejected one stay appended.
        """
        if self._closed or not self._opened or self._failure is not None:
            self._refuse()
        append = self._append
        for record in records:
            append(record)
        return self._lsn

    def on_durable(self, lsn: int, callback: DurableCallback) -> None:
        """Call ``callback(None)`` once ``lsn`` is durable (at once if it is).

        If the journal fails or closes first it gets the error instead.
        Callbacks run in lsn order, from the writer task.
        """
        if lsn <= self._durable:
            callback(None)
            return
        if lsn > self._lsn:
            raise ValueError(f"lsn {lsn} has not been appended (last {self._lsn})")
        if self._failure is not None:
            callback(self._failure)
            return
        callbacks = self._callbacks
        if not callbacks or callbacks[-1][0] <= lsn:
            callbacks.append((lsn, callback))
        else:
            at = bisect_right(callbacks, lsn, key=_lsn_of)
            callbacks.insert(at, (lsn, callback))

    async def commit(self, lsn: int | None = None) -> None:
        """Wait until ``lsn`` (default: everything appended) is durable.

        Raises JournalFailed if the journal failed first.
        """
        target = self._lsn if lsn is None else lsn
        if target <= self._durable:
            await anyio.lowlevel.checkpoint()
            return
        if self._failure is None and not self._running:
            raise JournalClosed("commit() needs 'async with journal' (or flush())")
        done = anyio.Event()
        self.on_durable(target, lambda error: done.set())
        await done.wait()
        if self._durable < target:
            raise self._failure or JournalClosed("the journal closed first")

    def flush(self) -> None:
        """Write and fsync everything appended so far, then do due maintenance.

        For use without an event loop (tools, tests, replaying a replica's
        stream); raises JournalError while the writer task is running.
        """
        if self._running:
            raise JournalError("the writer task is running: use await commit()")
        if self._failure is not None:
            raise self._failure
        try:
            plan = self._plan()
            batch = self._take()
            if batch:
                self._writer.write(batch, True)
                self._last_sync = time.monotonic()
                self._complete(batch.last_lsn)
            while plan is not None:
                self._hold_reader(plan)
                self._finish(plan, self._maintain(plan))
                # A durability callback may have appended: plan again only
                # when nothing unwritten could have made segments dead.
                plan = None if self._pending else self._plan()
        except Exception as exc:
            raise self._fail(exc) from exc

    def statistics(self) -> JournalStatistics:
        """Counters and sizes as of now."""
        segments = self._table.segments.values()
        return JournalStatistics(
            appended_lsn=self._lsn,
            durable_lsn=self._durable,
            pending_bytes=self._pending.size,
            messages=len(self._ledger.messages),
            queues=len(self._ledger.queues),
            segments=len(segments),
            total_bytes=sum(seg.total_bytes for seg in segments),
            live_bytes=sum(seg.live_bytes for seg in segments),
            batches=self._batches,
            fsyncs=self._writer.fsyncs,
            compactions=self._compactions,
            deleted_segments=self._deleted,
        )

    # reading bodies back

    def locate(self, message_id: int) -> int | None:
        """A handle to read back the body of live message ``message_id``
        (its record's slot), or None if the message is not live."""
        message = self._ledger.messages.get(message_id)
        return None if message is None else message.slot

    def read_body(self, handle: int) -> bytes:
        """The body stored in the record at ``handle`` (from ``locate``).

        Call it only for a durable record (``on_durable`` has run) of a
        message that is live, or that died in the same turn of the event
        loop. Checks the record's checksum; raises JournalError if the
        record is gone or damaged.
        """
        place = self._table.place(handle)
        if place is None:
            raise JournalError(f"journal {self.directory}: record {handle:#x} is gone")
        segment, offset, size = place
        readers = self._readers
        fd = readers.get(segment.segment_id)
        if fd is None:
            fd = readers[segment.segment_id] = self._layer.open_reader(segment.path)
        data = self._layer.pread(fd, size, offset)
        frame = read_frame(data, 0)
        # named in an error only: formatting the path costs a microsecond
        where = RecordPlace(segment.path)
        where.offset = offset
        if frame is None:
            raise JournalError(f"{where}: the record fails its checksum")
        record = self._codec.decode(frame, where)
        if isinstance(record, MoveRecord) and record.message is not None:
            record = record.message
        if not isinstance(record, MessageRecord):
            raise JournalError(f"{where}: the record holds no message")
        return record.body

    def _close_reader(self, segment_id: int) -> None:
        fd = self._readers.pop(segment_id, None)
        if fd is not None:
            self._layer.close(fd)

    # the writer task

    async def _run_writer(self) -> None:
        try:
            while not self._closed and self._failure is None:
                if not self._pending and not self._maintenance_due():
                    await self._idle()
                    continue
                await self._cycle()
        except Exception as exc:
            self._fail(exc)
        finally:
            self._running = False
            self._stopped.set()

    async def _idle(self) -> None:
        self._wakeup = anyio.Event()
        self._wake_pending = False
        if self.options.fsync == "batch" or not self._writer.dirty:
            await self._wakeup.wait()
            return
        interval = self.options.fsync_interval_ms / 1000
        with anyio.move_on_after(self._last_sync + interval - time.monotonic()):
            await self._wakeup.wait()
        if not self._pending and self._sync_due():
            await anyio.to_thread.run_sync(self._writer.sync)
            self._last_sync = time.monotonic()

    async def _cycle(self) -> None:
        # Shielded: a batch taken must be written and completed, and a plan
        # carried out, even if the writer is cancelled meanwhile.
        with anyio.CancelScope(shield=True):
            plan = self._plan()
            batch = self._take()
            if batch:
                sync = self._sync_due()
                await anyio.to_thread.run_sync(self._writer.write, batch, sync)
                if sync:
                    self._last_sync = time.monotonic()
                self._complete(batch.last_lsn)
            if plan is not None:
                self._hold_reader(plan)
                offsets = await anyio.to_thread.run_sync(self._maintain, plan)
                self._finish(plan, offsets)

    def _wake(self) -> None:
        self._wake_pending = True
        self._wakeup.set()

    def _sync_due(self) -> bool:
        if self.options.fsync == "batch":
            return True
        interval = self.options.fsync_interval_ms / 1000
        return time.monotonic() - self._last_sync >= interval

    def _take(self) -> Batch:
        batch, self._pending = self._pending, Batch()
        return batch

    def _complete(self, lsn: int) -> None:
        self._durable = lsn
        self._batches += 1
        callbacks = self._callbacks
        while callbacks and callbacks[0][0] <= lsn:
            callback = callbacks.popleft()[1]
            try:
                callback(None)
            except Exception:
                log.exception("journal %s: durability callback failed", self.directory)

    def _fail(self, exc: BaseException) -> JournalError:
        if self._failure is None:
            if isinstance(exc, JournalError):
                self._failure = exc
            else:
                failure = JournalFailed(f"journal {self.directory}: {exc}")
                failure.__cause__ = exc
                self._failure = failure
            log.error(
                "journal %s: writing failed, no more appends: %s",
                self.directory,
                exc,
                exc_info=exc,
            )
        self._fail_callbacks(self._failure)
        return self._failure

    def _fail_callbacks(self, error: JournalError) -> None:
        callbacks, self._callbacks = self._callbacks, deque()
        for _, callback in callbacks:
            try:
                callback(error)
            except Exception:
                log.exception("journal %s: durability callback failed", self.directory)

    def _refuse(self) -> None:
        if self._failure is not None:
            raise self._failure
        if not self._opened:
            raise JournalClosed("call recover() before appending")
        raise JournalClosed(f"journal {self.directory} is closed")

    def _write_final(self, batch: Batch) -> None:
        self._writer.write(batch, True)
        self._writer.close()

    def _shut(self) -> None:
        if self._failure is not None:
            try:
                self._writer.abandon()
            except OSError:
                log.exception("journal %s: closing the segment failed", self.directory)
        self._fail_callbacks(JournalClosed(f"journal {self.directory} closed"))
        for segment_id in list(self._readers):
            self._close_reader(segment_id)
        self._unlock()

    def _unlock(self) -> None:
        if self._lock_fd is not None:
            self._layer.unlock(self._lock_fd)
            self._lock_fd = None

    # segments

    def _rotate(self) -> Segment:
        self._table.seal(self._tail)
        self._tail = self._table.add(self._tail.segment_id + 1)
        return self._tail

    def _unrotate(self, previous: Segment) -> None:
        del self._table.segments[self._tail.segment_id]
        previous.sealed = False
        self._table.empty.discard(previous)
        self._table.sparse.discard(previous)
        self._tail = previous

    def _maintenance_due(self) -> bool:
        return bool(self._table.empty or self._table.sparse)

    def _plan(self) -> _Maintenance | None:
        table = self._table
        if not (table.empty or table.sparse):
            return None
        delete = sorted(table.empty, key=lambda seg: seg.segment_id)
        table.empty.clear()
        return _Maintenance(delete, plan_compaction(table))

    def _hold_reader(self, plan: _Maintenance) -> None:
        """Before a compaction's thread starts, on the loop thread: open a
        reader on the old file, so that reads go on there at the old
        offsets until _finish takes the new ones. Not at planning time: the
        segment's file may not be written yet then (its records were
        appended, and most of them made dead, within one batch)."""
        compaction = plan.compaction
        if compaction is None:
            return
        segment_id = compaction.segment.segment_id
        if segment_id not in self._readers:
            self._readers[segment_id] = self._layer.open_reader(compaction.segment.path)

    def _maintain(self, plan: _Maintenance) -> list[int] | None:
        # Whatever made these segments dead must be on disk before they go.
        self._writer.sync()
        if plan.delete:
            self._writer.delete([seg.segment_id for seg in plan.delete])
        compaction = plan.compaction
        if compaction is None:
            return None
        segment = compaction.segment
        self._writer.release(segment.segment_id)
        return rewrite_segment(
            self._layer, segment.segment_id, segment.path, compaction.ranges
        )

    def _finish(self, plan: _Maintenance, offsets: list[int] | None) -> None:
        for segment in plan.delete:
            self._close_reader(segment.segment_id)
            self._table.remove(segment)
            self._deleted += 1
            log.debug("journal %s: deleted segment %s", self.directory, segment.path)
        compaction = plan.compaction
        if compaction is not None and offsets is not None:
            self._table.rewritten(compaction.segment, compaction.kept, offsets)
            self._close_reader(compaction.segment.segment_id)
            self._compactions += 1
            log.debug("journal %s: compacted %s", self.directory, compaction.segment)
