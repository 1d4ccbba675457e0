"""On-disk layout of the journal.

A journal is a directory of segment files named by a zero-padded id:
00000001.seg, 00000002.seg, ... Replay reads segments in id order and the
records inside a segment in file order. A segment is only ever appended to
while it is the active one; afterwards it is read, rewritten whole by
compaction (temp file, fsync, rename, fsync directory) or deleted.

Segment file (integers little-endian)

    offset  size  field
    0       8     magic b"AMQPDJNL"
    8       2     format version: 2 (1 is still read, see below)
    10      2     reserved, 0
    12      4     segment id, equal to the number in the file name
    16      ...   records back to back

Record

    offset  size  field
    0       1     marker 0xA5 (a cheap first test when resyncing)
    1       1     type, a RecordKind
    2       1     flags: bits 0-1 codec (0 raw, 1 zlib, 2 zstd), bit 2
                  encrypted
    3       1     reserved, 0
    4       4     payload length N
    8       4     zlib.crc32 of bytes 0-7 followed by the payload
    12      N     payload, see records.py; compressed, then encrypted,
                  as the flags say
    12+N    4     trailing length, equal to N

An encrypted payload is: u8 key id length, key id (UTF-8), 12-byte nonce,
AES-256-GCM ciphertext with its 16-byte tag; the associated data is the type
and flags bytes. The key id lets old segments be read after a new key is
added (see keyring.py).

Version 2 added the zstd codec; records are otherwise the same, so version
1 segments (raw and zlib records only) are read as they are. A reader that
knows only version 1 refuses version 2 segments instead of taking their zstd
records for damage and cutting them off.

The trailing length lets a reader that lost its place check a candidate
record start from both ends, and the checksum covers the header, so a flipped
bit in the type, flags or length is caught as well as one in the payload.
"""

from __future__ import annotations

import struct
import zlib
from typing import Final, NamedTuple

from .records import RecordKind

SEGMENT_MAGIC: Final = b"AMQPDJNL"
FORMAT_VERSION: Final = 2
READABLE_VERSIONS: Final = frozenset((1, 2))
MARKER: Final = 0xA5

CODEC_MASK: Final = 0b011
CODEC_RAW: Final = 0
CODEC_ZLIB: Final = 1
CODEC_ZSTD: Final = 2
ENCRYPTED: Final = 0b100
KNOWN_FLAGS: Final = CODEC_MASK | ENCRYPTED

_SEGMENT_HEADER = struct.Struct("<8sHHI")
_PREFIX = struct.Struct("<BBBBI")
_CRC = struct.Struct("<I")
_HEADER = struct.Struct("<BBBBII")
_TRAILER = struct.Struct("<I")

_pack_prefix = _PREFIX.pack
_pack_u32 = _CRC.pack
_crc32 = zlib.crc32

SEGMENT_HEADER_SIZE: Final = _SEGMENT_HEADER.size
PREFIX_SIZE: Final = _PREFIX.size
HEADER_SIZE: Final = _PREFIX.size + _CRC.size
TRAILER_SIZE: Final = _TRAILER.size
OVERHEAD: Final = HEADER_SIZE + TRAILER_SIZE

assert SEGMENT_HEADER_SIZE == 16
assert PREFIX_SIZE == 8
assert HEADER_SIZE == 12 == _HEADER.size
assert TRAILER_SIZE == 4

_KINDS = frozenset(int(kind) for kind in RecordKind)


def segment_header(segment_id: int) -> bytes:
    """Return the 16 bytes that open segment ``segment_id``."""
    return _SEGMENT_HEADER.pack(SEGMENT_MAGIC, FORMAT_VERSION, 0, segment_id)


def read_segment_header(data: bytes) -> int | None:
    """Return the segment id in a valid segment header, else None."""
    if len(data) < SEGMENT_HEADER_SIZE:
        return None
    magic, version, reserved, segment_id = _SEGMENT_HEADER.unpack_from(data)
    if magic != SEGMENT_MAGIC or version not in READABLE_VERSIONS or reserved:
        return None
    return int(segment_id)


