"""What recovery hands back: live messages per queue and a damage report."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from .records import MessageRecord


class QueuedMessage(NamedTuple):
    """A message as one queue holds it after recovery.

    ``message`` is shared between the queues that hold the same message.
    ``expires_at_ms`` is this queue's own deadline for it (0 for none);
    ``deadline_ms`` combines it with the message's deadline. A named tuple
    (immutable, and cheap to build a million of at recovery).
    """

    message: MessageRecord
    sequence: int
    delivery_count: int = 0
    expires_at_ms: int = 0

    @property
    def deadline_ms(self) -> int:
        """The earlier of the queue's and the message's deadline; 0 for none."""
        own, message = self.expires_at_ms, self.message.expires_at_ms
        if own and message:
            return min(own, message)
        return own or message


class DamageKind(enum.Enum):
    """What recovery found wrong at a place in a segment."""

    TORN_TAIL = "torn tail"
    CORRUPT = "corrupt bytes"
    BAD_SEGMENT_HEADER = "bad segment header"


@dataclass(frozen=True, slots=True)
class Damage:
    """``length`` unreadable bytes at ``offset`` of ``path``.

    A torn tail (the end of the newest segment) is cut off by recovery. Corrupt
    bytes elsewhere are skipped, and stay in the file until compaction
    rewrites or deletion removes that segment.
    """

    path: Path
    offset: int
    length: int
    kind: DamageKind

    def describe(self) -> str:
        """One line for logs and the CLI."""
        where = f"{self.path}: {self.kind.value} at offset {self.offset}"
        return f"{where}, {self.length} bytes"


@dataclass(frozen=True, slots=True)
class Report:
    """What a recovery or a check found in a journal directory.

    ``records`` counts intact records read; ``ignored`` counts intact records
    that had nothing to apply to, which is normal once old segments are gone
    (an ACK whose message was already removed). ``leftovers`` are temp files
    of an interrupted compaction (removed by recovery, harmless).
    """

    directory: Path | None
    segments: int = 0
    records: int = 0
    ignored: int = 0
    damage: tuple[Damage, ...] = ()
    leftovers: tuple[Path, ...] = ()
    messages: int = 0
    queues: int = 0

    @property
    def clean(self) -> bool:
        """True when no record was lost to damage."""
        return not self.damage

    @property
    def damaged_bytes(self) -> int:
        """Bytes skipped or cut off."""
        return sum(item.length for item in self.damage)

    def describe(self) -> list[str]:
        """Lines for the CLI: a summary, then one line per damage."""
        lines = [
            f"journal {self.directory}: {self.segments} segments, "
            f"{self.records} records, {self.messages} live messages "
            f"in {self.queues} queues",
        ]
        lines.extend(item.describe() for item in self.damage)
        lines.extend(
            f"{path}: leftover of an interrupted compaction" for path in self.leftovers
        )
        if self.clean:
            lines.append("clean")
        else:
            places, size = len(self.damage), self.damaged_bytes
            lines.append(f"damaged: {places} places, {size} bytes")
        return lines


@dataclass(frozen=True, slots=True)
class RecoveredState:
    """The live messages of every queue, each list ordered by sequence.

    A queue with no live message does not appear. ``next_message_id`` is
    above every message id found on disk; the broker continues counting from
    there so that ids are never reused.

    ``unloaded`` maps the id of each live message whose body recovery left
    on disk (past ``recover(keep_bodies=...)``) to its body's size; such a
    record's ``body`` is empty, and the body is read with ``locate`` and
    ``read_body``.
    """

    queues: Mapping[str, tuple[QueuedMessage, ...]] = field(default_factory=dict)
    next_message_id: int = 1
    report: Report = field(default_factory=lambda: Report(None))
    unloaded: Mapping[int, int] = field(default_factory=dict)
