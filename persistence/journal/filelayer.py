"""Every system call the journal makes on its files, behind one small class.

The journal never touches files except through a FileLayer, so a test can
subclass it to record the order of writes and fsyncs, or to make one fail.
All methods run on the writer's worker thread or during recovery, except
``open_reader`` and ``pread``, which read message bodies back for the
broker on the event loop thread.
"""

from __future__ import annotations

import errno
import fcntl
import os
from pathlib import Path

from .errors import JournalLocked

LOCK_NAME = "journal.lock"

_sync_data = getattr(os, "fdatasync", os.fsync)


class FileLayer:
    """Plain POSIX file operations."""

    def create(self, path: Path) -> int:
        """Create ``path`` (it must not exist) for writing; return the fd."""
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
        return os.open(path, flags, 0o644)

    def write(self, fd: int, data: bytes | bytearray | memoryview) -> None:
        """Write all of ``data`` at the current position."""
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]

    def fsync(self, fd: int) -> None:
        """Make everything written to ``fd`` durable (fdatasync where it exists)."""
        _sync_data(fd)

    def close(self, fd: int) -> None:
        """Close ``fd``."""
        os.close(fd)

    def fsync_directory(self, directory: Path) -> None:
        """Make creations, renames and deletions in ``directory`` durable."""
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def read(self, path: Path) -> bytes:
        """Return the whole content of ``path``."""
        with open(path, "rb") as file:
            return file.read()

    def open_reader(self, path: Path) -> int:
        """Open ``path`` for reading record by record; return the fd."""
        return os.open(path, os.O_RDONLY | os.O_CLOEXEC)

    def pread(self, fd: int, size: int, offset: int) -> bytes:
        """Read ``size`` bytes at ``offset`` of ``fd`` (fewer at the end)."""
        return os.pread(fd, size, offset)

    def replace(self, source: Path, target: Path) -> None:
        """Rename ``source`` over ``target`` atomically."""
        os.replace(source, target)

    def remove(self, path: Path) -> None:
        """Delete ``path``."""
        os.unlink(path)

    def truncate(self, path: Path, size: int) -> None:
        """Cut ``path`` to ``size`` bytes and make that durable."""
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.ftruncate(fd, size)
            os.fsync(fd)
        finally:
            os.close(fd)

    def lock(self, directory: Path) -> int:
        """Take the directory's lock file; raise JournalLocked if it is taken.

        The lock is an flock on ``journal.lock``: it goes away with the
        process, so a crashed broker never leaves a stale lock behind.
        """
        fd = os.open(
            directory / LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644
        )
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise JournalLocked(
                    f"{directory} is in use by another journal"
                ) from None
            raise
        return fd

    def unlock(self, fd: int) -> None:
        """Give the lock back."""
        os.close(fd)
