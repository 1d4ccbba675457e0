"""Segments on disk and the bookkeeping that says which records are live.

Every record gets a slot in its segment: where it sits, its size, and how
many reasons (``holds``) it has to stay. A record dies when its last hold
goes; a dead record never comes back to life. A segment whose records are
all dead is deleted; one whose live bytes fall under the compaction ratio is
rewritten with only its live records.

A slot is a plain int, ``segment id << 32 | index``, and a segment keeps its
slots' offsets, sizes and holds in arrays. Nothing per record is a Python
object: a journal with a million queued messages would otherwise carry two
million small objects that the cyclic garbage collector walks again and
again (with slot objects, collections took over 40% of the cost of an
append while a backlog grew to 400,000 messages) and about 110 more bytes per
message.

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
from array import array
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


_SHIFT = 32
_INDEX = (1 << _SHIFT) - 1

assert array("Q").itemsize == 8
assert array("I").itemsize == 4


def slot_segment(slot: int) -> int:
    """The id of the segment ``slot`` is in."""
    return slot >> _SHIFT


class Segment:
    """Bookkeeping for one segment file and the slots of its records.

    ``offsets``, ``sizes`` and ``holds`` are indexed by the slot's index, in
    file order; ``dependents`` maps an index to the slots that must stay
    while that record is physically in the file.
    """

    __slots__ = (
        "dependents",
        "gone",
        "holds",
        "live_bytes",
        "offsets",
        "path",
        "sealed",
        "segment_id",
        "sizes",
        "total_bytes",
    )

    def __init__(self, segment_id: int, path: Path) -> None:
        self.segment_id = segment_id
        self.path = path
        self.total_bytes = SEGMENT_HEADER_SIZE
        self.live_bytes = 0
        self.sealed = False
        self.gone = False
        self.offsets = array("Q")
        self.sizes = array("I")
        self.holds = array("I")
        self.dependents: dict[int, list[int]] = {}

    @property
    def record_bytes(self) -> int:
        """Bytes after the segment header: records and any damaged bytes."""
        return self.total_bytes - SEGMENT_HEADER_SIZE

    def slot(self, offset: int, size: int) -> int:
        """Add the record at ``offset`` (no holds yet); return its slot."""
        index = len(self.offsets)
        self.offsets.append(offset)
        self.sizes.append(size)
        self.holds.append(0)
        return self.segment_id << _SHIFT | index

    def drop_slot(self, slot: int) -> None:
        """Take back the newest slot, never held (its record was rejected)."""
        index = slot & _INDEX
        assert index == len(self.holds) - 1 and not self.holds[index]
        del self.offsets[index], self.sizes[index], self.holds[index]

    def live(self) -> list[int]:
        """Indexes of the records with holds, in file order."""
        return [index for index, held in enumerate(self.holds) if held]

    def __repr__(self) -> str:
        return f"<Segment {self.segment_id} {self.live_bytes}/{self.record_bytes}>"


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

    def place(self, slot: int) -> tuple[Segment, int, int] | None:
        """The segment, offset and size of the record at ``slot``, or None
        once its segment is gone."""
        segment = self.segments.get(slot >> _SHIFT)
        if segment is None:
            return None
        index = slot & _INDEX
        return segment, segment.offsets[index], segment.sizes[index]

    def holds(self, slot: int) -> int:
        """How many reasons ``slot`` has to stay."""
        return self.segments[slot >> _SHIFT].holds[slot & _INDEX]

    def hold(self, slot: int) -> None:
        """Give ``slot`` one more reason to stay."""
        segment = self.segments[slot >> _SHIFT]
        index = slot & _INDEX
        holds = segment.holds
        if not holds[index]:
            segment.live_bytes += segment.sizes[index]
        holds[index] += 1

    def release(self, slot: int) -> None:
        """Take one reason away; the record dies when none is left."""
        segment = self.segments[slot >> _SHIFT]
        index = slot & _INDEX
        holds = segment.holds
        left = holds[index] - 1
        holds[index] = left
        if left:
            return
        segment.live_bytes -= segment.sizes[index]
        dependents = segment.dependents.get(index)
        if dependents:
            here = segment.segment_id
            kept = [dep for dep in dependents if dep >> _SHIFT != here]
            if kept:
                segment.dependents[index] = kept
            else:
                del segment.dependents[index]
            for dep in dependents:
                if dep >> _SHIFT == here:
                    self.release(dep)
        self.review(segment)

    def depend(self, creator: int, dependent: int) -> None:
        """Keep ``dependent`` while ``creator`` is physically on disk."""
        segment = self.segments[creator >> _SHIFT]
        index = creator & _INDEX
        if not segment.holds[index] and creator >> _SHIFT == dependent >> _SHIFT:
            return
        self.hold(dependent)
        dependents = segment.dependents.get(index)
        if dependents is None:
            segment.dependents[index] = [dependent]
        else:
            dependents.append(dependent)

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
        dependents, segment.dependents = segment.dependents, {}
        for slots in dependents.values():
            for dep in slots:
                self.release(dep)
        segment.offsets, segment.sizes, segment.holds = (
            array("Q"),
            array("I"),
            array("I"),
        )

    def rewritten(self, segment: Segment, kept: list[int], offsets: list[int]) -> None:
        """``segment`` was compacted to the records at indexes ``kept``,
        which now sit at ``offsets``."""
        for index, offset in zip(kept, offsets, strict=True):
            segment.offsets[index] = offset
        sizes = segment.sizes
        segment.total_bytes = SEGMENT_HEADER_SIZE + sum(sizes[i] for i in kept)
        self.sparse.discard(segment)
        # Records left out are gone from the file: what they kept, goes.
        kept_set = set(kept)
        gone = [index for index in segment.dependents if index not in kept_set]
        for index in gone:
            for dep in segment.dependents.pop(index):
                self.release(dep)
        self.review(segment)
