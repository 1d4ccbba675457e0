"""The journal in memory: same interface and rules, nothing written.

For transient use (a broker run without a data directory, tests) and as the
reference the contract suite holds the disk journal to. Every appended
record is durable at once. The live state sits in a MemoryStore, so a new
MemoryJournal over the same store "recovers" what an earlier one appended,
the way a DiskJournal over the same directory does.
"""

from __future__ import annotations

from collections.abc import Sequence
from types import TracebackType

import anyio

from .errors import JournalClosed, JournalError
from .interface import DurableCallback, JournalStatistics
from .ledger import Ledger
from .records import Record, check_fields
from .state import RecoveredState, Report


class MemoryStore:
    """What a MemoryJournal keeps between one journal object and the next."""

    def __init__(self) -> None:
        self.ledger = Ledger()
        self.in_use = False


class MemoryJournal:
    """A journal whose records live in a MemoryStore."""

    def __init__(self, store: MemoryStore | None = None) -> None:
        self.store = store or MemoryStore()
        self._lsn = 0
        self._opened = False
        self._closed = False

    def recover(self, keep_bodies: int | None = None) -> RecoveredState:
        """Return the store's live state; required once before appending.

        Bodies are in memory already: ``keep_bodies`` changes nothing.
        """
        if self._opened or self._closed:
            raise JournalError("recover() runs once, first")
        if self.store.in_use:
            raise JournalError("another MemoryJournal is using this store")
        self.store.in_use = True
        self._opened = True
        ledger = self.store.ledger
        report = Report(None, messages=len(ledger.messages), queues=len(ledger.queues))
        return RecoveredState(ledger.snapshot(), ledger.max_message_id + 1, report)

    async def __aenter__(self) -> MemoryJournal:
        if not self._opened or self._closed:
            raise JournalClosed("call recover() before 'async with journal'")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        await self.aclose()
        return None

    async def aclose(self) -> None:
        """Stop taking appends and give the store back."""
        self.close()

    def close(self) -> None:
        """Stop taking appends and give the store back."""
        if self._opened and not self._closed:
            self.store.in_use = False
        self._closed = True

    @property
    def appended_lsn(self) -> int:
        """The lsn of the newest appended record (0 before the first)."""
        return self._lsn

    @property
    def durable_lsn(self) -> int:
        """Every appended record is durable at once."""
        return self._lsn

    def append(self, record: Record) -> int:
        """Check and apply ``record``; return its lsn (durable already)."""
        if self._closed or not self._opened:
            raise JournalClosed("the journal is not open")
        check_fields(record)
        self.store.ledger.apply(record)
        self._lsn += 1
        return self._lsn

    def append_many(self, records: Sequence[Record]) -> int:
        """Append several records in order; return the lsn of the last."""
        for record in records:
            self.append(record)
        return self._lsn

    def on_durable(self, lsn: int, callback: DurableCallback) -> None:
        """Call ``callback(None)`` now: every appended record is durable."""
        if lsn > self._lsn:
            raise ValueError(f"lsn {lsn} has not been appended (last {self._lsn})")
        callback(None)

    async def commit(self, lsn: int | None = None) -> None:
        """Return at once (after a checkpoint): everything is durable."""
        if lsn is not None and lsn > self._lsn:
            raise ValueError(f"lsn {lsn} has not been appended (last {self._lsn})")
        await anyio.lowlevel.checkpoint()

    def flush(self) -> None:
        """Nothing to write."""

    def locate(self, message_id: int) -> int | None:
        """A handle to read back the body of live message ``message_id``
        (its id here), or None if the message is not live."""
        return message_id if message_id in self.store.ledger.messages else None

    def read_body(self, handle: int) -> bytes:
        """The body of live message ``handle``; JournalError once it is gone."""
        message = self.store.ledger.messages.get(handle)
        if message is None or message.record is None:
            raise JournalError(f"message {handle} is not in the journal")
        return message.record.body

    def statistics(self) -> JournalStatistics:
        """Counters as of now."""
        ledger = self.store.ledger
        return JournalStatistics(
            appended_lsn=self._lsn,
            durable_lsn=self._lsn,
            pending_bytes=0,
            messages=len(ledger.messages),
            queues=len(ledger.queues),
        )