def segment_version(data: bytes) -> int | None:
    """Return the format version of a segment whose magic is intact, else None."""
    if len(data) < SEGMENT_HEADER_SIZE:
        return None
    magic, version, _, _ = _SEGMENT_HEADER.unpack_from(data)
    return int(version) if magic == SEGMENT_MAGIC else None


def build_frame(kind: int, flags: int, payload: bytes) -> bytes:
    """Return the full record bytes: header, payload and trailing length."""
    out = bytearray()
    append_frame(out, kind, flags, payload)
    return bytes(out)


def append_frame(out: bytearray, kind: int, flags: int, payload: bytes) -> None:
    """Append the full record bytes to ``out``."""
    out += b"".join(frame_parts(kind, flags, payload))


def frame_parts(kind: int, flags: int, payload: bytes) -> tuple[bytes, bytes, bytes]:
    """The record bytes in three parts: header, payload, trailing length.

    The payload is not copied, which is what group commit wants: appends
    collect parts and the writer thread joins them.
    """
    length = len(payload)
    prefix = _pack_prefix(MARKER, kind, flags, 0, length)
    header = prefix + _pack_u32(_crc32(payload, _crc32(prefix)))
    return header, payload, _pack_u32(length)


class Frame(NamedTuple):
    """A record found intact in a segment (checksum and lengths agree).

    A named tuple rather than a frozen dataclass: recovery makes one per
    record, and a tuple is several times cheaper to build.
    """

    offset: int
    kind: int
    flags: int
    payload: bytes

    @property
    def size(self) -> int:
        """Bytes the record takes in the file, header and trailer included."""
        return len(self.payload) + OVERHEAD


def plausible_length(data: bytes, offset: int) -> int | None:
    """Return the payload length at ``offset`` if header and trailer agree.

    Only the framing is checked, not the checksum: a record whose payload
    bytes were flipped still has a trustworthy length, which lets a reader
    step over exactly that record instead of scanning inside its payload.
    """
    if offset + OVERHEAD > len(data):
        return None
    marker, kind, flags, reserved, length = _PREFIX.unpack_from(data, offset)
    if marker != MARKER or kind not in _KINDS or flags & ~KNOWN_FLAGS or reserved:
        return None
    if flags & CODEC_MASK > CODEC_ZSTD:
        return None
    end = offset + HEADER_SIZE + length
    if end + TRAILER_SIZE > len(data):
        return None
    if _TRAILER.unpack_from(data, end)[0] != length:
        return None
    return int(length)


def read_frame(data: bytes, offset: int) -> Frame | None:
    """Return the record starting at ``offset``, or None if it is not intact."""
    # plausible_length's checks, inlined: recovery calls this once per record
    if offset + OVERHEAD > len(data):
        return None
    marker, kind, flags, reserved, length, crc = _HEADER.unpack_from(data, offset)
    if marker != MARKER or kind not in _KINDS or flags & ~KNOWN_FLAGS or reserved:
        return None
    if flags & CODEC_MASK > CODEC_ZSTD:
        return None
    start = offset + HEADER_SIZE
    end = start + length
    if end + TRAILER_SIZE > len(data) or _TRAILER.unpack_from(data, end)[0] != length:
        return None
    payload = data[start:end]
    if zlib.crc32(payload, zlib.crc32(data[offset : offset + PREFIX_SIZE])) != crc:
        return None
    return Frame(offset, kind, flags, payload)


def find_frame(data: bytes, start: int) -> Frame | None:
    """Return the first intact record at or after ``start``, scanning bytes."""
    marker = bytes((MARKER,))
    at = data.find(marker, start)
    while at != -1:
        frame = read_frame(data, at)
        if frame is not None:
            return frame
        at = data.find(marker, at + 1)
    return None
