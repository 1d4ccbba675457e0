"""The pager's scratch files, on real files: bodies read back intact, and
disk use that follows the live bodies (compaction) however many messages
flow past a few long-lived ones."""

from __future__ import annotations

import struct
from pathlib import Path

from amqpd.broker.message import Message
from amqpd.broker.paging import Pager
from amqpd.codec import properties

SEGMENT = 4096
BODY = 100


def make(i: int) -> Message:
    body = (b"%07d|" % i) * (BODY // 8) + b"#" * (BODY % 8)
    header = struct.pack(">HHQH", 60, 0, len(body), 0)
    return Message("", "q", b"\x00\x01q", header, body, properties.scan(header))


def body_of(i: int) -> bytes:
    body = make(i).body
    assert body is not None
    return body


def on_disk(directory: Path) -> int:
    return sum(path.stat().st_size for path in directory.iterdir())


def test_long_lived_bodies_do_not_pin_whole_scratch_files(tmp_path: Path) -> None:
    pager = Pager(tmp_path / "scratch", budget=0, segment_size=SEGMENT)
    pinned: dict[int, Message] = {}
    for i in range(3000):
        message = make(i)
        pager.admit(message)
        assert message.body is None  # paged out at once: no budget
        if i % 40 == 0:
            pinned[i] = message  # a slow queue keeps every 40th
        # every other message is delivered and let go (refcount frees it)
    del message

    live = len(pinned) * BODY
    assert pager.paged == live and pager.paged_messages == len(pinned)
    assert pager.compactions > 0
    # without compaction every 4 KiB file would stay: 3000 x 100 B on disk
    assert on_disk(tmp_path / "scratch") <= live / 0.25 + 2 * SEGMENT
    assert pager.scratch_bytes == on_disk(tmp_path / "scratch")
    assert all(m.content() == body_of(i) for i, m in pinned.items())

    pinned.clear()
    assert pager.paged == pager.paged_messages == 0


def test_copies_sharing_a_body_follow_it_when_it_moves(tmp_path: Path) -> None:
    pager = Pager(tmp_path / "scratch", budget=0, segment_size=SEGMENT)
    kept: list[tuple[int, Message, Message]] = []
    for i in range(600):
        message = make(i)
        pager.admit(message)
        if i % 25 == 0:
            copy = message.derive("dlx", "dead", b"\x03dlx\x04dead", message.header)
            assert copy.page is message.page
            kept.append((i, message, copy))
    del message, copy
    assert pager.compactions > 0
    assert pager.paged_messages == 2 * len(kept)
    assert all(m.content() == c.content() == body_of(i) for i, m, c in kept)

    # the original goes first (acked); the copy still reads its body
    survivors = [(i, c) for i, _m, c in kept]
    kept.clear()
    before = pager.compactions
    for i in range(600, 1200):  # more traffic, more compactions
        pager.admit(make(i))
    assert pager.compactions > before
    assert all(c.content() == body_of(i) for i, c in survivors)
    survivors.clear()
    assert pager.paged == pager.paged_messages == 0
    assert on_disk(tmp_path / "scratch") <= 2 * SEGMENT


def test_bodies_within_the_budget_stay_in_memory(tmp_path: Path) -> None:
    pager = Pager(tmp_path / "scratch", budget=10 * BODY, segment_size=SEGMENT)
    messages = [make(i) for i in range(15)]
    for m in messages:
        pager.admit(m)
    del m
    assert [m.body is not None for m in messages] == [True] * 10 + [False] * 5
    assert pager.in_memory == 10 * BODY and pager.paged == 5 * BODY
    assert [m.content() for m in messages] == [body_of(i) for i in range(15)]
    messages.clear()
    assert pager.in_memory == pager.paged == 0
    pager.close()
    assert not (tmp_path / "scratch").exists()
