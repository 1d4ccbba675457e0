"""Segments on disk and the bookkeeping that says which records are live.

Every record that was live when it was written gets a Slot: where it sits
and how many reasons (``holds``) it has to stay. A record dies when its last
hold goes; a dead record never comes back to life. A segment whose records
are all dead is deleted; one whose live bytes fall under the compaction
ratio is rewritten with only its live records.

The reasons to keep a record:

- MESSAGE: some queue holds the message (or no queue has taken it yet).
- ENQUEUE, and MOVE for each target: that queue entry is still there.
- DELIVERY_COUNT: it is the newest count of a queue entry that is there.
- ACK, PURGE, and MOVE for its source: the record that created the entry it
  cancelled is still physically in a segment. Replay would otherwise bring
  the entry back. Such a cancelling record is a *dependent* of the creating
  record and is released when the creating record vanishes (its segment is
  deleted, or compacted while it is dead). A dependent in the same segment
  as a dead creator is released at once: both vanish together.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from .format import SEGMENT_HEADER_SIZE

SEGMENT_SUFFIX = ".seg"
TEMP_SUFFIX = ".tmp"

_NAME = re.compile(r"^(\d{8})\.seg$")


def segment_name(segment_id: int) -> str:
    """Return the file name of segment ``segment_id``, e.g. 00000001.seg."""
    return f"{segment_id:08d}{SEGMENT_SUFFIX}"


def list_segments(directory: Path) -> list[tuple[int, Path]]:
    """Return (id, path) of every segment file in ``directory``, by id."""
    found = []
    for name in os.listdir(directory):
        match = _NAME.match(name)
        if match:
            found.append((int(match.group(1)), directory / name))
    return sorted(found)


def list_leftovers(directory: Path) -> list[Path]:
    """Return temp files a compaction left behind when it was interrupted."""
    return sorted(
        directory / name
        for name in os.listdir(directory)
        if name.endswith(SEGMENT_SUFFIX + TEMP_SUFFIX)
    )


class Segment:
    """Bookkeeping for one segment file."""

    __slots__ = (
        "gone",
        "live_bytes",
        "path",
        "sealed",
        "segment_id",
        "slots",
        "total_bytes",
    )

    def __init__(self, segment_id: int, path: Path) -> None:
        self.segment_id = segment_id
        self.path = path
        self.total_bytes = SEGMENT_HEADER_SIZE
        self.live_bytes = 0
        self.slots: list[Slot] = []
        self.sealed = False
        self.gone = False

    @property
    def record_bytes(self) -> int:
        """Bytes after the segment header: records and any damaged bytes."""
        return self.total_bytes - SEGMENT_HEADER_SIZE

    def __repr__(self) -> str:
        return f"<Segment {self.segment_id} {self.live_bytes}/{self.record_bytes}>"


class Slot:
    """One record as it sits in a segment, and how many reasons it has to stay."""

    __slots__ = ("dependents", "holds", "offset", "segment", "size")

    def __init__(self, segment: Segment, offset: int, size: int) -> None:
        self.segment = segment
        self.offset = offset
        self.size = size
        self.holds = 0
        self.dependents: list[Slot] | None = None


class SegmentTable:
    """All segments of a journal and the live accounting across them.

    ``empty`` collects sealed segments with nothing live (to delete),
    ``sparse`` sealed segments under ``compact_ratio`` (to compact).
    """

    def __init__(self, directory: Path, compact_ratio: float = 0.5) -> None:
        self.directory = directory
        self.compact_ratio = compact_ratio
        self.segments: dict[int, Segment] = {}
        self.empty: set[Segment] = set()
        self.sparse: set[Segment] = set()

    def add(self, segment_id: int) -> Segment:
        """Register a new, unsealed segment."""
        segment = Segment(segment_id, self.directory / segment_name(segment_id))
        self.segments[segment_id] = segment
        return segment

    def hold(self, slot: Slot) -> None:
        """Give ``slot`` one more reason to stay."""
        if slot.holds == 0:
            segment = slot.segment
            segment.slots.append(slot)
            segment.live_bytes += slot.size
        slot.holds += 1

    def release(self, slot: Slot) -> None:
        """Take one reason away; the record dies when none is left."""
        slot.holds -= 1
        if slot.holds:
            return
        segment = slot.segment
        segment.live_bytes -= slot.size
        dependents = slot.dependents
        if dependents:
            kept = [dep for dep in dependents if dep.segment is not segment]
            slot.dependents = kept or None
            for dep in dependents:
                if dep.segment is segment:
                    self.release(dep)
        self.review(segment)

    def depend(self, creator: Slot, dependent: Slot) -> None:
        """Keep ``dependent`` while ``creator`` is physically on disk."""
        if creator.holds == 0 and creator.segment is dependent.segment:
            return
        self.hold(dependent)
        if creator.dependents is None:
            creator.dependents = [dependent]
        else:
            creator.dependents.append(dependent)

    def vanish(self, slot: Slot) -> None:
        """``slot`` (dead) is no longer on disk: release what depended on it."""
        dependents = slot.dependents
        slot.dependents = None
        for dep in dependents or ():
            self.release(dep)

    def seal(self, segment: Segment) -> None:
        """``segment`` takes no more records; it may now be deleted or compacted."""
        segment.sealed = True
        self.review(segment)

    def review(self, segment: Segment) -> None:
        """File a sealed segment under ``empty`` or ``sparse`` if it belongs."""
        if not segment.sealed or segment.gone:
            return
        if segment.live_bytes == 0:
            self.sparse.discard(segment)
            self.empty.add(segment)
        elif segment.live_bytes < self.compact_ratio * segment.record_bytes:
            self.sparse.add(segment)

    def remove(self, segment: Segment) -> None:
        """``segment``'s file is deleted: forget it and release dependents."""
        segment.gone = True
        self.empty.discard(segment)
        self.sparse.discard(segment)
        del self.segments[segment.segment_id]
        for slot in segment.slots:
            if slot.dependents:
                self.vanish(slot)
        segment.slots = []

    def rewritten(self, segment: Segment, kept: list[Slot], offsets: list[int]) -> None:
        """``segment`` was compacted to ``kept`` (now at ``offsets``)."""
        kept_ids = {id(slot) for slot in kept}
        dropped = [slot for slot in segment.slots if id(slot) not in kept_ids]
        segment.slots = list(kept)
        for slot, offset in zip(kept, offsets, strict=True):
            slot.offset = offset
        segment.total_bytes = SEGMENT_HEADER_SIZE + sum(slot.size for slot in kept)
        self.sparse.discard(segment)
        for slot in dropped:
            if slot.dependents:
                self.vanish(slot)
        self.review(segment)
