"""A broker-wide budget for message bodies held in memory.

Every message routed to a queue is counted while any queue holds it. Once
the bodies held in memory would pass the budget, new arrivals give up their
body and only their index stays in memory (the queue's entry, the message's
routing data and content header); a body is read back when it is delivered,
and not kept. Messages at the tail of a queue are the last to be delivered,
so paging new arrivals keeps what is about to go out in memory.

Where a body goes depends on where it already is:

- A persistent message that only durable queues hold is in the journal
  already. Its body stays in memory until the fsync that writes its record
  (counted meanwhile as ``awaiting_fsync``: at most what one batch holds),
  then is dropped and read back from the journal (``Journal.read_body``).
- Every other message is written to a scratch file. Scratch files live in
  DATA/scratch, in segments deleted once no message in them is live; the
  directory is emptied at every start, since messages that were only
  transient never survive a restart. A segment whose live bodies fall
  under a quarter of it is compacted: its live bodies are copied to the
  newest segment and it is deleted, so a few long-lived messages never pin
  whole files while traffic flows past them. Compaction runs on the paging
  path (the next body paged out), one segment at a time.

A copy of a message (dead-lettering) shares a body in the scratch file;
one in the journal is read back into the copy, since the original's record
goes when the original leaves its queue.
"""

from __future__ import annotations

import logging
import os
import shutil
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from amqpd.broker.message import JOURNAL_PAGE, BodyLost, CountedMessage, Page
from amqpd.persistence.journal.errors import JournalError

if TYPE_CHECKING:
    from amqpd.broker.message import Message
    from amqpd.persistence.journal import Journal

log = logging.getLogger("amqpd.paging")

SEGMENT_SIZE = 16 * 1024 * 1024
COMPACT_RATIO = 0.25  # compact a segment whose live bytes fall under this


class ScratchSegment:
    """One scratch file and the pages of the live bodies in it."""

    __slots__ = ("fd", "live_bytes", "number", "pages", "path", "size")

    def __init__(self, directory: Path, number: int) -> None:
        self.number = number
        self.path = directory / f"{number:08d}.scratch"
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        self.size = 0
        self.live_bytes = 0
        self.pages: set[Page] = set()

    def close(self) -> None:
        os.close(self.fd)
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass


