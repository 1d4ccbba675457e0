"""``amqpd journal check`` on journals a real broker wrote.

Exit 0 clean, 1 damage (each place named by file and offset), 2 the check
cannot run. The check never changes a file; the broker's own recovery
then cuts a torn tail off and steps over corrupt bytes.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pika
import pytest

from amqpd.persistence.journal import format as fmt
from amqpd.testing import BrokerThread

MESSAGES = 60
SEGMENT_SIZE = 4096
PERSISTENT = pika.BasicProperties(delivery_mode=2)


def journal_check(data_dir: Path, *keys: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "amqpd", "journal", "check"]
    argv += ["--data-dir", str(data_dir)]
    for key in keys:
        argv += ["--key", key]
    return subprocess.run(argv, capture_output=True, text=True, timeout=30)


def fill(broker: BrokerThread, count: int = MESSAGES) -> None:
    conn = pika.BlockingConnection(pika.URLParameters(broker.url))
    ch = conn.channel()
    ch.queue_declare("q", durable=True)
    ch.confirm_delivery()
    for n in range(count):
        ch.basic_publish("", "q", f"{n:04d}".encode() * 25, PERSISTENT)
    conn.close()


def ready_count(broker: BrokerThread) -> int:
    conn = pika.BlockingConnection(pika.URLParameters(broker.url))
    count = conn.channel().queue_declare("q", passive=True).method.message_count
    conn.close()
    return int(count)


def segments(data_dir: Path) -> list[Path]:
    return sorted((data_dir / "journal").glob("*.seg"))


def frames(path: Path) -> list[fmt.Frame]:
    """The intact records of a segment, in file order."""
    data = path.read_bytes()
    out, offset = [], fmt.SEGMENT_HEADER_SIZE
    while (frame := fmt.read_frame(data, offset)) is not None:
        out.append(frame)
        offset += frame.size
    return out


def snapshot(data_dir: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((data_dir / "journal").iterdir())}


@pytest.fixture
def data_dir(tmp_path: Path) -> Iterator[Path]:
    """The data directory of a stopped broker: 60 messages over a few segments."""
    path = tmp_path / "data"
    with BrokerThread(data_dir=path, journal_segment_size=SEGMENT_SIZE) as broker:
        fill(broker)
    yield path


def test_check_of_a_stopped_broker_is_clean(data_dir: Path) -> None:
    found = segments(data_dir)
    assert len(found) >= 3

    checked = journal_check(data_dir)

    assert checked.returncode == 0, checked.stderr
    lines = checked.stdout.splitlines()
    assert lines[0] == (
        f"journal {data_dir / 'journal'}: {len(found)} segments, "
        f"{MESSAGES * 2} records, {MESSAGES} live messages in 1 queues"
    )
    assert lines[-1] == "clean"
    assert checked.stderr == ""


def test_truncated_last_segment_is_a_torn_tail_that_recovery_cuts_off(
    data_dir: Path,
) -> None:
    last = segments(data_dir)[-1]
    final = frames(last)[-1]
    size = last.stat().st_size
    os.truncate(last, size - 5)
    before = snapshot(data_dir)

    checked = journal_check(data_dir)

    assert checked.returncode == 1
    torn = size - 5 - final.offset
    assert checked.stdout.splitlines()[1:] == [
        f"{last}: torn tail at offset {final.offset}, {torn} bytes",
        f"damaged: 1 places, {torn} bytes",
    ]
    assert snapshot(data_dir) == before  # the check changes nothing

    with BrokerThread(data_dir=data_dir, journal_segment_size=SEGMENT_SIZE) as broker:
        # the cut record was the last message's enqueue
        assert ready_count(broker) == MESSAGES - 1
    assert journal_check(data_dir).returncode == 0


def test_flipped_byte_is_corrupt_bytes_named_by_file_and_offset(
    data_dir: Path,
) -> None:
    first = segments(data_dir)[0]
    message = next(f for f in frames(first) if f.kind == 1)  # a MESSAGE record
    data = bytearray(first.read_bytes())
    data[message.offset + fmt.HEADER_SIZE + len(message.payload) // 2] ^= 0x40
    first.write_bytes(bytes(data))
    before = snapshot(data_dir)

    checked = journal_check(data_dir)

    assert checked.returncode == 1
    assert checked.stdout.splitlines()[1:] == [
        f"{first}: corrupt bytes at offset {message.offset}, {message.size} bytes",
        f"damaged: 1 places, {message.size} bytes",
    ]
    assert snapshot(data_dir) == before

    # the broker starts anyway and loses exactly that message
    with BrokerThread(data_dir=data_dir, journal_segment_size=SEGMENT_SIZE) as broker:
        assert ready_count(broker) == MESSAGES - 1
    # skipped, not rewritten: the place is reported until the segment goes
    assert journal_check(data_dir).returncode == 1


def test_check_beside_a_running_broker_says_the_journal_is_in_use(
    data_dir: Path,
) -> None:
    with BrokerThread(data_dir=data_dir, journal_segment_size=SEGMENT_SIZE):
        checked = journal_check(data_dir)
    assert checked.returncode == 0
    assert "is in use by a running journal" in checked.stderr


def test_check_of_an_encrypted_journal_needs_its_key(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    key, wrong = tmp_path / "k1.key", tmp_path / "wrong.key"
    key.write_bytes(os.urandom(32))
    wrong.write_text(os.urandom(32).hex())
    with BrokerThread(data_dir=data_dir, journal_keys=[f"k1={key}"]) as broker:
        fill(broker, 3)

    assert journal_check(data_dir, f"k1={key}").returncode == 0
    without = journal_check(data_dir)
    assert without.returncode == 2
    assert "encrypted with key 'k1'" in without.stderr
    wrong_key = journal_check(data_dir, f"k1={wrong}")
    assert wrong_key.returncode == 2
    assert "key 'k1' does not decrypt the record" in wrong_key.stderr


def test_check_of_a_directory_without_journal_exits_2(tmp_path: Path) -> None:
    checked = journal_check(tmp_path / "nowhere")
    assert checked.returncode == 2
    assert checked.stderr.startswith("amqpd journal check: ")
    assert "nowhere" in checked.stderr


def test_check_with_the_new_key_only_names_the_old_key_still_needed(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "data"
    old, new = tmp_path / "old.key", tmp_path / "new.key"
    old.write_bytes(os.urandom(32))
    new.write_bytes(os.urandom(32))
    with BrokerThread(data_dir=data_dir, journal_keys=[f"old={old}"]) as broker:
        fill(broker, 3)
    rotated = [f"new={new}", f"old={old}"]
    with BrokerThread(data_dir=data_dir, journal_keys=rotated) as broker:
        fill(broker, 3)

    assert journal_check(data_dir, *rotated).returncode == 0
    only_new = journal_check(data_dir, f"new={new}")
    assert only_new.returncode == 2
    assert "no key 'old' in the keyring" in only_new.stderr

    # once the old messages are consumed, their segment goes with them
    old_segment = segments(data_dir)[0]
    with BrokerThread(data_dir=data_dir, journal_keys=rotated) as broker:
        conn = pika.BlockingConnection(pika.URLParameters(broker.url))
        ch = conn.channel()
        for _ in range(3):
            method, _props, _body = ch.basic_get("q")
            ch.basic_ack(method.delivery_tag)
        conn.close()
        deadline = time.monotonic() + 5
        while old_segment.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
    assert not old_segment.exists()
    assert journal_check(data_dir, f"new={new}").returncode == 0
