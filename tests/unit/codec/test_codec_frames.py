"""Frames: splitting a receive buffer cut at random points gives the frames
pamqp reads; the builders write the bytes pamqp writes."""

from __future__ import annotations

import struct
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pamqp import commands as spec
from pamqp import frame as pamqp_frame
from pamqp.body import ContentBody
from pamqp.exceptions import UnmarshalingException
from pamqp.header import ContentHeader
from pamqp.heartbeat import Heartbeat

from amqpd.codec import frames
from amqpd.errors import FrameError

channels = st.integers(0, 65535)
short_text = st.text(max_size=30).map(
    lambda s: s.encode()[:255].decode(errors="ignore")
)
ascii_names = st.text("abcdefghijklmnopqrstuvwxyz.-_:", max_size=30)
small_tables = st.dictionaries(
    st.text(max_size=8), st.one_of(st.integers(-1000, 1000), st.text(max_size=8))
)

methods = st.one_of(
    st.builds(spec.Basic.Ack, st.integers(0, 2**63 - 1), st.booleans()),
    st.builds(
        spec.Basic.Publish,
        exchange=ascii_names,
        routing_key=short_text,
        mandatory=st.booleans(),
    ),
    st.builds(spec.Queue.Declare, queue=ascii_names, arguments=small_tables),
    st.builds(
        spec.Channel.Close,
        st.integers(200, 599),
        short_text,
        st.integers(0, 90),
        st.integers(0, 200),
    ),
    st.builds(spec.Basic.Qos, prefetch_count=st.integers(0, 65535)),
    st.just(spec.Tx.Commit()),
)
properties = st.builds(
    spec.Basic.Properties,
    content_type=st.none() | short_text,
    headers=st.none() | small_tables,
    delivery_mode=st.none() | st.sampled_from([1, 2]),
    message_id=st.none() | short_text,
)
frame_values = st.one_of(
    methods,
    st.builds(ContentHeader, st.just(0), st.integers(0, 2**40), properties),
    st.binary(min_size=1, max_size=300).map(ContentBody),
    st.just(Heartbeat()),
)
frame_lists = st.lists(st.tuples(channels, frame_values), min_size=1, max_size=12)


def marshal(value: Any, channel: int) -> bytes:
    if isinstance(value, Heartbeat):
        return frames.HEARTBEAT_FRAME  # pamqp writes heartbeats on channel 0
    return pamqp_frame.marshal(value, channel)


def pamqp_read(data: bytes) -> list[tuple[int, Any]]:
    read = []
    while data:
        used, channel, value = pamqp_frame.unmarshal(data)
        read.append((channel, value))
        data = data[used:]
    return read


def fields(value: Any) -> Any:
    if isinstance(value, Heartbeat):
        return Heartbeat
    if isinstance(value, ContentBody):
        return value.value
    if isinstance(value, ContentHeader):
        return value.body_size, dict(value.properties)
    return type(value), dict(value)


def feed(data: bytes, cuts: list[int], frame_max: int) -> list[frames.Frame]:
    """Split ``data`` arriving in pieces, as the connection machine does."""
    buf = bytearray()
    out: list[frames.Frame] = []
    points = sorted({c % (len(data) + 1) for c in cuts} | {len(data)})
    start = 0
    for point in points:
        buf += data[start:point]
        start = point
        got, used = frames.split_frames(buf, frame_max)
        del buf[:used]
        out += got
    assert not buf
    return out


# split_frames


@given(frame_lists, st.lists(st.integers(0, 10**6), max_size=20))
def test_split_frames_in_random_pieces_equals_pamqp(
    values: list[tuple[int, Any]], cuts: list[int]
) -> None:
    data = b"".join(marshal(value, channel) for channel, value in values)
    split = feed(data, cuts, 131072)
    reference = pamqp_read(data)
    assert len(split) == len(reference) == len(values)
    kinds = {Heartbeat: 8, ContentHeader: 2, ContentBody: 3}
    for (ftype, channel, payload), (ref_channel, ref_value) in zip(
        split, reference, strict=True
    ):
        assert channel == ref_channel
        assert ftype == kinds.get(type(ref_value), 1)
        rebuilt = frames.build_frame(ftype, channel, payload)
        assert fields(pamqp_read(rebuilt)[0][1]) == fields(ref_value)
    assert b"".join(frames.build_frame(*f) for f in split) == data


