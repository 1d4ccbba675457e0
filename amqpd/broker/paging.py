"""A broker-wide budget for message bodies held in memory.

Every message routed to a queue is counted while any queue holds it. Once
the bodies held in memory would pass the budget, new arrivals are written to
a scratch file instead and only their index stays in memory (the queue's
entry, the message's routing data and content header); a body is read back
when it is delivered, and not kept. Messages at the tail of a queue are the
last to be delivered, so paging new arrivals keeps what is about to go out
in memory.

Scratch files live in DATA/scratch, in segments deleted once no message in
them is live; the directory is emptied at every start, since messages that
were only transient never survive a restart.

Known shortcoming: persistent messages are paged to the scratch file too,
although the journal already holds their bodies; reading them back from the
journal needs a read-by-id API the journal does not have yet.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from amqpd.broker.message import CountedMessage

if TYPE_CHECKING:
    from amqpd.broker.message import Message

log = logging.getLogger("amqpd.paging")

SEGMENT_SIZE = 64 * 1024 * 1024


class ScratchSegment:
    __slots__ = ("fd", "live", "number", "path", "size")

    def __init__(self, directory: Path, number: int) -> None:
        self.number = number
        self.path = directory / f"{number:08d}.scratch"
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        self.size = 0
        self.live = 0

    def close(self) -> None:
        os.close(self.fd)
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass


class Pager:
    """Counts message bodies in memory and pages new ones out past the budget."""

    def __init__(self, directory: Path, budget: int) -> None:
        self.directory = directory
        self.budget = budget
        self.in_memory = 0  # bytes of bodies held in memory
        self.paged = 0  # bytes of bodies in scratch files
        self.paged_messages = 0
        shutil.rmtree(directory, ignore_errors=True)
        directory.mkdir(parents=True, exist_ok=True)
        self._segments: dict[int, ScratchSegment] = {}
        self._current = self._new_segment(1)

    def _new_segment(self, number: int) -> ScratchSegment:
        segment = ScratchSegment(self.directory, number)
        self._segments[number] = segment
        return segment

    def admit(self, message: Message) -> None:
        """A message entered a queue: count it, or page its body out."""
        if message.counted:
            return
        message.counted = True
        message.pager = self
        message.__class__ = CountedMessage
        body = message.body
        assert body is not None
        size = len(body)
        if self.in_memory + size <= self.budget or not size:
            self.in_memory += size
            return
        segment = self._current
        if segment.size + size > SEGMENT_SIZE and segment.size:
            segment = self._current = self._new_segment(segment.number + 1)
        offset = segment.size
        os.pwrite(segment.fd, body, offset)
        segment.size += size
        segment.live += 1
        message.page = (segment.number, offset)
        message.body = None
        self.paged += size
        self.paged_messages += 1

    def read(self, message: Message) -> bytes:
        """The body of a paged message, read back for one delivery."""
        assert message.page is not None
        number, offset = message.page
        return os.pread(self._segments[number].fd, message.size, offset)

    def share(self, copy: Message, original: Message) -> None:
        """A copy (dead-lettering) refers to the same paged body."""
        if original.page is None:
            return
        copy.page = original.page
        copy.counted = True
        copy.pager = self
        copy.__class__ = CountedMessage
        self._segments[original.page[0]].live += 1
        self.paged += copy.size
        self.paged_messages += 1

    def release(self, message: Message) -> None:
        """The last queue let go of the message."""
        page = message.page
        if page is None:
            self.in_memory -= message.size
            return
        self.paged -= message.size
        self.paged_messages -= 1
        segment = self._segments.get(page[0])
        if segment is None:
            return
        segment.live -= 1
        if not segment.live and segment is not self._current:
            segment.close()
            del self._segments[page[0]]

    def close(self) -> None:
        for segment in self._segments.values():
            segment.close()
        self._segments.clear()
        shutil.rmtree(self.directory, ignore_errors=True)
