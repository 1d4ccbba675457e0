"""``amqpd journal check``: exit 0 clean, 1 damage, 2 cannot check."""

from __future__ import annotations

from pathlib import Path

import pytest

from amqpd.persistence.journal import (
    DiskJournal,
    EnqueueRecord,
    Keyring,
    MessageRecord,
)
from amqpd.persistence.journal.cli import main

KEY = bytes(range(32))


def data_dir_with_journal(tmp_path: Path, keyring: Keyring | None = None) -> Path:
    journal = DiskJournal(tmp_path / "journal", keyring=keyring)
    journal.recover()
    for mid in range(1, 4):
        journal.append(MessageRecord(mid, "ex", "rk", b"h", b"body"))
        journal.append(EnqueueRecord("q", mid, mid))
    journal.close()
    return tmp_path


def test_clean_journal_exits_0(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data_dir = data_dir_with_journal(tmp_path)

    assert main(["check", "--data-dir", str(data_dir)]) == 0

    out = capsys.readouterr().out
    assert "3 live messages in 1 queues" in out
    assert out.strip().endswith("clean")


def test_damage_exits_1_and_names_file_and_offset(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data_dir = data_dir_with_journal(tmp_path)
    segment = data_dir / "journal" / "00000001.seg"
    size = segment.stat().st_size
    segment.write_bytes(segment.read_bytes() + b"\xa5torn")

    assert main(["check", "--data-dir", str(data_dir)]) == 1

    out = capsys.readouterr().out
    assert f"{segment}: torn tail at offset {size}, 5 bytes" in out
    assert segment.stat().st_size == size + 5


def test_keys_are_read_from_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data_dir = data_dir_with_journal(tmp_path, Keyring({"k1": KEY}, active="k1"))
    raw, hexed = tmp_path / "raw.key", tmp_path / "hex.key"
    raw.write_bytes(KEY)
    hexed.write_text(KEY.hex() + "\n")

    assert main(["check", "--data-dir", str(data_dir)]) == 2
    assert "no keyring" in capsys.readouterr().err
    assert main(["check", "--data-dir", str(data_dir), "--key", f"k1={raw}"]) == 0
    assert main(["check", "--data-dir", str(data_dir), "--key", f"k1={hexed}"]) == 0


def test_missing_journal_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["check", "--data-dir", str(tmp_path / "nowhere")]) == 2
    assert "no journal directory" in capsys.readouterr().err


def test_a_directory_holding_segments_is_taken_as_the_journal(tmp_path: Path) -> None:
    data_dir = data_dir_with_journal(tmp_path)
    assert main(["check", "--data-dir", str(data_dir / "journal")]) == 0


def test_running_journal_is_noted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data_dir = data_dir_with_journal(tmp_path)
    running = DiskJournal(data_dir / "journal")
    running.recover()
    try:
        assert main(["check", "--data-dir", str(data_dir)]) == 0
    finally:
        running.close()
    assert "in use" in capsys.readouterr().err
