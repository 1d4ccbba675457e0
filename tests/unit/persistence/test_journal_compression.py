"""Compression of journal records: zstd by default, zlib records still read."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import pytest
import zstandard

from amqpd.persistence.journal import (
    DiskJournal,
    EnqueueRecord,
    FormatError,
    JournalOptions,
    Keyring,
    MessageRecord,
    Record,
    RecordKind,
    encode_payload,
)
from amqpd.persistence.journal import codec as codec_module
from amqpd.persistence.journal import format as fmt
from amqpd.persistence.journal.codec import RecordCodec

BODY = b'{"order": 1234, "items": ["tea", "cups"], "note": "fragile"}' * 200


def frame_of(codec: RecordCodec, record: Record) -> fmt.Frame:
    frame = fmt.read_frame(codec.encode(record), 0)
    assert frame is not None
    return frame


def old_segment(directory: Path, segment_id: int, records: list[Record]) -> Path:
    """A version 1 segment as the zlib-only journal wrote it."""
    out = bytearray(struct.pack("<8sHHI", b"AMQPDJNL", 1, 0, segment_id))
    for record in records:
        payload, flags = encode_payload(record), fmt.CODEC_RAW
        if len(payload) > 4096:
            payload, flags = zlib.compress(payload, 1), fmt.CODEC_ZLIB
        fmt.append_frame(out, record.kind, flags, payload)
    path = directory / f"{segment_id:08d}.seg"
    path.write_bytes(out)
    return path


def recover_ids(directory: Path) -> tuple[list[int], list[bytes]]:
    journal = DiskJournal(directory)
    state = journal.recover()
    journal.close()
    queued = state.queues.get("q", ())
    return [q.message.message_id for q in queued], [q.message.body for q in queued]


def test_large_payloads_get_zstd_by_default() -> None:
    record = MessageRecord(1, "ex", "rk", b"h", BODY)
    frame = frame_of(RecordCodec(), record)
    assert frame.flags == fmt.CODEC_ZSTD
    assert frame.payload.startswith(b"\x28\xb5\x2f\xfd")  # zstd frame magic
    assert len(frame.payload) < len(BODY) // 10
    assert RecordCodec(compression="zlib").decode(frame, "test") == record


def test_zlib_compression_can_still_be_chosen() -> None:
    record = MessageRecord(1, "ex", "rk", b"h", BODY)
    frame = frame_of(RecordCodec(compression="zlib"), record)
    assert frame.flags == fmt.CODEC_ZLIB
    assert zlib.decompress(frame.payload) == encode_payload(record)
    assert RecordCodec().decode(frame, "test") == record


def test_unknown_compression_is_refused() -> None:
    with pytest.raises(ValueError, match="zstd or zlib"):
        JournalOptions(compression="lz4")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="zstd or zlib"):
        RecordCodec(compression="brotli")  # type: ignore[arg-type]


def test_compressed_and_encrypted_records_flag_both() -> None:
    codec = RecordCodec(keyring=Keyring({"k": bytes(range(32))}, active="k"))
    record = MessageRecord(1, "ex", "rk", b"h", BODY)
    frame = frame_of(codec, record)
    assert frame.flags == fmt.CODEC_ZSTD | fmt.ENCRYPTED
    assert len(frame.payload) < len(BODY) // 10
    assert codec.decode(frame, "test") == record


def test_without_zstandard_new_records_fall_back_to_zlib(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(codec_module, "zstandard", None)
    record = MessageRecord(1, "ex", "rk", b"h", BODY)
    frame = frame_of(RecordCodec(), record)
    assert frame.flags == fmt.CODEC_ZLIB
    assert RecordCodec().decode(frame, "test") == record


def test_zstd_record_without_zstandard_stops_recovery_before_repair(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    journal = DiskJournal(tmp_path)
    journal.recover()
    journal.append_many(
        [MessageRecord(1, "", "rk", b"h", BODY), EnqueueRecord("q", 1, 1)]
    )
    journal.close()
    (segment,) = tmp_path.glob("*.seg")
    segment.write_bytes(segment.read_bytes() + b"\xa5torn")
    size = segment.stat().st_size
    monkeypatch.setattr(codec_module, "zstandard", None)

    with pytest.raises(FormatError, match="'zstandard' package is not installed"):
        DiskJournal(tmp_path).recover()
    assert segment.stat().st_size == size


def test_zlib_records_of_a_version_1_segment_still_read(tmp_path: Path) -> None:
    bodies = [BODY, b"small body"]
    old_segment(
        tmp_path,
        1,
        [
            MessageRecord(1, "ex", "rk", b"h", bodies[0]),
            EnqueueRecord("q", 1, 1),
            MessageRecord(2, "ex", "rk", b"h", bodies[1]),
            EnqueueRecord("q", 2, 2),
        ],
    )
    data = (tmp_path / "00000001.seg").read_bytes()
    assert data[8] == 1
    assert data[fmt.SEGMENT_HEADER_SIZE + 2] == fmt.CODEC_ZLIB

    assert recover_ids(tmp_path) == ([1, 2], bodies)


def test_old_zlib_and_new_zstd_segments_recover_together(tmp_path: Path) -> None:
    old = old_segment(
        tmp_path, 1, [MessageRecord(1, "", "rk", b"h", BODY), EnqueueRecord("q", 1, 1)]
    )
    old_bytes = old.read_bytes()
    journal = DiskJournal(tmp_path)
    journal.recover()
    journal.append_many(
        [MessageRecord(2, "", "rk", b"h", BODY), EnqueueRecord("q", 2, 2)]
    )
    journal.close()

    new = tmp_path / "00000002.seg"
    assert old.read_bytes() == old_bytes
    assert new.read_bytes()[8] == fmt.FORMAT_VERSION == 2
    assert new.read_bytes()[fmt.SEGMENT_HEADER_SIZE + 2] == fmt.CODEC_ZSTD
    assert recover_ids(tmp_path) == ([1, 2], [BODY, BODY])


def test_zstd_decompression_is_bounded_by_max_record_size() -> None:
    record = MessageRecord(1, "", "", b"", b"a" * 100_000)
    frame = frame_of(RecordCodec(compress_threshold=10), record)
    assert frame.flags == fmt.CODEC_ZSTD
    with pytest.raises(FormatError, match="too large"):
        RecordCodec(max_record_size=1000).decode(frame, "where")


def test_zstd_payload_that_does_not_decompress_is_a_format_error() -> None:
    payload = zstandard.ZstdCompressor().compress(b"x" * 5000)
    for broken in (payload[:-4], payload + b"extra", b"not zstd at all"):
        frame = fmt.read_frame(
            fmt.build_frame(RecordKind.MESSAGE, fmt.CODEC_ZSTD, broken), 0
        )
        assert frame is not None
        with pytest.raises(FormatError, match="at offset 7"):
            RecordCodec().decode(frame, "at offset 7")


def test_codec_value_3_is_not_a_record() -> None:
    data = fmt.build_frame(RecordKind.ACK, 3, encode_payload(EnqueueRecord("q", 1, 1)))
    assert fmt.plausible_length(data, 0) is None
    assert fmt.read_frame(data, 0) is None
