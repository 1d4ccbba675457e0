"""Record payloads, frames, compression and encryption of the journal."""

from __future__ import annotations

import zlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from amqpd.persistence.journal import (
    AckRecord,
    DeliveryCountRecord,
    EnqueueRecord,
    FormatError,
    JournalKeyError,
    Keyring,
    MessageRecord,
    MoveRecord,
    Placement,
    PurgeRecord,
    Record,
    RecordKind,
    RecordRejected,
    decode_payload,
    encode_payload,
)
from amqpd.persistence.journal import format as fmt
from amqpd.persistence.journal.codec import Compression, RecordCodec

ids = st.integers(min_value=0, max_value=2**64 - 1)
names = st.text(max_size=40)
blobs = st.binary(max_size=300)

messages = st.builds(
    MessageRecord,
    message_id=ids,
    exchange=names,
    routing_key=names,
    header=blobs,
    body=blobs,
    expires_at_ms=ids,
    priority=st.integers(0, 255),
)
placements = st.builds(Placement, queue=names, sequence=ids, expires_at_ms=ids)
records: st.SearchStrategy[Record] = st.one_of(
    messages,
    st.builds(
        EnqueueRecord, queue=names, message_id=ids, sequence=ids, expires_at_ms=ids
    ),
    st.builds(AckRecord, queue=names, message_id=ids),
    st.builds(
        DeliveryCountRecord,
        queue=names,
        message_id=ids,
        count=st.integers(0, 2**32 - 1),
    ),
    st.builds(
        MoveRecord,
        source=names,
        message_id=ids,
        targets=st.lists(placements, max_size=4).map(tuple),
        message=st.none() | messages,
    ),
    st.builds(PurgeRecord, queue=names),
)

KEY_A = bytes(range(32))
KEY_B = bytes(range(1, 33))


def test_layout_sizes_match_the_documented_format() -> None:
    assert fmt.SEGMENT_HEADER_SIZE == 16
    assert fmt.HEADER_SIZE == 12
    assert fmt.OVERHEAD == 16
    assert len(fmt.segment_header(7)) == fmt.SEGMENT_HEADER_SIZE
    assert fmt.read_segment_header(fmt.segment_header(7)) == 7


@given(records)
def test_every_record_survives_payload_round_trip(record: Record) -> None:
    assert decode_payload(record.kind, encode_payload(record)) == record


@pytest.mark.parametrize("compression", ["zstd", "zlib"])
@given(record=records)
def test_every_record_survives_frame_round_trip(
    compression: Compression, record: Record
) -> None:
    codec = RecordCodec(compress_threshold=64, compression=compression)
    frame_bytes = codec.encode(record)
    frame = fmt.read_frame(frame_bytes, 0)
    assert frame is not None
    assert frame.size == len(frame_bytes)
    assert codec.decode(frame, "test") == record
    assert RecordCodec(compression="zlib").decode(frame, "test") == record


def test_fields_that_do_not_fit_are_rejected_before_writing() -> None:
    with pytest.raises(RecordRejected):
        encode_payload(MessageRecord(1, "", "", b"", b"", priority=256))
    with pytest.raises(RecordRejected):
        encode_payload(AckRecord("q", -1))
    with pytest.raises(RecordRejected):
        encode_payload(PurgeRecord("q" * 70000))


def test_payload_with_stray_bytes_is_a_format_error() -> None:
    payload = encode_payload(AckRecord("q", 1)) + b"x"
    with pytest.raises(FormatError):
        decode_payload(RecordKind.ACK, payload)
    with pytest.raises(FormatError):
        decode_payload(99, payload)


def test_any_flipped_bit_fails_the_frame_check() -> None:
    data = RecordCodec().encode(EnqueueRecord("queue", 5, 9))
    for index in range(len(data)):
        for bit in range(8):
            broken = bytearray(data)
            broken[index] ^= 1 << bit
            assert fmt.read_frame(bytes(broken), 0) is None, (index, bit)


def test_a_flipped_payload_keeps_a_plausible_length() -> None:
    data = bytearray(RecordCodec().encode(AckRecord("queue", 5)))
    data[fmt.HEADER_SIZE + 2] ^= 0xFF
    assert fmt.read_frame(bytes(data), 0) is None
    assert fmt.plausible_length(bytes(data), 0) == len(data) - fmt.OVERHEAD


@pytest.mark.parametrize(
    ("compression", "flag"), [("zstd", fmt.CODEC_ZSTD), ("zlib", fmt.CODEC_ZLIB)]
)
def test_large_payloads_are_compressed_and_flagged(
    compression: Compression, flag: int
) -> None:
    record = MessageRecord(1, "ex", "rk", b"h", b"a" * 10_000)
    codec = RecordCodec(compress_threshold=1024, compression=compression)
    frame = fmt.read_frame(codec.encode(record), 0)
    assert frame is not None
    assert frame.flags & fmt.CODEC_MASK == flag
    assert len(frame.payload) < 1000
    assert codec.decode(frame, "test") == record


def test_small_or_incompressible_payloads_stay_raw() -> None:
    codec = RecordCodec(compress_threshold=1024)
    small = fmt.read_frame(codec.encode(MessageRecord(1, "", "", b"", b"a" * 100)), 0)
    noise = zlib.compress(bytes(range(256)) * 20, 9)
    large = fmt.read_frame(codec.encode(MessageRecord(2, "", "", b"", noise)), 0)
    assert small is not None and small.flags == fmt.CODEC_RAW
    assert large is not None and large.flags == fmt.CODEC_RAW


def test_decompression_is_bounded_by_max_record_size() -> None:
    record = MessageRecord(1, "", "", b"", b"a" * 100_000)
    frame = fmt.read_frame(RecordCodec(compress_threshold=10).encode(record), 0)
    assert frame is not None
    with pytest.raises(FormatError):
        RecordCodec(max_record_size=1000).decode(frame, "test")


def test_encrypted_records_name_their_key_and_read_after_rotation() -> None:
    record = MessageRecord(1, "ex", "rk", b"header", b"secret body " * 50)
    old = RecordCodec(keyring=Keyring({"k1": KEY_A}, active="k1"))
    data = old.encode(record)
    assert b"secret" not in data
    frame = fmt.read_frame(data, 0)
    assert frame is not None and frame.flags & fmt.ENCRYPTED
    rotated = RecordCodec(keyring=Keyring({"k1": KEY_A, "k2": KEY_B}, active="k2"))
    assert rotated.decode(frame, "test") == record
    newer = fmt.read_frame(rotated.encode(record), 0)
    assert newer is not None
    assert old.decode(frame, "test") == record
    with pytest.raises(JournalKeyError, match="k2"):
        old.decode(newer, "test")


def test_wrong_or_missing_key_is_a_key_error() -> None:
    frame = fmt.read_frame(
        RecordCodec(keyring=Keyring({"k1": KEY_A}, active="k1")).encode(
            AckRecord("q", 1)
        ),
        0,
    )
    assert frame is not None
    with pytest.raises(JournalKeyError, match="does not decrypt"):
        RecordCodec(keyring=Keyring({"k1": KEY_B})).decode(frame, "test")
    with pytest.raises(JournalKeyError, match="no keyring"):
        RecordCodec().decode(frame, "test")


def test_keyring_refuses_bad_keys() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        Keyring({"k": b"short"})
    with pytest.raises(ValueError, match="not in the keyring"):
        Keyring({"k": KEY_A}, active="other")