@given(st.binary(max_size=500))
def test_split_frames_keeps_an_incomplete_frame_for_later(payload: bytes) -> None:
    frame = frames.build_frame(frames.FRAME_BODY, 1, payload)
    for cut in range(len(frame)):
        assert frames.split_frames(bytearray(frame[:cut]), 4096) == ([], 0)
    assert frames.split_frames(bytearray(frame), 4096) == (
        [(3, 1, payload)],
        len(frame),
    )


@given(st.integers(4096, 2**20), st.integers(1, 2**20))
def test_split_frames_refuses_a_frame_over_frame_max(
    frame_max: int, excess: int
) -> None:
    size = frame_max - frames.FRAME_OVERHEAD + excess
    head = struct.pack(">BHI", frames.FRAME_BODY, 1, size)
    # refused from its 7-byte head on, before the payload arrives
    with pytest.raises(FrameError) as raised:
        frames.split_frames(bytearray(head), frame_max)
    assert raised.value.reply_code == 501
    assert "exceeds frame_max" in raised.value.text


def test_split_frames_takes_a_frame_of_exactly_frame_max() -> None:
    frame = frames.build_frame(frames.FRAME_BODY, 1, b"x" * (4096 - 8))
    assert len(frame) == 4096
    assert frames.split_frames(bytearray(frame), 4096)[1] == 4096


@given(
    st.binary(min_size=1, max_size=100),
    st.integers(0, 254).map(lambda b: b + (b >= 0xCE)),
)
def test_split_frames_refuses_a_bad_frame_end(payload: bytes, end: int) -> None:
    good = frames.build_frame(frames.FRAME_BODY, 1, b"ok")
    bad = frames.build_frame(frames.FRAME_BODY, 1, payload)[:-1] + bytes((end,))
    with pytest.raises(FrameError, match="frame-end") as raised:
        frames.split_frames(bytearray(good + bad), 4096)
    assert raised.value.reply_code == 501
    with pytest.raises(UnmarshalingException, match="Last byte"):
        pamqp_frame.unmarshal(bad)


def test_split_frames_takes_a_heartbeat() -> None:
    assert frames.split_frames(bytearray(frames.HEARTBEAT_FRAME), 4096) == (
        [(8, 0, b"")],
        8,
    )
    assert isinstance(pamqp_read(frames.HEARTBEAT_FRAME)[0][1], Heartbeat)


# builders


@given(channels, methods)
def test_build_method_equals_pamqp(channel: int, method: Any) -> None:
    assert frames.build_method(channel, method) == pamqp_frame.marshal(method, channel)


@pytest.mark.parametrize("name", ["café", "a b!", "\x00", "名前"])
def test_build_method_sends_names_pamqp_would_refuse(name: str) -> None:
    declare_ok = spec.Queue.DeclareOk(message_count=3, consumer_count=1)
    declare_ok.queue = name
    built = frames.build_method(2, declare_ok)
    read = pamqp_read(built)
    assert read[0][0] == 2
    assert (read[0][1].queue, read[0][1].message_count) == (name, 3)
    returned = spec.Basic.Return(312, "NO_ROUTE", routing_key="k")
    returned.exchange = name
    assert pamqp_read(frames.build_method(1, returned))[0][1].exchange == name


def test_build_method_still_refuses_values_out_of_range() -> None:
    with pytest.raises(TypeError):
        frames.build_method(1, spec.Basic.Qos(prefetch_count=-1))


@given(
    channels,
    properties,
    st.binary(max_size=3000),
    st.one_of(st.integers(9, 700), st.sampled_from([4096, 131072])),
)
def test_build_content_equals_pamqp_split_at_frame_max(
    channel: int, props: Any, body: bytes, frame_max: int
) -> None:
    header = ContentHeader(0, len(body), props)
    built = frames.build_content(channel, header.marshal(), body, frame_max)
    chunk = frame_max - frames.FRAME_OVERHEAD
    expected = [pamqp_frame.marshal(header, channel)] + [
        pamqp_frame.marshal(ContentBody(body[i : i + chunk]), channel)
        for i in range(0, len(body), chunk)
    ]
    assert b"".join(built) == b"".join(expected)
    # the header frame is sent whole, whatever its size
    assert all(len(part) <= chunk for part in built[4::3])


def test_build_content_of_an_empty_body_is_the_header_alone() -> None:
    header = ContentHeader(0, 0, spec.Basic.Properties()).marshal()
    built = b"".join(frames.build_content(5, header, b"", 4096))
    assert built == frames.build_frame(frames.FRAME_HEADER, 5, header)
