"""The message journal: durable queue state in append-only segment files.

A durable queue records each change as a pure-data record (records.py):
MESSAGE once per published message, ENQUEUE per queue it reaches, ACK,
DELIVERY_COUNT, MOVE (dead-lettering, atomic) and PURGE. A DiskJournal
appends them to segment files with a checksum each and group-committed
fsync; a MemoryJournal keeps the same state in memory. Both follow the
Journal interface (interface.py)::

    journal = DiskJournal(data_dir / "journal")
    state = journal.recover()        # queues -> ordered QueuedMessage tuples
    async with journal:
        lsn = journal.append_many([MessageRecord(...), EnqueueRecord(...)])
        journal.on_durable(lsn, send_confirm)

``check(directory)`` reports damage without changing anything; ``cli.main``
is ``amqpd journal check``. The on-disk layout is in format.py.
"""

from .disk import DiskJournal
from .errors import (
    FormatError,
    JournalClosed,
    JournalError,
    JournalFailed,
    JournalKeyError,
    JournalLocked,
    RecordRejected,
)
from .filelayer import FileLayer
from .interface import (
    DurableCallback,
    FsyncPolicy,
    Journal,
    JournalOptions,
    JournalStatistics,
)
from .keyring import Keyring
from .ledger import Ledger
from .memory import MemoryJournal, MemoryStore
from .records import (
    AckRecord,
    DeliveryCountRecord,
    EnqueueRecord,
    MessageRecord,
    MoveRecord,
    Placement,
    PurgeRecord,
    Record,
    RecordKind,
    decode_payload,
    encode_payload,
)
from .recovery import check
from .state import Damage, DamageKind, QueuedMessage, RecoveredState, Report

__all__ = [
    "AckRecord",
    "Damage",
    "DamageKind",
    "DeliveryCountRecord",
    "DiskJournal",
    "DurableCallback",
    "EnqueueRecord",
    "FileLayer",
    "FormatError",
    "FsyncPolicy",
    "Journal",
    "JournalClosed",
    "JournalError",
    "JournalFailed",
    "JournalKeyError",
    "JournalLocked",
    "JournalOptions",
    "JournalStatistics",
    "Keyring",
    "Ledger",
    "MemoryJournal",
    "MemoryStore",
    "MessageRecord",
    "MoveRecord",
    "Placement",
    "PurgeRecord",
    "QueuedMessage",
    "Record",
    "RecordKind",
    "RecordRejected",
    "RecoveredState",
    "Report",
    "check",
    "decode_payload",
    "encode_payload",
]
