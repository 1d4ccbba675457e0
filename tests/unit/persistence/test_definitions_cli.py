"""`amqpd definitions export|import` on a stopped broker's data directory."""

from __future__ import annotations

import fcntl
import io
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import anyio
import pytest

from amqpd.persistence.definitions import (
    DEFINITIONS_FILE_NAME,
    Definitions,
    DefinitionsStore,
    Queue,
    VHost,
    sqlite_url,
)
from amqpd.persistence.definitions.cli import LOCK_FILE_NAME, main

DOCUMENT = {
    "vhosts": [{"name": "/"}],
    "queues": [{"name": "q", "vhost": "/", "arguments": {"x-max-length": 5}}],
    "exchanges": [{"name": "amq.direct", "vhost": "/", "type": "direct"}],
}


@contextmanager
def running_broker(data_dir: Path) -> Iterator[None]:
    """Hold the data directory lock the way the broker does."""
    data_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(data_dir / LOCK_FILE_NAME, os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        yield
    finally:
        os.close(fd)


def load(data_dir: Path) -> Definitions:
    async def read() -> Definitions:
        async with DefinitionsStore.open(sqlite_url(data_dir)) as store:
            return await store.load()

    return anyio.run(read)


def write(path: Path, document: object) -> str:
    path.write_text(json.dumps(document))
    return str(path)


def test_import_then_export_round_trips_through_the_data_dir(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data"
    source = write(tmp_path / "in.json", DOCUMENT)

    assert main(["import", source, "--data-dir", str(data)]) == 0
    assert main(["export", str(tmp_path / "out.json"), "--data-dir", str(data)]) == 0

    assert load(data) == Definitions(
        vhosts=(VHost("/"),), queues=(Queue("/", "q", arguments={"x-max-length": 5}),)
    )
    exported = json.loads((tmp_path / "out.json").read_text())
    assert exported["queues"][0]["arguments"] == {"x-max-length": 5}
    assert exported["exchanges"] == []
    err = capsys.readouterr().err
    assert "imported 1 vhosts" in err and "1 queues" in err
    assert "skipped exchange 'amq.direct'" in err


def test_stdin_and_stdout_stand_for_dash(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(json.dumps(DOCUMENT)))

    assert main(["import", "-", "--data-dir", str(tmp_path)]) == 0
    capsys.readouterr()
    assert main(["export", "-", "--data-dir", str(tmp_path)]) == 0

    assert json.loads(capsys.readouterr().out)["vhosts"][0]["name"] == "/"


@pytest.mark.parametrize("command", ["import", "export"])
def test_a_running_broker_is_left_alone(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    source = write(tmp_path / "in.json", DOCUMENT)
    assert main(["import", source, "--data-dir", str(tmp_path)]) == 0
    before = (tmp_path / DEFINITIONS_FILE_NAME).read_bytes()
    capsys.readouterr()

    with running_broker(tmp_path):
        assert main([command, source, "--data-dir", str(tmp_path)]) == 1

    assert "a broker is running" in capsys.readouterr().err
    assert (tmp_path / DEFINITIONS_FILE_NAME).read_bytes() == before
    assert json.loads(Path(source).read_text()) == DOCUMENT


def test_export_needs_an_existing_store(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = str(tmp_path / "out.json")

    assert main(["export", out, "--data-dir", str(tmp_path / "missing")]) == 1
    assert main(["export", out, "--data-dir", str(tmp_path)]) == 1

    err = capsys.readouterr().err
    assert "no data directory" in err and f"holds no {DEFINITIONS_FILE_NAME}" in err
    assert not (tmp_path / DEFINITIONS_FILE_NAME).exists()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "Expecting property name"),
        (json.dumps({"queues": [{"vhost": "/"}]}), "queues[0]: missing 'name'"),
        (json.dumps({"queues": [{"vhost": "nowhere", "name": "q"}]}), "no vhost"),
    ],
)
def test_a_bad_file_is_refused_and_the_store_is_unchanged(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str, message: str
) -> None:
    data = tmp_path / "data"
    (tmp_path / "bad.json").write_text(content)

    assert main(["import", str(tmp_path / "bad.json"), "--data-dir", str(data)]) == 1

    assert message in capsys.readouterr().err
    if (data / DEFINITIONS_FILE_NAME).exists():
        assert load(data) == Definitions()


def test_a_missing_file_is_an_error_not_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = str(tmp_path / "nope.json")

    assert main(["import", missing, "--data-dir", str(tmp_path)]) == 1
    assert "nope.json" in capsys.readouterr().err


def test_usage_errors_exit_2() -> None:
    with pytest.raises(SystemExit) as exited:
        main(["export", "out.json"])
    assert exited.value.code == 2
