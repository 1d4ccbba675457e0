"""The file side of group commit: one batch, one write per segment, one fsync.

Appends only fill a Batch in the event loop; a SegmentWriter then puts the
whole batch into the segment files on a worker thread. Everything a
SegmentWriter does goes through its FileLayer.
"""

from __future__ import annotations

from pathlib import Path

from .filelayer import FileLayer
from .format import OVERHEAD, frame_parts, segment_header
from .segment import segment_name


class Batch:
    """Record bytes appended since the last flush, grouped by segment.

    Each segment's records are kept as a list of parts (header, payload,
    trailing length) that the writer joins on its thread, so an append
    copies no payload. ``last_lsn`` is the log position of the newest
    record in the batch: once the batch is durable, so is every position up
    to it.
    """

    __slots__ = ("_parts", "_segment_id", "chunks", "last_lsn", "size")

    def __init__(self) -> None:
        self.chunks: list[tuple[int, list[bytes]]] = []
        self.last_lsn = 0
        self.size = 0
        self._segment_id = -1
        self._parts: list[bytes] = []

    def add(
        self, segment_id: int, kind: int, flags: int, payload: bytes, lsn: int
    ) -> None:
        """Append a record bound for ``segment_id`` as position ``lsn``."""
        if segment_id != self._segment_id:
            self._segment_id, self._parts = segment_id, []
            self.chunks.append((segment_id, self._parts))
        self._parts += frame_parts(kind, flags, payload)
        self.size += len(payload) + OVERHEAD
        self.last_lsn = lsn

    def __bool__(self) -> bool:
        return bool(self.chunks)


class SegmentWriter:
    """Writes batches into segment files; not thread-safe, one caller at a time.

    A segment file is created (with its header) when the first batch for it
    arrives, and synced and closed when a batch moves on to the next one. A
    created file's directory entry is made durable by the next ``sync``.
    """

    def __init__(self, directory: Path, layer: FileLayer) -> None:
        self._directory = directory
        self._layer = layer
        self._fd: int | None = None
        self._segment_id: int | None = None
        self._dirty = False
        self._directory_dirty = False
        self.fsyncs = 0

    @property
    def dirty(self) -> bool:
        """True when something written is not yet covered by an fsync."""
        return self._dirty or self._directory_dirty

    def write(self, batch: Batch, sync: bool) -> None:
        """Write ``batch``; with ``sync``, make it durable before returning."""
        for segment_id, parts in batch.chunks:
            if segment_id != self._segment_id:
                self._open(segment_id)
            assert self._fd is not None
            self._layer.write(self._fd, b"".join(parts))
            self._dirty = True
        if sync:
            self.sync()

    def sync(self) -> None:
        """fsync the open segment and, after a creation, the directory."""
        if self._dirty and self._fd is not None:
            self._layer.fsync(self._fd)
            self.fsyncs += 1
        self._dirty = False
        if self._directory_dirty:
            self._layer.fsync_directory(self._directory)
            self._directory_dirty = False

    def release(self, segment_id: int) -> None:
        """Sync and close ``segment_id`` if it is the open one."""
        if self._segment_id == segment_id:
            self._close_current()

    def delete(self, segment_ids: list[int]) -> None:
        """Delete whole segments, then make the deletions durable."""
        for segment_id in segment_ids:
            self.release(segment_id)
        for segment_id in segment_ids:
            self._layer.remove(self._directory / segment_name(segment_id))
        self._layer.fsync_directory(self._directory)
        self._directory_dirty = False

    def close(self) -> None:
        """Sync and close the open segment."""
        self.sync()
        self._close_current()

    def abandon(self) -> None:
        """Close the open segment without syncing (after a failed write)."""
        fd, self._fd, self._segment_id = self._fd, None, None
        if fd is not None:
            self._layer.close(fd)

    def _open(self, segment_id: int) -> None:
        self._close_current()
        path = self._directory / segment_name(segment_id)
        fd = self._layer.create(path)
        self._fd, self._segment_id = fd, segment_id
        self._layer.write(fd, segment_header(segment_id))
        self._dirty = True
        self._directory_dirty = True

    def _close_current(self) -> None:
        fd = self._fd
        if fd is None:
            return
        if self._dirty:
            self._layer.fsync(fd)
            self.fsyncs += 1
            self._dirty = False
        self._fd = self._segment_id = None
        self._layer.close(fd)
