"""The SQL database behind the definitions store: its URL, its engine, and
one line to say why it cannot be opened or read.

Three kinds of failure, each a StoreUnavailable whose message names the
SQLite file, or the URL with its password hidden:

- a URL no async SQLAlchemy driver takes (BadStoreURL): it does not
  parse, names an unknown database (``foo://``), or a driver that is not
  async (``sqlite:///x``). Found without connecting, so that the broker
  can call it a configuration error;
- a database that cannot be opened: its driver is not installed, the
  server refuses the connection, SQLite's file is damaged, a directory, or
  not readable;
- a database found unreadable later, by a query: a damaged page of a
  table, a connection lost.

SQLAlchemy's error stays attached as the cause and is logged at debug
level, with its traceback.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from .store import BadStoreURL, StoreUnavailable
from .values import dumps

log = logging.getLogger("amqpd.definitions")

# SQLite's own names for a file that is not, or no longer, a database
_SQLITE_DAMAGE = frozenset({"SQLITE_NOTADB", "SQLITE_CORRUPT"})
_SQLITE_DAMAGE_HINT = (
    "restore it from a backup or an export, or move it away to start empty"
)


def open_engine(url: str) -> tuple[AsyncEngine, str]:
    """An engine for `url` (it has not connected yet), and how messages
    name the store. BadStoreURL if no async SQLAlchemy driver takes the
    URL; StoreUnavailable if its driver is not installed."""
    try:
        parsed = sa.make_url(url)
    except (sa.exc.ArgumentError, ValueError):
        # not echoed: a URL that does not parse may still hold a password
        raise BadStoreURL(
            "the URL does not parse (expected dialect+driver://...)"
        ) from None
    shown = parsed.render_as_string(hide_password=True)
    try:
        engine = create_async_engine(parsed, json_serializer=dumps)
    except sa.exc.NoSuchModuleError:
        raise BadStoreURL(
            f"{shown}: SQLAlchemy has no database {parsed.drivername!r}"
        ) from None
    except sa.exc.SQLAlchemyError as exc:  # a driver that is not async
        raise BadStoreURL(
            f"{shown}: {exc} (use e.g. sqlite+aiosqlite or postgresql+asyncpg)"
        ) from None
    except ImportError as exc:
        problem = f"its driver is not installed ({exc})"
        if parsed.get_backend_name() == "postgresql":
            problem += "; amqpd[postgresql] installs asyncpg: postgresql+asyncpg://"
        raise StoreUnavailable(f"{_location(parsed)}: {problem}") from None
    return engine, _location(parsed)


def check_sql_url(url: str) -> None:
    """BadStoreURL if no async SQLAlchemy driver takes `url`; connects to
    nothing. A driver that is not installed is left to connect()."""
    try:
        engine, _where = open_engine(url)
    except BadStoreURL:
        raise
    except StoreUnavailable:
        return
    engine.sync_engine.dispose()


def _location(url: sa.URL) -> str:
    """How messages name the store: a SQLite file's path, else the URL."""
    if url.get_backend_name() == "sqlite" and url.database:
        return url.database
    return url.render_as_string(hide_password=True)


def check_sqlite_file(url: sa.URL) -> None:
    """StoreUnavailable if a SQLite store's path holds something that
    cannot be opened for reading and writing (a directory, a symlink loop,
    a file the user may not write). SQLite would say only "unable to open
    database file"; the system says why. A missing file is fine."""
    path = url.database
    if url.get_backend_name() != "sqlite" or not path or path == ":memory:":
        return
    if path.startswith("file:") or not os.path.lexists(path):
        return
    try:
        os.close(os.open(path, os.O_RDWR))
    except OSError as exc:
        hint = _SQLITE_DAMAGE_HINT
        if isinstance(exc, PermissionError):
            hint = "the broker's user must be able to read and write it"
        reason = (exc.strerror or str(exc)).lower()
        raise StoreUnavailable(f"{path}: {reason} ({hint})") from None


def _unavailable(where: str, exc: BaseException) -> StoreUnavailable:
    cause: BaseException = exc
    if isinstance(exc, sa.exc.DBAPIError) and exc.orig is not None:
        cause = exc.orig
    problem = "; ".join(str(cause).split("\n")) or type(cause).__name__
    if getattr(cause, "sqlite_errorname", None) in _SQLITE_DAMAGE:
        problem = f"{problem} ({_SQLITE_DAMAGE_HINT})"
    log.debug("definitions store %s: %s", where, problem, exc_info=exc)
    return StoreUnavailable(f"{where}: {problem}")


def _unreadable(exc: BaseException) -> bool:
    """Whether a store operation failed because the database cannot be
    reached or read, rather than because of what was asked of it."""
    unreachable = (OSError, sa.exc.OperationalError, sa.exc.InterfaceError)
    return isinstance(exc, unreachable) or type(exc) is sa.exc.DatabaseError


@contextmanager
def reporting(where: str, *, opening: bool = False) -> Iterator[None]:
    """Turn a database that cannot be opened or read into StoreUnavailable;
    while opening, any SQLAlchemy or driver error means that."""
    try:
        yield
    except (sa.exc.SQLAlchemyError, OSError) as exc:
        if opening or _unreadable(exc):
            raise _unavailable(where, exc) from exc
        raise
