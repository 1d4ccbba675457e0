"""The definitions store interface, shared by the SQL and in-memory stores.

Semantics every implementation keeps (the contract suite checks them):

- put_* inserts or replaces the record with the same key; delete_* returns
  whether something was there.
- Records that live in a vhost need the vhost; permissions also need the
  user. Putting one without raises NotFound.
- Deletes cascade: a vhost takes everything in it; a user takes its
  permissions; a queue takes the bindings to it; an exchange takes the
  bindings from and to it.
- merge() applies a whole Definitions in one transaction, kinds in the
  order of model.KINDS; if any record fails, nothing is applied.
- load() returns a consistent, immutable snapshot.

Writes are serialised inside one store object. Two processes writing one
database are not coordinated: the broker's data directory lock keeps a
second broker off a SQLite file, and nothing yet keeps two brokers from
sharing one server database.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from types import TracebackType

from .model import (
    Binding,
    Definitions,
    Exchange,
    GlobalParameter,
    Parameter,
    Permission,
    Policy,
    Queue,
    Record,
    TopicPermission,
    User,
    VHost,
)

DEFINITIONS_FILE_NAME = "definitions.sqlite3"
MEMORY_URL = "memory://"
SCHEMA_VERSION = 1
"""The schema version this release writes; schema.MIGRATIONS ends at it."""


class DefinitionsError(Exception):
    """Base of the store's own errors."""


class NotFound(DefinitionsError, LookupError):
    """A record refers to a vhost or user that the store does not hold."""


class SchemaTooNew(DefinitionsError):
    """The database was written by a newer amqpd with a newer schema."""


class StoreClosed(DefinitionsError):
    """The store was used after aclose()."""


class StoreUnavailable(DefinitionsError):
    """The database cannot be opened or read: a damaged or unreadable
    SQLite file, a server that cannot be reached, a driver not installed.
    The message is one line that names the file or the URL (password
    hidden) and the problem."""


class BadStoreURL(StoreUnavailable, ValueError):
    """The URL can never name a store: SQLAlchemy cannot parse it, knows no
    dialect of that name, or the driver it names is not an async one."""


def required_records(record: Record) -> list[tuple[str, str]]:
    """The (kind, name) of each vhost or user `record` needs to exist first."""
    needs: list[tuple[str, str]] = []
    if isinstance(record, Permission | TopicPermission):
        needs.append(("users", record.user))
    if not isinstance(record, VHost | User | GlobalParameter):
        needs.append(("vhosts", record.vhost))
    return needs


def missing(kind: str, name: str) -> NotFound:
    """The NotFound raised for a missing vhost or user, worded one way."""
    noun = "vhost" if kind == "vhosts" else "user"
    return NotFound(f"no {noun} {name!r}")


def sqlite_url(data_dir: str | Path) -> str:
    """The default store URL: a SQLite file in the data directory."""
    path = Path(data_dir).absolute() / DEFINITIONS_FILE_NAME
    return f"sqlite+aiosqlite:///{path}"


def check_url(url: str) -> None:
    """Raise BadStoreURL for a URL no store can be opened at, without
    opening anything, so that a configuration error is told apart from a
    store that is down or damaged."""
    if url == MEMORY_URL:
        return
    from .database import check_sql_url

    check_sql_url(url)


class DefinitionsStore(abc.ABC):
    """Durable definitions, behind an async resource.

    Open with `async with DefinitionsStore.open(url) as store`, or
    `store = await DefinitionsStore.connect(url)` and later `aclose()`.
    `url` is "memory://" for the in-memory store, or any SQLAlchemy async
    URL such as sqlite_url(data_dir) or "postgresql+asyncpg://...".
    """

    @staticmethod
    async def connect(url: str) -> DefinitionsStore:
        """Open the store at `url`, creating or migrating its schema."""
        if url == MEMORY_URL:
            from .memory import MemoryDefinitionsStore

            return MemoryDefinitionsStore()
        from .sql import SQLDefinitionsStore

        return await SQLDefinitionsStore.connect(url)

    @staticmethod
    @asynccontextmanager
    async def open(url: str) -> AsyncIterator[DefinitionsStore]:
        """Open the store at `url` for the length of an `async with`."""
        store = await DefinitionsStore.connect(url)
        try:
            yield store
        finally:
            await store.aclose()

    async def __aenter__(self) -> DefinitionsStore:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    @abc.abstractmethod
    async def aclose(self) -> None:
        """Release the store's connections; further calls are errors."""

    @abc.abstractmethod
    async def schema_version(self) -> int:
        """The schema version the stored data is at."""

    @abc.abstractmethod
    async def load(self) -> Definitions:
        """A snapshot of everything stored."""

    @abc.abstractmethod
    async def merge(self, definitions: Definitions) -> None:
        """Put every record of `definitions`, all or nothing."""

    @abc.abstractmethod
    async def put_vhost(self, vhost: VHost) -> None: ...

    @abc.abstractmethod
    async def delete_vhost(self, name: str) -> bool: ...

    @abc.abstractmethod
    async def put_user(self, user: User) -> None: ...

    @abc.abstractmethod
    async def delete_user(self, name: str) -> bool: ...

    @abc.abstractmethod
    async def put_permission(self, permission: Permission) -> None: ...

    @abc.abstractmethod
    async def delete_permission(self, user: str, vhost: str) -> bool: ...

    @abc.abstractmethod
    async def put_topic_permission(self, permission: TopicPermission) -> None: ...

    @abc.abstractmethod
    async def delete_topic_permission(
        self, user: str, vhost: str, exchange: str
    ) -> bool: ...

    @abc.abstractmethod
    async def put_exchange(self, exchange: Exchange) -> None: ...

    @abc.abstractmethod
    async def delete_exchange(self, vhost: str, name: str) -> bool: ...

    @abc.abstractmethod
    async def put_queue(self, queue: Queue) -> None: ...

    @abc.abstractmethod
    async def delete_queue(self, vhost: str, name: str) -> bool: ...

    @abc.abstractmethod
    async def put_binding(self, binding: Binding) -> None: ...

    @abc.abstractmethod
    async def delete_binding(self, binding: Binding) -> bool:
        """Delete the binding with this one's key (arguments included)."""

    @abc.abstractmethod
    async def put_policy(self, policy: Policy) -> None: ...

    @abc.abstractmethod
    async def delete_policy(self, vhost: str, name: str) -> bool: ...

    @abc.abstractmethod
    async def put_parameter(self, parameter: Parameter) -> None: ...

    @abc.abstractmethod
    async def delete_parameter(self, vhost: str, component: str, name: str) -> bool: ...

    @abc.abstractmethod
    async def put_global_parameter(self, parameter: GlobalParameter) -> None: ...

    @abc.abstractmethod
    async def delete_global_parameter(self, name: str) -> bool: ...