class Pager:
    """Counts message bodies in memory and pages new ones out past the budget."""

    def __init__(
        self, directory: Path, budget: int, segment_size: int = SEGMENT_SIZE
    ) -> None:
        self.directory = directory
        self.budget = budget
        self.segment_size = segment_size
        self.in_memory = 0  # bytes of bodies held in memory
        self.paged = 0  # bytes of bodies in scratch files
        self.paged_messages = 0
        self.journal_paged = 0  # bytes of bodies read back from the journal
        self.journal_paged_messages = 0
        # bytes of bodies past the budget waiting for their journal fsync
        self.awaiting_fsync = 0
        # set while the broker journals persistent messages
        self.journal: Journal | None = None
        self.compactions = 0
        shutil.rmtree(directory, ignore_errors=True)
        directory.mkdir(parents=True, exist_ok=True)
        self._segments: dict[int, ScratchSegment] = {}
        self._sparse: set[ScratchSegment] = set()
        self._current = self._new_segment(1)

    def _new_segment(self, number: int) -> ScratchSegment:
        segment = ScratchSegment(self.directory, number)
        self._segments[number] = segment
        return segment

    @property
    def scratch_bytes(self) -> int:
        """Bytes in scratch files, live or not."""
        return sum(segment.size for segment in self._segments.values())

    def admit(self, message: Message, journaled_at: int | None = None) -> None:
        """A message entered a queue: count it, or page its body out.

        ``journaled_at`` is the lsn of the message's journal records when
        every queue that holds it is journaled; None otherwise.
        """
        if message.counted:
            return
        self._count(message)
        body = message.body
        assert body is not None
        size = len(body)
        if self.in_memory + size <= self.budget or not size:
            self.in_memory += size
            return
        journal = self.journal
        if journaled_at is not None and journal is not None:
            self.awaiting_fsync += size
            journal.on_durable(journaled_at, partial(self._journaled, message))
            return
        if self._sparse:
            self._compact()
        page = self._write(body)
        message.page = page
        message.body = None
        self.paged += size
        self.paged_messages += 1

    def adopt_journaled(self, message: Message, handle: int) -> None:
        """Count a recovered message whose body is only in the journal."""
        self._count(message)
        self._to_journal(message, handle)

    def _count(self, message: Message) -> None:
        """From now on the pager hears when the last queue lets go."""
        message.counted = True
        message.pager = self
        message.__class__ = CountedMessage

    def _to_journal(self, message: Message, handle: int) -> None:
        message.page = Page(JOURNAL_PAGE, handle, message.size)
        message.body = None
        self.journal_paged += message.size
        self.journal_paged_messages += 1

    def _write(self, body: bytes) -> Page:
        """Append ``body`` to the newest scratch segment; its new page."""
        page = Page(0, 0, len(body))
        self._place(page, body)
        return page

    def _place(self, page: Page, body: bytes) -> None:
        """Write ``body`` at the end of the newest segment, as ``page``."""
        segment = self._current
        size = len(body)
        if segment.size + size > self.segment_size and segment.size:
            segment = self._rotate()
        page.segment, page.where = segment.number, segment.size
        os.pwrite(segment.fd, body, segment.size)
        segment.size += size
        segment.pages.add(page)
        segment.live_bytes += size

    def _rotate(self) -> ScratchSegment:
        full = self._current
        self._current = self._new_segment(full.number + 1)
        self._review(full)
        return self._current

    def _review(self, segment: ScratchSegment) -> None:
        """Delete a full segment with nothing live; note a sparse one."""
        if segment is self._current:
            return
        if not segment.pages:
            self._sparse.discard(segment)
            segment.close()
            del self._segments[segment.number]
        elif segment.live_bytes < segment.size * COMPACT_RATIO:
            self._sparse.add(segment)

    def _compact(self) -> None:
        """Copy the live bodies of the oldest sparse segment to the newest
        one and delete it; every message sharing a page sees the move."""
        segment = min(self._sparse, key=lambda seg: seg.number)
        self._sparse.discard(segment)
        for page in sorted(segment.pages, key=lambda page: page.where):
            self._place(page, os.pread(segment.fd, page.size, page.where))
        segment.pages.clear()
        segment.close()
        del self._segments[segment.number]
        self.compactions += 1

    def _journaled(self, message: Message, error: JournalError | None) -> None:
        """The journal wrote the message's records: drop the body."""
        size = message.size
        self.awaiting_fsync -= size
        journal = self.journal
        handle = None
        if error is None and journal is not None:
            handle = journal.locate(message.journal_id)
        if handle is None:
            # the journal failed, or every queue let go of the message
            # before its fsync: keep the body for the little time left
            self.in_memory += size
            return
        self._to_journal(message, handle)

    def read(self, message: Message) -> bytes:
        """The body of a paged message, read back for one delivery; BodyLost
        if it cannot be (damaged on disk)."""
        page = message.page
        assert page is not None
        try:
            if page.segment == JOURNAL_PAGE:
                assert self.journal is not None
                return self.journal.read_body(page.where)
            body = os.pread(self._segments[page.segment].fd, page.size, page.where)
        except (JournalError, OSError, KeyError) as exc:
            raise BodyLost(str(exc)) from exc
        if len(body) != page.size:
            raise BodyLost(f"scratch segment {page.segment} is cut short")
        return body

    def share(self, copy: Message, original: Message) -> None:
        """``copy`` refers to the same paged body as ``original``."""
        page = original.page
        if page is None:
            return
        copy.page = page
        self._count(copy)
        page.refs += 1
        if page.segment == JOURNAL_PAGE:
            self.journal_paged += copy.size
            self.journal_paged_messages += 1
            return
        self.paged += copy.size
        self.paged_messages += 1

    def release(self, message: Message) -> None:
        """The last queue let go of the message."""
        page = message.page
        if page is None:
            self.in_memory -= message.size
            return
        page.refs -= 1
        if page.segment == JOURNAL_PAGE:
            self.journal_paged -= message.size
            self.journal_paged_messages -= 1
            return
        self.paged -= message.size
        self.paged_messages -= 1
        if page.refs:
            return
        segment = self._segments.get(page.segment)
        if segment is None:
            return
        segment.pages.discard(page)
        segment.live_bytes -= page.size
        self._review(segment)

    def close(self) -> None:
        for segment in self._segments.values():
            segment.close()
        self._segments.clear()
        self._sparse.clear()
        shutil.rmtree(self.directory, ignore_errors=True)
