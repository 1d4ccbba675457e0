"""Records to record bytes and back: payload, compression, encryption, framing."""

from __future__ import annotations

import zlib

from . import format as fmt
from .errors import FormatError, JournalKeyError
from .keyring import Keyring
from .records import Record, decode_payload, encode_payload

DEFAULT_COMPRESS_THRESHOLD = 4096
DEFAULT_COMPRESS_LEVEL = 1
DEFAULT_MAX_RECORD_SIZE = 512 * 1024 * 1024


class RecordCodec:
    """Encodes records into frames and decodes frames back into records.

    Payloads longer than ``compress_threshold`` bytes are zlib-compressed when
    that makes them smaller (None turns compression off). With a keyring that
    has an active key every payload is then encrypted. ``max_record_size``
    bounds what decompression may produce when reading.
    """

    def __init__(
        self,
        *,
        compress_threshold: int | None = DEFAULT_COMPRESS_THRESHOLD,
        compress_level: int = DEFAULT_COMPRESS_LEVEL,
        keyring: Keyring | None = None,
        max_record_size: int = DEFAULT_MAX_RECORD_SIZE,
    ) -> None:
        self._threshold = compress_threshold
        self._level = compress_level
        self._keyring = keyring
        self._seal = keyring is not None and keyring.active is not None
        self._max = max_record_size

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
            packed = zlib.compress(payload, self._level)
            if len(packed) < len(payload):
                payload, flags = packed, fmt.CODEC_ZLIB
        if self._seal:
            assert self._keyring is not None
            flags |= fmt.ENCRYPTED
            payload = self._keyring.seal(payload, bytes((record.kind, flags)))
        return flags, payload

    def decode(self, frame: fmt.Frame, where: str) -> Record:
        """Return the record in an intact frame; ``where`` names it in errors.

        Raises JournalKeyError for an encrypted record this codec has no key
        for, FormatError for a payload that cannot be decoded.
        """
        payload = frame.payload
        if frame.flags & fmt.ENCRYPTED:
            if self._keyring is None:
                raise JournalKeyError(f"{where}: record is encrypted, no keyring given")
            associated = bytes((frame.kind, frame.flags))
            payload = self._keyring.open(payload, associated, where)
        if frame.flags & fmt.CODEC_MASK == fmt.CODEC_ZLIB:
            payload = self._inflate(payload, where)
        try:
            return decode_payload(frame.kind, payload)
        except FormatError as exc:
            raise FormatError(f"{where}: {exc}") from None

    def _inflate(self, data: bytes, where: str) -> bytes:
        inflater = zlib.decompressobj()
        try:
            plain = inflater.decompress(data, self._max)
        except zlib.error as exc:
            raise FormatError(f"{where}: cannot decompress: {exc}") from None
        if inflater.unconsumed_tail or not inflater.eof:
            raise FormatError(f"{where}: compressed payload is cut or too large")
        return plain
