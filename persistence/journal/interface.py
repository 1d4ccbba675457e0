"""The journal interface every implementation follows, and its settings.

Usage, the same for DiskJournal and MemoryJournal::

    journal = DiskJournal(path)                 # or MemoryJournal()
    state = journal.recover()                   # once, before anything else
    async with journal:                         # starts the writer
        lsn = journal.append_many([message, *enqueues])
        journal.on_durable(lsn, confirm)        # callback, no task per message
        await journal.commit(lsn)               # or await it

``append`` and ``append_many`` return a log sequence number (lsn): a
position that increases by one per record. A record is durable when the
journal's ``durable_lsn`` reaches its lsn; everything before it is durable
too. Methods are for the event loop thread; none is thread-safe.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Literal, Protocol

from .codec import (
    DEFAULT_COMPRESS_LEVEL,
    DEFAULT_COMPRESS_THRESHOLD,
    DEFAULT_COMPRESSION,
    DEFAULT_MAX_RECORD_SIZE,
    Compression,
)
from .errors import JournalError
from .records import Record
from .state import RecoveredState

DurableCallback = Callable[[JournalError | None], None]
"""Called once with None when the record is durable, or with the error that
means it never will be (the journal failed or closed first)."""

FsyncPolicy = Literal["batch", "interval"]


@dataclass(frozen=True, slots=True)
class JournalOptions:
    """Settings of a disk journal.

    fsync:
        "batch" (default) fsyncs every batch before its records count as
        durable, so a confirmed record survives power loss.
        "interval" counts records as durable once written to the operating
        system and fsyncs every ``fsync_interval_ms``: a crash of the machine
        (not just the broker) can lose up to the last interval of confirmed
        records.
    segment_size:
        A segment is closed and a new one started once the next record would
        take it past this size. A larger record gets a segment of its own.
    compact_ratio:
        A closed segment whose live bytes fall under this share of its size
        is compacted.
    compression, compress_threshold, compress_level:
        Payloads longer than the threshold are compressed (None: never) with
        zstd, or zlib if asked or if the ``zstandard`` package is missing,
        at the given level. Records of every codec are read whatever this
        says.
    max_record_size:
        The largest payload recovery will decompress.
    """

    fsync: FsyncPolicy = "batch"
    fsync_interval_ms: int = 200
    segment_size: int = 16 * 1024 * 1024
    compact_ratio: float = 0.5
    compression: Compression = DEFAULT_COMPRESSION
    compress_threshold: int | None = DEFAULT_COMPRESS_THRESHOLD
    compress_level: int = DEFAULT_COMPRESS_LEVEL
    max_record_size: int = DEFAULT_MAX_RECORD_SIZE

    def __post_init__(self) -> None:
        if self.fsync not in ("batch", "interval"):
            raise ValueError(f"fsync policy must be batch or interval: {self.fsync!r}")
        if self.fsync_interval_ms <= 0:
            raise ValueError("fsync_interval_ms must be positive")
        if self.segment_size < 4096:
            raise ValueError("segment_size must be at least 4096 bytes")
        if self.compression not in ("zstd", "zlib"):
            raise ValueError(f"compression must be zstd or zlib: {self.compression!r}")
        if not 0.0 <= self.compact_ratio < 1.0:
            raise ValueError("compact_ratio must be in [0, 1)")


@dataclass(frozen=True, slots=True)
class JournalStatistics:
    """A snapshot for the management API and metrics."""

    appended_lsn: int
    durable_lsn: int
    pending_bytes: int
    messages: int
    queues: int
    segments: int = 0
    total_bytes: int = 0
    live_bytes: int = 0
    batches: int = 0
    fsyncs: int = 0
    compactions: int = 0
    deleted_segments: int = 0


class Journal(Protocol):
    """What the broker's durable queues need from a journal."""

    @property
    def appended_lsn(self) -> int:
        """The lsn of the newest appended record (0 before the first)."""
        ...

    @property
    def durable_lsn(self) -> int:
        """Every record up to this lsn is durable."""
        ...

    async def __aenter__(self) -> Journal:
        """Start the writer (after ``recover``)."""
        ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        """``aclose``, then stop the writer."""
        ...

    def recover(self, keep_bodies: int | None = None) -> RecoveredState:
        """Read what is stored and return it; required once before appending.

        With ``keep_bodies``, an implementation may leave bodies past that
        many bytes out of the state (``RecoveredState.unloaded``).
        """
        ...

    def append(self, record: Record) -> int:
        """Check ``record`` against the live state, queue it, return its lsn.

        Raises RecordRejected (nothing changed) if it contradicts the state,
        JournalClosed or JournalFailed if the journal takes no appends.
        """
        ...

    def append_many(self, records: Sequence[Record]) -> int:
        """Append several records in order; return the lsn of the last.

        Records before a rejected one stay appended.
        """
        ...

    def on_durable(self, lsn: int, callback: DurableCallback) -> None:
        """Call ``callback`` once the record at ``lsn`` is durable.

        Runs at once if it already is; otherwise from the writer, in lsn
        order. Costs one deque entry: no task, no future.
        """
        ...

    async def commit(self, lsn: int | None = None) -> None:
        """Wait until ``lsn`` (default: everything appended) is durable."""
        ...

    def flush(self) -> None:
        """Without an event loop: write and sync everything appended so far."""
        ...

    def locate(self, message_id: int) -> int | None:
        """A handle for ``read_body``, or None if the message is not live."""
        ...

    def read_body(self, handle: int) -> bytes:
        """The body of the message at ``handle``, read back from the journal.

        Only for a message whose record is durable and that is still live
        (or died in the same turn of the event loop, as a message handed to
        a no-ack consumer does just before it is sent). Raises JournalError
        if the record is gone or fails its checksum.
        """
        ...

    def statistics(self) -> JournalStatistics:
        """Counters and sizes as of now."""
        ...

    async def aclose(self) -> None:
        """Make everything appended durable, then stop."""
        ...

    def close(self) -> None:
        """``aclose`` without an event loop (not while the writer runs)."""
        ...
