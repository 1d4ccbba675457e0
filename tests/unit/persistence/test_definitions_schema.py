"""The SQL schema: created on first open, versioned, migrated forward."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
import sqlalchemy as sa

from amqpd.persistence.definitions import (
    DEFINITIONS_FILE_NAME,
    SCHEMA_VERSION,
    DefinitionsStore,
    Queue,
    SchemaTooNew,
    StoreUnavailable,
    VHost,
    schema,
    sqlite_url,
)

pytestmark = pytest.mark.anyio


def versions(data_dir: Path) -> list[int]:
    with sqlite3.connect(data_dir / DEFINITIONS_FILE_NAME) as db:
        rows = db.execute("SELECT version FROM amqpd_schema_version ORDER BY 1")
        return [version for (version,) in rows]


async def test_first_open_creates_every_table_at_the_current_version(
    tmp_path: Path,
) -> None:
    async with DefinitionsStore.open(sqlite_url(tmp_path)):
        pass

    assert versions(tmp_path) == list(range(1, SCHEMA_VERSION + 1))
    with sqlite3.connect(tmp_path / DEFINITIONS_FILE_NAME) as db:
        tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master")}
        (journal_mode,) = db.execute("PRAGMA journal_mode").fetchone()
    assert set(schema.metadata.tables) <= tables
    assert journal_mode == "wal"


async def test_reopening_runs_no_migration_again(tmp_path: Path) -> None:
    for _ in range(3):
        async with DefinitionsStore.open(sqlite_url(tmp_path)) as store:
            assert await store.schema_version() == SCHEMA_VERSION

    assert versions(tmp_path) == list(range(1, SCHEMA_VERSION + 1))


async def test_a_later_migration_runs_once_on_an_older_database(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with DefinitionsStore.open(sqlite_url(tmp_path)) as store:
        await store.put_vhost(VHost("/"))
        await store.put_queue(Queue("/", "q"))
    calls: list[int] = []

    def add_column(connection: sa.Connection) -> None:
        calls.append(1)
        connection.execute(
            sa.text("ALTER TABLE amqpd_queues ADD COLUMN note TEXT DEFAULT ''")
        )

    later = SCHEMA_VERSION + 1
    monkeypatch.setattr(
        schema, "MIGRATIONS", (*schema.MIGRATIONS, (later, "add a note", add_column))
    )
    monkeypatch.setattr(schema, "SCHEMA_VERSION", later)
    for _ in range(2):
        async with DefinitionsStore.open(sqlite_url(tmp_path)) as store:
            assert await store.schema_version() == later
            assert [q.name for q in (await store.load()).queues] == ["q"]

    assert calls == [1]
    assert versions(tmp_path)[-1] == later


async def test_a_failed_migration_leaves_the_old_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with DefinitionsStore.open(sqlite_url(tmp_path)):
        pass

    def broken(connection: sa.Connection) -> None:
        connection.execute(sa.text("ALTER TABLE no_such_table ADD COLUMN x TEXT"))

    later = SCHEMA_VERSION + 1
    monkeypatch.setattr(
        schema, "MIGRATIONS", (*schema.MIGRATIONS, (later, "broken", broken))
    )
    monkeypatch.setattr(schema, "SCHEMA_VERSION", later)
    # one line for the operator, the database's error kept as the cause
    with pytest.raises(StoreUnavailable, match="no such table: no_such_table") as info:
        await DefinitionsStore.connect(sqlite_url(tmp_path))
    assert isinstance(info.value.__cause__, sa.exc.OperationalError)

    assert versions(tmp_path) == list(range(1, SCHEMA_VERSION + 1))


async def test_a_database_from_a_newer_release_is_refused(tmp_path: Path) -> None:
    async with DefinitionsStore.open(sqlite_url(tmp_path)):
        pass
    with sqlite3.connect(tmp_path / DEFINITIONS_FILE_NAME) as db:
        db.execute("INSERT INTO amqpd_schema_version VALUES (99, 'future')")

    with pytest.raises(SchemaTooNew, match="version 99"):
        await DefinitionsStore.connect(sqlite_url(tmp_path))
