"""Records to record bytes and back: payload, compression, encryption, framing.

Payloads above the compression threshold are compressed with zstd (the
``zstandard`` package) when that makes them smaller. zstd level 1 was chosen
over zlib and lz4 by measurement (docs/journal-compression.md): about three
times the speed of zlib level 1 with smaller output, where lz4 is faster
still but leaves records a third larger than zlib does. Without
``zstandard`` installed, new records fall back to zlib; every record says
its codec in its flags, so zlib records of older segments keep reading. A
zstd record cannot be read without ``zstandard``: recovery then stops with
a FormatError before it changes anything.
"""

from __future__ import annotations

import zlib
from typing import Literal

from . import format as fmt
from .errors import FormatError, JournalKeyError
from .keyring import Keyring, read_key_id
from .records import Record, decode_payload, encode_payload

try:
    import zstandard
except ImportError:  # zlib does the work without it; see the module docstring
    zstandard = None  # type: ignore[assignment]

Compression = Literal["zstd", "zlib"]

DEFAULT_COMPRESSION: Compression = "zstd"
DEFAULT_COMPRESS_THRESHOLD = 4096
DEFAULT_COMPRESS_LEVEL = 1
DEFAULT_MAX_RECORD_SIZE = 512 * 1024 * 1024


def compression_codec(compression: Compression) -> int:
    """The codec flag that new records get for ``compression``.

    zstd falls back to zlib when the ``zstandard`` package is missing.
    """
    if compression == "zstd" and zstandard is not None:
        return fmt.CODEC_ZSTD
    if compression in ("zstd", "zlib"):
        return fmt.CODEC_ZLIB
    raise ValueError(f"compression must be zstd or zlib: {compression!r}")


class RecordCodec:
    """Encodes records into frames and decodes frames back into records.

    Payloads longer than ``compress_threshold`` bytes are compressed with
    ``compression`` at ``compress_level`` when that makes them smaller
    (None turns compression off). With a keyring that has an active key
    every payload is then encrypted. ``max_record_size`` bounds what
    decompression may produce when reading. Reading takes every codec,
    whatever ``compression`` says.
    """

    def __init__(
        self,
        *,
        compress_threshold: int | None = DEFAULT_COMPRESS_THRESHOLD,
        compress_level: int = DEFAULT_COMPRESS_LEVEL,
        compression: Compression = DEFAULT_COMPRESSION,
        keyring: Keyring | None = None,
        max_record_size: int = DEFAULT_MAX_RECORD_SIZE,
    ) -> None:
        self._threshold = compress_threshold
        self._level = compress_level
        self.codec = compression_codec(compression)
        self._keyring = keyring
        self._seal = keyring is not None and keyring.active is not None
        self._max = max_record_size
        self._zstd_in: zstandard.ZstdCompressor | None = None
        self._zstd_out: zstandard.ZstdDecompressor | None = None
        if self.codec == fmt.CODEC_ZSTD:
            assert zstandard is not None
            self._zstd_in = zstandard.ZstdCompressor(level=compress_level)

    def encode(self, record: Record) -> bytes:
        """Return the frame bytes for ``record``."""
        flags, payload = self.seal(record)
        return fmt.build_frame(record.kind, flags, payload)

    def seal(self, record: Record) -> tuple[int, bytes]:
        """Return the flags and the stored payload (compressed, encrypted).

        The frame is then ``fmt.OVERHEAD`` bytes longer than the payload;
        ``fmt.append_frame`` writes it.
        """
        payload = encode_payload(record)
        flags = fmt.CODEC_RAW
        if self._threshold is not None and len(payload) > self._threshold:
            packed = self._compress(payload)
            if len(packed) < len(payload):
                payload, flags = packed, self.codec
        if self._seal:
            assert self._keyring is not None
            flags |= fmt.ENCRYPTED
            payload = self._keyring.seal(payload, bytes((record.kind, flags)))
        return flags, payload

    def decode(self, frame: fmt.Frame, where: object) -> Record:
        """Return the record in an intact frame; ``str(where)`` names it in errors.

        ``where`` is formatted only for an error, so recovery passes an
        object that names the file and offset lazily.

        Raises JournalKeyError for an encrypted record this codec has no key
        for, FormatError for a payload that cannot be decoded.
        """
        kind, flags, payload = frame.kind, frame.flags, frame.payload
        if flags & fmt.ENCRYPTED:
            if self._keyring is None:
                key_id = read_key_id(payload)
                raise JournalKeyError(
                    f"{where}: record is encrypted with key {key_id!r}, "
                    "no keyring given"
                )
            payload = self._keyring.open(payload, bytes((kind, flags)), where)
        codec = flags & fmt.CODEC_MASK
        if codec == fmt.CODEC_ZSTD:
            payload = self._unzstd(payload, where)
        elif codec == fmt.CODEC_ZLIB:
            payload = self._inflate(payload, where)
        try:
            return decode_payload(kind, payload)
        except FormatError as exc:
            raise FormatError(f"{where}: {exc}") from None

    def _compress(self, payload: bytes) -> bytes:
        if self._zstd_in is not None:
            return self._zstd_in.compress(payload)
        return zlib.compress(payload, self._level)

    def _inflate(self, data: bytes, where: object) -> bytes:
        inflater = zlib.decompressobj()
        try:
            plain = inflater.decompress(data, self._max)
        except zlib.error as exc:
            raise FormatError(f"{where}: cannot decompress: {exc}") from None
        if inflater.unconsumed_tail or not inflater.eof:
            raise FormatError(f"{where}: compressed payload is cut or too large")
        return plain

    def _unzstd(self, data: bytes, where: object) -> bytes:
        if zstandard is None:
            raise FormatError(
                f"{where}: record is zstd-compressed and the 'zstandard' "
                "package is not installed"
            )
        if self._zstd_out is None:
            self._zstd_out = zstandard.ZstdDecompressor()
        try:
            # The writer always stores the size; checking it first bounds
            # the allocation (decompress trusts a stored size over its limit).
            size = zstandard.frame_content_size(data)
            if size < 0 or size > self._max:
                raise FormatError(f"{where}: compressed size unknown or too large")
            return self._zstd_out.decompress(
                data, max_output_size=self._max, allow_extra_data=False
            )
        except zstandard.ZstdError as exc:
            raise FormatError(f"{where}: cannot decompress: {exc}") from None
