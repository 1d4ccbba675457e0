"""Compaction: rewrite a sparse segment with only its live records.

The new file is written beside the old one as ``<name>.tmp``, fsynced, then
renamed over the old one and the directory fsynced. A crash before the
rename leaves the old segment intact plus a temp file that recovery removes;
after it, the new segment is complete. Records are copied byte for byte
(never decoded), so compaction needs no encryption key. The segment keeps
its id, so replay order does not change.

Only records that were live when the plan was made are copied. Records that
die while the copy is made are copied anyway and dropped next time.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from .filelayer import FileLayer
from .format import read_frame, segment_header
from .segment import TEMP_SUFFIX, Segment, SegmentTable

log = logging.getLogger("amqpd.journal")


@dataclass(frozen=True, slots=True)
class CompactionPlan:
    """Which segment to rewrite and which of its records to keep.

    ``kept`` holds the records' indexes in the segment, ``ranges`` their
    offsets and sizes, both in file order.
    """

    segment: Segment
    kept: list[int]
    ranges: list[tuple[int, int]]


def plan_compaction(table: SegmentTable) -> CompactionPlan | None:
    """Pick the oldest sparse segment and list its live records by offset."""
    candidates = [seg for seg in table.sparse if not seg.gone]
    if not candidates:
        return None
    segment = min(candidates, key=lambda seg: seg.segment_id)
    table.sparse.discard(segment)
    kept = segment.live()
    offsets, sizes = segment.offsets, segment.sizes
    ranges = [(offsets[index], sizes[index]) for index in kept]
    return CompactionPlan(segment, kept, ranges)


def rewrite_segment(
    layer: FileLayer, segment_id: int, path: Path, ranges: list[tuple[int, int]]
) -> list[int]:
    """Write the records at ``ranges`` of ``path`` to a new file in its place.

    Returns the new offset of each range. Runs on the writer's thread.
    """
    data = layer.read(path)
    out = bytearray(segment_header(segment_id))
    offsets = []
    for offset, size in ranges:
        if read_frame(data, offset) is None:
            log.warning(
                "journal %s: live record at offset %d no longer matches its "
                "checksum; copied as it is",
                path,
                offset,
            )
        offsets.append(len(out))
        out += data[offset : offset + size]
    temp = path.with_name(path.name + TEMP_SUFFIX)
    try:
        layer.remove(temp)
    except FileNotFoundError:
        pass
    fd = layer.create(temp)
    try:
        layer.write(fd, out)
        layer.fsync(fd)
    finally:
        layer.close(fd)
    layer.replace(temp, path)
    layer.fsync_directory(path.parent)
    return offsets
