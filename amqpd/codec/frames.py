"""Frame splitting and frame building.

A frame on the wire is: type (octet), channel (short), size (long), payload,
frame-end (0xCE). ``split_frames`` cuts every whole frame out of a receive
buffer in one pass; the builders produce the bytes of outgoing frames.
"""

from __future__ import annotations

import functools
import struct

from pamqp import base as pamqp_base

from amqpd.errors import FrameError

FRAME_METHOD = 1
FRAME_HEADER = 2
FRAME_BODY = 3
FRAME_HEARTBEAT = 8
FRAME_END = 0xCE
FRAME_END_BYTE = b"\xce"
FRAME_OVERHEAD = 8  # 7 bytes of frame header and the frame-end octet

PROTOCOL_HEADER = b"AMQP\x00\x00\x09\x01"
HEARTBEAT_FRAME = b"\x08\x00\x00\x00\x00\x00\x00\xce"

FRAME_HEAD = struct.Struct(">BHI")
METHOD_ID = struct.Struct(">HH")
assert FRAME_HEAD.size == 7 and METHOD_ID.size == 4

Frame = tuple[int, int, bytes]


def split_frames(buf: bytearray, frame_max: int) -> tuple[list[Frame], int]:
    """Cut every whole frame out of ``buf``.

    Returns the frames as (type, channel, payload) and the number of bytes
    consumed; the caller drops those bytes and keeps the rest for later.
    Raises FrameError for a frame larger than ``frame_max`` or a bad
    frame-end octet.
    """
    frames: list[Frame] = []
    pos = 0
    end = len(buf)
    unpack_from = FRAME_HEAD.unpack_from
    while end - pos >= 7:
        ftype, channel, size = unpack_from(buf, pos)
        if size + FRAME_OVERHEAD > frame_max:
            raise FrameError(
                f"frame of {size + FRAME_OVERHEAD} bytes exceeds frame_max {frame_max}"
            )
        stop = pos + 7 + size
        if stop >= end:
            break
        if buf[stop] != FRAME_END:
            raise FrameError(f"bad frame-end octet {buf[stop]:#x}")
        frames.append((ftype, channel, bytes(buf[pos + 7 : stop])))
        pos = stop + 1
    return frames, pos


def build_frame(ftype: int, channel: int, payload: bytes) -> bytes:
    """The bytes of one frame."""
    return FRAME_HEAD.pack(ftype, channel, len(payload)) + payload + FRAME_END_BYTE


def build_method(channel: int, method: pamqp_base.Frame) -> bytes:
    """The bytes of a method frame for a pamqp method object.

    pamqp's checks allow only ASCII queue and exchange names, RabbitMQ any
    UTF-8 name: a name the broker accepted is sent even where pamqp refuses.
    """
    try:
        args = method.marshal()
    except ValueError:
        args = _unchecked(method).marshal()
    payload = struct.pack(">I", method.index) + args
    return (
        FRAME_HEAD.pack(FRAME_METHOD, channel, len(payload)) + payload + FRAME_END_BYTE
    )


_UNCHECKED: dict[type[pamqp_base.Frame], type[pamqp_base.Frame]] = {}


def _unchecked(method: pamqp_base.Frame) -> pamqp_base.Frame:
    """A copy of ``method`` whose marshal skips pamqp's validate()."""
    cls = type(method)
    sub = _UNCHECKED.get(cls)
    if sub is None:
        sub = _UNCHECKED[cls] = type(cls.__name__, (cls,), {"validate": _no_check})
    copy = sub.__new__(sub)
    for name in cls.__slots__:
        setattr(copy, name, getattr(method, name))
    return copy


def _no_check(self: pamqp_base.Frame) -> None:
    return None


def build_content(
    channel: int, header: bytes, body: bytes, frame_max: int
) -> list[bytes]:
    """Content header and body frames, bodies split to fit ``frame_max``."""
    pack = FRAME_HEAD.pack
    parts = [pack(FRAME_HEADER, channel, len(header)), header, FRAME_END_BYTE]
    size = len(body)
    if size:
        chunk = frame_max - FRAME_OVERHEAD
        if size <= chunk:
            parts += (pack(FRAME_BODY, channel, size), body, FRAME_END_BYTE)
        else:
            view = memoryview(body)
            for start in range(0, size, chunk):
                piece = bytes(view[start : start + chunk])
                parts += (pack(FRAME_BODY, channel, len(piece)), piece, FRAME_END_BYTE)
    return parts


@functools.lru_cache(maxsize=4096)
def fixed_method(channel: int, method_class: type[pamqp_base.Frame]) -> bytes:
    """The bytes of an argument-less method frame (open-ok, close-ok...),
    built once per channel number: connection churn builds them a lot."""
    return build_method(channel, method_class())
